"""Drive a token endpoint with wrk and read back what it measured.

wrk runs on the same cores as the servers, as the issue's targets require;
the Lua script (token_request.lua) gives every request a unique X-Request-ID
and keeps the ids of the 2xx responses for the audit check.
"""

from __future__ import annotations

import base64
import json
import os
import re
import resource
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

LUA_SCRIPT = Path(__file__).resolve().parent / "token_request.lua"

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DISTRIBUTION = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)


class LoadToolMissing(RuntimeError):
    """wrk is not installed."""


class LoadFailed(RuntimeError):
    """wrk ran but did not finish a point; the series is reported as not measured."""


@dataclass(frozen=True)
class Target:
    """One series of a benchmark: an endpoint and the credentials of its machines.

    ``fleet``: every request names a machine not asked for before in the run
    (each wrk run gets a fresh share of ``credentials``, through a file).
    ``audited``: each 2xx answer must have left one ``token.issued`` event.
    ``concurrency``: the points of this series (None: the run's list).
    """

    name: str
    url: str  # e.g. http://127.0.0.1:8100/oauth/token
    body: str
    credentials: list[tuple[str, str]]  # (client_id, client_secret)
    method: str = "POST"
    fleet: bool = False
    audited: bool = True
    concurrency: tuple[int, ...] | None = None
    # Single-use bodies (each a private_key_jwt assertion with its own jti): given a
    # count, the bodies for one wrk run. wrk's Lua cannot sign, so they are made before.
    body_pool: Callable[[int], list[str]] | None = field(default=None, compare=False, repr=False)

    def authorization_headers(self) -> list[str]:
        # RFC 6749 2.3.1: id and secret are form-urlencoded before base64.
        values = []
        for client_id, secret in self.credentials:
            pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
            values.append("Basic " + base64.b64encode(pair).decode())
        return values


@dataclass
class LoadResult:
    """What wrk measured at one point, plus the ids of the tokens it received."""

    duration_s: float
    ok: int
    requests: int
    non_2xx: int
    non_2xx_statuses: dict[str, int]
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]
    received_ids: list[str] = field(repr=False)
    load_tool_cpu_s: float = 0.0
    wrapped: int = 0  # fleet: times a wrk thread ran out of fresh machines and started over
    consumed: int = 0  # fleet: lines of the credentials file the threads reached

    @property
    def tokens_per_s(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0

    @property
    def socket_error_total(self) -> int:
        return sum(self.socket_errors.values())


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise LoadToolMissing(
            "wrk is not installed. Install it with: apt-get install -y wrk "
            "(Debian/Ubuntu; the benchmark needs it, `make test` does not)."
        )
    return path


def wrk_version() -> str:
    proc = subprocess.run(  # noqa: S603 (fixed argv)
        [wrk_path(), "-v"], capture_output=True, text=True, check=False, timeout=10
    )
    first = (proc.stdout or proc.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk"


def parse_latency_distribution(output: str) -> dict[str, float]:
    """The percentiles of wrk's --latency block, in milliseconds."""
    return {
        f"p{m.group(1)}": float(m.group(2)) * _UNITS_MS[m.group(3)]
        for m in _DISTRIBUTION.finditer(output)
    }


# Requests per second a single-use body pool is sized for (about three times the portal
# on two cores).
POOL_RATE = 4000


def threads_for(connections: int) -> int:
    return min(2, connections)


def run_wrk(
    *,
    target: Target,
    connections: int,
    duration_s: float,
    rid_prefix: str,
    out_stem: Path,
    timeout_s: float,
    credentials: list[tuple[str, str]] | None = None,
) -> LoadResult:
    """Run wrk once at one concurrency; return what it measured and received.

    ``credentials`` (a fleet target's share for this run) go to wrk through a
    file next to the results, one Authorization value per line.
    """
    env = {
        **os.environ,
        "BENCH_METHOD": target.method,
        "BENCH_PATH": _path_of(target.url),
        "BENCH_BODY": target.body,
        "BENCH_RID_PREFIX": rid_prefix,
        "BENCH_OUT": str(out_stem),
        "BENCH_THREADS": str(threads_for(connections)),
    }
    env.pop("BENCH_BODIES", None)
    if target.body_pool is not None:
        # Enough single-use bodies for a server far faster than ours; a pool that ran
        # out would replay jtis, which the portal refuses (counted as non-2xx).
        bodies = target.body_pool(int(POOL_RATE * (duration_s + 2)) + 1000)
        pool = out_stem.with_name(out_stem.name + ".bodies")
        pool.parent.mkdir(parents=True, exist_ok=True)
        pool.write_text("\n".join(bodies) + "\n")
        env["BENCH_BODIES"] = str(pool)
    env.pop("BENCH_AUTHS_FILE", None)
    if credentials is not None:
        auths_file = Path(f"{out_stem}.auths")
        values = Target(target.name, target.url, target.body, credentials).authorization_headers()
        auths_file.write_text("\n".join(values) + "\n")
        auths_file.chmod(0o600)
        env["BENCH_AUTHS"] = ""
        env["BENCH_AUTHS_FILE"] = str(auths_file)
    else:
        env["BENCH_AUTHS"] = ";".join(target.authorization_headers())
    argv = [
        wrk_path(),
        f"-t{threads_for(connections)}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        _base_of(target.url),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        proc = subprocess.run(  # noqa: S603 (fixed argv, no shell)
            argv, env=env, capture_output=True, text=True, check=False, timeout=duration_s + 60
        )
    except subprocess.TimeoutExpired as exc:
        raise LoadFailed(f"wrk did not finish within {duration_s + 60:.0f} s") from exc
    finally:
        if "BENCH_AUTHS_FILE" in env:  # live secrets of the fleet: not left on disk
            Path(env["BENCH_AUTHS_FILE"]).unlink(missing_ok=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    Path(f"{out_stem}.wrk.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise LoadFailed(f"wrk exited {proc.returncode}: {proc.stderr.strip()[:500]}")
    try:
        summary = json.loads(Path(f"{out_stem}.json").read_text())
        received = Path(f"{out_stem}.ids").read_text().split()
    except (OSError, ValueError) as exc:
        raise LoadFailed(f"the wrk script wrote no usable results: {exc}") from exc
    latency = parse_latency_distribution(proc.stdout)
    if not latency:  # no response at all: wrk prints no distribution
        latency = {k: v / 1000 for k, v in summary["latency_us"].items() if k.startswith("p")}
    return LoadResult(
        duration_s=summary["duration_us"] / 1e6,
        ok=summary["ok"],
        requests=summary["requests"],
        non_2xx=summary["requests"] - summary["ok"],
        non_2xx_statuses=summary["non2xx_statuses"],
        socket_errors={k: summary["errors"][k] for k in ("connect", "read", "write", "timeout")},
        latency_ms=latency,
        received_ids=received,
        load_tool_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        wrapped=int(summary.get("wrapped", 0)),
        consumed=int(summary.get("max_thread_sent", 0)) * threads_for(connections),
    )


def _base_of(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _path_of(url: str) -> str:
    rest = url.split("://", 1)[1]
    return "/" + rest.split("/", 1)[1] if "/" in rest else "/"
