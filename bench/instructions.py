"""Instructions per secret token request, this checkout against REF: a before/after without noise.

``make bench --baseline REF`` compares the tokens/s of two deployed portals.
On a shared two-core machine that comparison is coarse: an A/A run (REF =
HEAD, the same code on both sides, ``--baseline-together``, 7 rounds) gave a
median ratio of 1.095, with rounds from 0.88 to 1.24. A change that adds or
removes a few percent of work per request cannot be told from that.

This counts the work instead. ``bench.cpu_profile --callgrind`` drives the
secret path in process (the WSGI application the web server serves, its
settings, PostgreSQL and Redis) under valgrind's callgrind, which counts the
instructions the process executes: a warm-up, then one batch of
``--requests`` requests, dumped on its own. It runs for this checkout and for
REF at the same time (one core each): REF from a temporary git worktree with
a virtualenv of its own (as ``bench.baseline`` prepares it), with this
checkout's ``cpu_profile.py`` copied in (it runs in older trees with
``--paths secret``), its own database (``<DATABASE_URL's>_baseline``) and its
own Redis database (``--baseline-redis-url``). ``--cache-sim`` adds
callgrind's simulated cache misses, at about twice the run time: L1 data
misses, and the misses of a 1 MiB last level (``CACHE_GEOMETRY``), the lines a
request fetches from beyond its core's L2. That second count is the one that
explains what instructions do not: with the seams of issue 11 the secret path
executed 3% fewer instructions than at ``c59074b`` but missed a 1 MiB cache 24%
more often (16,900 against 13,700 lines per request), because each request ran
through more distinct code (about 1,060 Python functions against 940), and
deployed it cost 5 to 9% more CPU per token. Taking away what the per-function
comparison of the dumps pointed at (README "Benchmark") brought it to 0.92 of
the instructions and 1.08 of the misses.

Counts move by about 1% between runs of the same code (hash seeds, request
ids, the order of dictionary entries), so a ratio within 1% of 1.0 is a tie.
What it cannot see: the web server, threads contending for the GIL, other
processes. Those are the deployed benchmark's to measure.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mip_instr REDIS_URL=redis://127.0.0.1:6379/8 \\
      .venv/bin/python -m bench.instructions --baseline c59074b \\
        --baseline-redis-url redis://127.0.0.1:6379/9
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.baseline import (
    _DROPPED,
    _git,
    baseline_database_url,
    baseline_redis_url,
    create_postgres_database,
    drop_postgres_database,
    ref_checkout,
    valid_ref,
)
from bench.servers import REPO, is_postgres

# Callgrind's per-dump totals: "events: Ir ..." names the columns of "summary: ...".
_EVENTS = re.compile(r"^events:\s*(.+)$", re.MULTILINE)
_SUMMARY = re.compile(r"^summary:\s*([0-9 ]+)$", re.MULTILINE)
# cpu_profile's dump after the measured batch (bench.cpu_profile.callgrind_batches).
_BATCH_LABEL = "secret-"
# The copy of this checkout's cpu_profile inside REF's tree.
_COPY = "_cpu_profile_current"
TIE = 0.01
# The simulated caches, whatever the host's: one core's L1 instruction and data caches
# (32 and 48 KiB) and, as the last level, 1 MiB: half of the 2 MiB per-core L2 of the
# machines this runs on, the share a web worker keeps when two processes take turns on
# a core. valgrind's default last level is the host's L3 (300 MiB here), which holds
# every request's working set and so shows no difference between revisions.
CACHE_GEOMETRY = ("--I1=32768,8,64", "--D1=49152,12,64", "--LL=1048576,16,64")


@dataclass(frozen=True)
class Count:
    """One side's callgrind totals for the measured batch, per request."""

    instructions: float
    d1_misses: float | None  # L1 data read + write misses, with --cache-sim
    # Last-level (1 MiB) instruction, data read and data write misses, with --cache-sim
    ll_misses: float | None = None


def dump_totals(text: str) -> dict[str, int]:
    """The event totals of one callgrind dump file (``{"Ir": ..., "D1mr": ...}``)."""
    events = _EVENTS.search(text)
    summary = _SUMMARY.search(text)
    if events is None or summary is None:
        raise ValueError("not a callgrind dump: no events or summary line")
    names = events.group(1).split()
    values = [int(v) for v in summary.group(1).split()]
    if len(names) != len(values):
        raise ValueError("callgrind dump: the summary does not match its events")
    return dict(zip(names, values, strict=True))


def batch_count(out_file: Path, requests: int) -> Count:
    """Per-request counts from the dump of the measured batch, among ``out_file.*``."""
    for dump in sorted(out_file.parent.glob(out_file.name + ".*")):
        text = dump.read_text(errors="replace")
        if _BATCH_LABEL in text[:2000]:  # the dump's header names its trigger
            totals = dump_totals(text)
            misses = ll = None
            if "D1mr" in totals and "D1mw" in totals:
                misses = (totals["D1mr"] + totals["D1mw"]) / requests
            if {"ILmr", "DLmr", "DLmw"} <= totals.keys():
                ll = (totals["ILmr"] + totals["DLmr"] + totals["DLmw"]) / requests
            return Count(instructions=totals["Ir"] / requests, d1_misses=misses, ll_misses=ll)
    raise ValueError(f"no dump of the measured batch next to {out_file}")


def verdict(current: Count, base: Count) -> tuple[float, str]:
    """current/base instructions per request, and what that ratio says."""
    ratio = current.instructions / base.instructions
    if ratio > 1 + TIE:
        return ratio, "more instructions per request than the baseline"
    if ratio < 1 - TIE:
        return ratio, "fewer instructions per request than the baseline"
    return ratio, f"a tie (within {TIE:.0%}, the spread between runs of the same code)"


def callgrind_argv(
    python: str, module: str, out_file: Path, *, requests: int, warmup: int, cache_sim: bool
) -> list[str]:
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"]
    if cache_sim:
        argv += ["--cache-sim=yes", *CACHE_GEOMETRY]
    return [
        *argv,
        python,
        "-m",
        module,
        "--paths",
        "secret",
        "--callgrind",
        "--requests",
        str(requests),
        "--warmup",
        str(warmup),
    ]


def _prepare_ref(ref: str, tree: Path) -> str:
    """REF's tree and venv (as ``--baseline`` makes them), with this cpu_profile copied in."""
    python = ref_checkout(ref, tree)
    (tree / "bench").mkdir(exist_ok=True)
    (tree / "bench" / "__init__.py").touch()
    shutil.copy(REPO / "bench" / "cpu_profile.py", tree / "bench" / f"{_COPY}.py")
    return python


def measure(
    *, ref: str, requests: int, warmup: int, cache_sim: bool, redis_url: str | None, out: Path
) -> dict:
    """Both sides under callgrind at once; their per-request counts and the ratio."""
    database_url = os.environ.get("DATABASE_URL", "")
    tmp = Path(tempfile.mkdtemp(prefix="mip-instructions-"))
    tree = tmp / "tree"
    base_db = ""
    try:
        python = _prepare_ref(ref, tree)
        base_db = baseline_database_url(database_url, tree) if database_url else ""
        if is_postgres(base_db):
            drop_postgres_database(base_db)
            create_postgres_database(base_db)
        base_env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
        if base_db:
            base_env["DATABASE_URL"] = base_db
        if redis_url:
            base_env["REDIS_URL"] = redis_url
        sides = {
            "current": (sys.executable, "bench.cpu_profile", dict(os.environ), REPO),
            "base": (python, f"bench.{_COPY}", base_env, tree),
        }
        running = {}
        for name, (python, module, env, cwd) in sides.items():
            argv = callgrind_argv(
                python,
                module,
                out / f"{name}.callgrind",
                requests=requests,
                warmup=warmup,
                cache_sim=cache_sim,
            )
            log = (out / f"{name}.log").open("w")
            running[name] = (
                subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT),  # noqa: S603
                log,
            )
        for name, (proc, log) in running.items():
            code = proc.wait()
            log.close()
            if code != 0:
                raise SystemExit(f"{name} side failed (exit {code}); see {out / (name + '.log')}")
        current = batch_count(out / "current.callgrind", requests)
        base = batch_count(out / "base.callgrind", requests)
    finally:
        if base_db and is_postgres(base_db):
            drop_postgres_database(base_db)
        if tree.exists():
            _git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(tmp, ignore_errors=True)
    return comparison(ref=ref, requests=requests, current=current, base=base)


def comparison(*, ref: str, requests: int, current: Count, base: Count) -> dict:
    """Both sides' counts, the instruction ratio and its verdict, the miss ratio if simulated."""
    ratio, meaning = verdict(current, base)
    result = {
        "ref": ref,
        "requests": requests,
        "current": current.__dict__,
        "base": base.__dict__,
        "ratio": round(ratio, 4),
        "verdict": meaning,
    }
    if current.ll_misses and base.ll_misses:
        result["ll_miss_ratio"] = round(current.ll_misses / base.ll_misses, 4)
    return result


def _count(text: str, *, least: int) -> int:
    """An argparse type: a whole number of at least ``least``."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < least:
        raise argparse.ArgumentTypeError(f"at least {least}: {number}")
    return number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, metavar="REF")
    parser.add_argument("--baseline-redis-url", default=None)
    parser.add_argument("--requests", type=lambda t: _count(t, least=1), default=1000)
    parser.add_argument("--warmup", type=lambda t: _count(t, least=0), default=200)
    parser.add_argument("--cache-sim", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "instructions")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not valid_ref(args.baseline):
        parser.error(f"not a revision name: {args.baseline!r}")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    try:
        redis_url = baseline_redis_url(args.baseline_redis_url, os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("*.callgrind*"):
        stale.unlink()
    result = measure(
        ref=args.baseline,
        requests=args.requests,
        warmup=args.warmup,
        cache_sim=args.cache_sim,
        redis_url=redis_url,
        out=args.out,
    )
    if args.json:
        print(json.dumps(result, indent=2))  # noqa: T201
        return 0
    for side in ("current", "base"):
        count = result[side]
        misses = "" if count["d1_misses"] is None else f", {count['d1_misses']:,.0f} L1d misses"
        if count.get("ll_misses") is not None:
            misses += f", {count['ll_misses']:,.0f} misses of a 1 MiB last level"
        name = "current" if side == "current" else f"@{args.baseline}"
        print(f"{name:<12} {count['instructions']:>12,.0f} instructions/request{misses}")  # noqa: T201
    print(f"current/base {result['ratio']:.4f}: {result['verdict']}")  # noqa: T201
    if "ll_miss_ratio" in result:
        print(f"current/base {result['ll_miss_ratio']:.4f}: 1 MiB last-level misses")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
