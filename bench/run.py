"""`make bench`: token endpoint throughput and latency, the portal beside its peers.

    .venv/bin/python -m bench.run [--only portal,stock,node] [--concurrency 1,4,16,64]
                                  [--duration 10] [--warmup 2] [--machines 1]
                                  [--fleet 100000] [--side-concurrency 16]
                                  [--web-only [--sealer]] [--series portal,...]
                                  [--baseline REF [--baseline-rounds 3]
                                   [--baseline-together]
                                   [--baseline-redis-url redis://HOST:PORT/N]]

Starts each server in turn on a spare port and drives it with wrk at each
concurrency. The portal runs against DATABASE_URL (or a SQLite file under
var/bench/) in deployment mode by default: ``manage.py serve`` as ``make
run`` starts it, granian plus a Celery worker with beat sealing and
checkpointing the audit trail while the points run, their output relayed by
``serve`` into var/bench/portal.log; ``--web-only`` runs granian alone.
Besides the token endpoint (one machine), the portal is measured on a fleet
(``--fleet`` machines registered in bulk, each asked for at most once, so
every request is one the cache has not seen), on ``/.well-known/jwks.json``
and on introspection. Reads the servers' CPU time from /proc (the web
server, the worker and the relay apart) and PostgreSQL's, checks the audit
trail against the tokens wrk received, reports the unsealed backlog at the
end of each point and how long the sealer took to drain it, and writes
var/bench/results.{md,json} and var/bench/throughput.svg (plus copies
stamped with the run id). ``--baseline REF`` also serves the portal as it was
at REF (bench.baseline) and loads it in turns with the current one on the
secret path, in the same run: the before and after of a change; with
``--baseline-together``, both at once in each round, compared round by round.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import report
from bench.audit_check import (
    AuditTrail,
    AuditUnavailable,
    audit_compare,
    audited_request_ids,
)
from bench.baseline import (
    BaselinePortal,
    baseline_redis_url,
    is_baseline_series,
    round_order,
    valid_ref,
)
from bench.federation import FEDERATED
from bench.load import (
    LoadFailed,
    LoadToolMissing,
    Target,
    run_wrk,
    threads_for,
    wrk_path,
    wrk_version,
)
from bench.servers import (
    DEPLOYMENT,
    REPO,
    WEB_ONLY,
    NodePeer,
    Portal,
    Server,
    ServerUnavailable,
    StockDot,
    cpu_delta,
    host_busy_seconds,
    is_postgres,
    postgres_backends_cpu,
    token_request,
)

SERVERS = ("portal", "stock", "node")
SHORT = {
    "portal": "portal",
    "portal-private-key-jwt": "portaljwt",
    FEDERATED: "portalfed",
    "portal-fleet": "fleet",
    "jwks": "jwks",
    "introspect": "intro",
    "stock-default": "stockdef",
    "stock-plain": "stockplain",
}


# The portal's series, which --series chooses from.
PORTAL_SERIES = (
    "portal",
    "portal-private-key-jwt",
    FEDERATED,
    "portal-fleet",
    "jwks",
    "introspect",
)


def short_name(series: str) -> str:
    """The series' tag in request ids (``[A-Za-z0-9-]``, see bench.audit_check)."""
    if is_baseline_series(series):
        return "base"
    return SHORT.get(series, "node")


def say(message: str) -> None:
    print(message, flush=True)  # noqa: T201 (a command-line tool talking to its user)


def _csv(kind):
    def parse(text: str) -> list:
        return [kind(item) for item in text.split(",") if item.strip()]

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        type=_csv(str),
        action="extend",
        default=None,
        help="servers to run, comma-separated or repeated: portal, stock, node (default: all)",
    )
    parser.add_argument(
        "--concurrency",
        type=_csv(int),
        action="extend",
        default=None,
        help="connections per point, comma-separated or repeated (default: 1,4,16,64)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per point (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per point (2)")
    parser.add_argument("--timeout", type=float, default=10.0, help="wrk request timeout, s (10)")
    parser.add_argument(
        "--machines",
        type=int,
        default=1,
        help="portal machines the portal series rotates over (1: the one-machine rate)",
    )
    parser.add_argument(
        "--fleet",
        type=int,
        default=100_000,
        help="machines registered for the fleet point, each asked for at most once "
        "(100000; 0: no fleet point)",
    )
    parser.add_argument(
        "--side-concurrency",
        type=_csv(int),
        action="extend",
        default=None,
        help="concurrency of the fleet, JWKS and introspection points (default: 16)",
    )
    parser.add_argument(
        "--web-only",
        action="store_true",
        help="the web server alone (granian, logs straight to a file), without the Celery "
        "worker; default: deployment mode, `manage.py serve` as `make run` starts it",
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 2, help="portal web workers (cores)"
    )
    parser.add_argument(
        "--sealer",
        action="store_true",
        help="with --web-only: run the audit sealer beside the web server at "
        "AUDIT_SEAL_INTERVAL (python -m bench.sealer); each point then ends once its tokens "
        "are sealed, and counts the sealer's PostgreSQL work",
    )
    parser.add_argument(
        "--series",
        type=_csv(str),
        action="extend",
        default=None,
        help="the portal's series to measure, comma-separated or repeated: "
        + ", ".join(PORTAL_SERIES)
        + " (default: all; without portal-fleet no fleet is registered)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        default=None,
        help="also serve the portal as it was at git revision REF (a temporary worktree, "
        "venv and database of its own, removed afterwards) and load it in turns with the "
        "current portal on the secret path at every --concurrency: series portal@REF, "
        "medians and the ratio current/base",
    )
    parser.add_argument(
        "--baseline-rounds",
        type=int,
        default=3,
        help="with --baseline: points of each side at each concurrency, interleaved (3)",
    )
    parser.add_argument(
        "--baseline-together",
        action="store_true",
        help="with --baseline: in each round load both portals at once, each with the point's "
        "connections, and judge by the median of the rounds' ratios (a machine that speeds up "
        "or slows down does so for both sides of a pair)",
    )
    parser.add_argument(
        "--baseline-redis-url",
        default=None,
        help="with --baseline and REDIS_URL: a Redis database for REF's portal alone "
        "(default: BASELINE_REDIS_URL)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench", help="output folder")
    args = parser.parse_args(argv)
    args.only = args.only or list(SERVERS)
    unknown = set(args.only) - set(SERVERS)
    if unknown:
        parser.error(f"unknown server(s) {sorted(unknown)}; choose from {', '.join(SERVERS)}")
    args.concurrency = sorted(set(args.concurrency or [1, 4, 16, 64]))
    args.side_concurrency = sorted(set(args.side_concurrency or [16]))
    if any(c < 1 for c in (*args.concurrency, *args.side_concurrency)):
        parser.error("concurrency must be at least 1")
    if args.machines < 1 or args.fleet < 0:
        parser.error("--machines must be at least 1 and --fleet at least 0")
    if args.sealer and not args.web_only:
        parser.error("--sealer goes with --web-only (deployment mode seals in its worker)")
    args.mode = WEB_ONLY if args.web_only else DEPLOYMENT
    if args.series is not None:
        unknown = set(args.series) - set(PORTAL_SERIES)
        if unknown:
            parser.error(
                f"unknown series {sorted(unknown)}; choose from {', '.join(PORTAL_SERIES)}"
            )
        if "portal-fleet" not in args.series:
            args.fleet = 0
    args.baseline_redis_url_resolved = None
    if args.baseline is not None:
        if not valid_ref(args.baseline):
            parser.error(f"--baseline {args.baseline!r} is not a git revision name")
        if "portal" not in args.only:
            parser.error("--baseline compares portals: --only must include portal")
        if args.baseline_rounds < 1:
            parser.error("--baseline-rounds must be at least 1")
        try:
            args.baseline_redis_url_resolved = baseline_redis_url(
                args.baseline_redis_url, os.environ
            )
        except ValueError as exc:
            parser.error(str(exc))
    elif args.baseline_redis_url:
        parser.error("--baseline-redis-url goes with --baseline")
    elif args.baseline_together:
        parser.error("--baseline-together goes with --baseline")
    return args


def portal_database_url(out: Path) -> str:
    """The user's DATABASE_URL when set, else a SQLite file of the benchmark's own."""
    return os.environ.get("DATABASE_URL") or f"sqlite:///{out / 'portal.sqlite3'}"


def stock_database_url(portal_url: str) -> str | None:
    """PostgreSQL when the portal uses it: a database of its own next to the portal's."""
    if os.environ.get("STOCK_DOT_DATABASE_URL"):
        return os.environ["STOCK_DOT_DATABASE_URL"]
    if not is_postgres(portal_url):
        return None
    base, _, name = portal_url.rpartition("/")
    name, _, query = name.partition("?")
    return f"{base}/{name}_stockdot" + (f"?{query}" if query else "")


class BacklogSampler:
    """Reads the unsealed backlog about once a second while a point runs; keeps the largest."""

    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail
        self.largest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.largest = max(self.largest, self.trail.unsealed())
            except Exception:  # noqa: BLE001,S112 (a missed sample is not a failed point)
                continue

    def __enter__(self) -> BacklogSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def wait_sealed(trail: AuditTrail, *, up_to: int, limit: float) -> float | None:
    """Seconds until every event up to id ``up_to`` is sealed; None if not within ``limit``."""
    started = time.monotonic()
    while True:
        _, horizon = trail.top_and_horizon()
        if horizon >= up_to:
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            return None
        time.sleep(0.1)


def _fleet_share(target: Target, used: int, size: int) -> list[tuple[str, str]]:
    """The next ``size`` machines of a fleet nobody asked for yet in this run."""
    share = target.credentials[used : used + size]
    if not share:
        raise LoadFailed(f"{target.name}: the fleet is used up ({used:,} machines asked for)")
    return share


def measure_target(
    *,
    server: Server,
    target: Target,
    args: argparse.Namespace,
    run_id: str,
    audit_url: str | None,
    points: list[dict],
    concurrency: list[int] | None = None,
    round_number: int | None = None,
    together: threading.Barrier | None = None,
) -> None:
    """Measure one series at every concurrency, appending each point as it is done.

    ``concurrency`` and ``round_number``: one point of a before/after round
    (``--baseline``), with request ids and files of its own. ``together``: the
    measured run starts only when the other side of the pair reaches the same
    barrier (``--baseline-together``), so both are loaded over the same seconds.
    """
    status, body = token_request(target)
    if not 200 <= status < 300:
        raise ServerUnavailable(f"{target.name}: a single request got {status}: {body[:300]}")
    sealing = isinstance(server, Portal) and (
        server.mode == DEPLOYMENT or server.sealer is not None
    )
    trail = AuditTrail(audit_url) if sealing and audit_url else None
    seal_interval = server.seal_interval if isinstance(server, Portal) else None
    fleet_used = 0
    # The fleet's last machine answered the smoke request: never hand it out again.
    fleet_size = len(target.credentials) - 1
    try:
        for c in concurrency or target.concurrency or args.concurrency:
            tag = "" if round_number is None else f"r{round_number}"
            prefix = f"{run_id}-{short_name(target.name)}-c{c}-{tag}"
            # A revision name may hold "/": never a folder of its own.
            stem_name = target.name.replace("/", "_") + f"-c{c}" + (f"-{tag}" if tag else "")
            stem = args.out / "runs" / run_id / stem_name
            stem.parent.mkdir(parents=True, exist_ok=True)
            if args.warmup > 0:
                warm = run_wrk(
                    target=target,
                    connections=c,
                    duration_s=args.warmup,
                    rid_prefix=prefix + "w",
                    out_stem=stem.with_name(stem.name + "-warmup"),
                    timeout_s=args.timeout,
                    credentials=(
                        _fleet_share(target, fleet_used, fleet_size - fleet_used)
                        if target.fleet
                        else None
                    ),
                )
                fleet_used += warm.consumed if target.fleet else 0
                server.wait_idle()
            if trail is not None:
                # Start from a sealed trail, so the point's backlog is its own tokens'.
                top, _ = trail.top_and_horizon()
                if wait_sealed(trail, up_to=top, limit=max(600.0, 3 * seal_interval + 60)) is None:
                    raise LoadFailed("the sealer did not catch up before the point")
            if together is not None:
                try:
                    together.wait()
                except threading.BrokenBarrierError as exc:
                    raise LoadFailed("the other side of the pair did not reach its point") from exc
            db_url = audit_url if audit_url and is_postgres(audit_url) else None
            exclude = frozenset({trail.backend_pid} if trail and trail.backend_pid else ())
            db_before = postgres_backends_cpu(db_url, exclude=exclude) if db_url else None
            sealer = getattr(server, "sealer", None)
            sealer_before = sealer.cpu_seconds() if sealer is not None else 0.0
            parts_before = server.cpu_parts() if isinstance(server, Portal) else {}
            cpu_before = server.cpu_seconds()
            host_before = host_busy_seconds()
            sampler = BacklogSampler(trail) if trail is not None else contextlib.nullcontext()
            with sampler:
                result = run_wrk(
                    target=target,
                    connections=c,
                    duration_s=args.duration,
                    rid_prefix=prefix + "m",
                    out_stem=stem,
                    timeout_s=args.timeout,
                    credentials=(
                        _fleet_share(target, fleet_used, fleet_size - fleet_used)
                        if target.fleet
                        else None
                    ),
                )
            fleet_used += result.consumed if target.fleet else 0
            cpu = server.cpu_seconds() - cpu_before
            host = host_busy_seconds() - host_before
            parts = (
                {k: v - parts_before.get(k, 0.0) for k, v in server.cpu_parts().items()}
                if isinstance(server, Portal)
                else {}
            )
            backlog = None
            if trail is not None:
                top, _ = trail.top_and_horizon()
                unsealed_at_end = trail.unsealed()
                drain = wait_sealed(trail, up_to=top, limit=3 * seal_interval + 60)
                backlog = {
                    "at_end": unsealed_at_end,
                    "largest": max(sampler.largest, unsealed_at_end),
                    "drain_s": None if drain is None else round(drain, 2),
                    # Issue 13: never more than two seal intervals' worth of tokens.
                    "limit": round(2 * seal_interval * result.tokens_per_s),
                    "seal_interval_s": seal_interval,
                }
            sealer_cpu = sealer.cpu_seconds() - sealer_before if sealer is not None else None
            db_cpu = (
                cpu_delta(db_before, postgres_backends_cpu(db_url, exclude=exclude))
                if db_url
                else None
            )
            server.wait_idle()
            audit = None
            if audit_url is not None and target.audited:
                audited = audited_request_ids(database_url=audit_url, prefix=prefix + "m")
                audit = audit_compare(
                    received=result.received_ids, audited=audited, connections=c
                ).as_dict()
                # A server that replaced our X-Request-ID breaks the check: say so plainly.
                audit["unsent_ids"] = sum(
                    1 for rid in result.received_ids if not rid.startswith(prefix + "m")
                )
            p = {
                "series": target.name,
                "concurrency": c,
                "threads": threads_for(c),
                "duration_s": round(result.duration_s, 3),
                "tokens": result.ok,
                "tokens_per_s": round(result.tokens_per_s, 1),
                "latency_ms": result.latency_ms,
                "requests": result.requests,
                "non_2xx": result.non_2xx,
                "non_2xx_statuses": result.non_2xx_statuses,
                "socket_errors": result.socket_errors,
                "server_cpu_s": round(cpu, 3),
                "cpu_ms_per_token": round(cpu * 1000 / result.ok, 3) if result.ok else None,
                # Deployment mode: the web server, the Celery worker (sealing, beat) and the
                # `serve` process relaying every log line, apart.
                "cpu_ms_per_token_parts": (
                    {k: round(v * 1000 / result.ok, 3) for k, v in parts.items()}
                    if result.ok and parts
                    else None
                ),
                "db_cpu_ms_per_token": (
                    round(db_cpu * 1000 / result.ok, 3)
                    if db_cpu is not None and result.ok
                    else None
                ),
                "sealer_cpu_ms_per_token": (
                    round(sealer_cpu * 1000 / result.ok, 3)
                    if sealer_cpu is not None and result.ok
                    else None
                ),
                "backlog": backlog,
                "load_tool_cpu_s": round(result.load_tool_cpu_s, 3),
                # Cores busy with anything else during the point: other people's work on a
                # shared machine (and, for the stock peer, its database).
                "others_cores": round(
                    max(0.0, host - cpu - result.load_tool_cpu_s - (db_cpu or 0.0))
                    / result.duration_s,
                    2,
                )
                if result.duration_s
                else None,
                "audit": audit,
            }
            if target.fleet:
                p["fleet"] = {"machines": len(target.credentials), "repeated": result.wrapped}
            if round_number is not None:
                p["round"] = round_number
            if together is not None:
                p["together"] = True
            points.append(p)
            say(point_line(p))
    finally:
        if trail is not None:
            trail.close()


def point_line(p: dict) -> str:
    """One line per point for the terminal."""
    audit = p.get("audit")
    backlog = p.get("backlog")
    parts = p.get("cpu_ms_per_token_parts") or {}
    return (
        f"  {p['series']:<19} c{p['concurrency']:<3} {p['tokens_per_s']:>9,.1f} /s  "
        f"p99 {p['latency_ms'].get('p99', float('nan')):.2f} ms  "
        f"non-2xx {p['non_2xx']}  socket errors {sum(p['socket_errors'].values())}  "
        f"CPU {p['cpu_ms_per_token'] or 0:.2f} ms/req"
        + (
            " (" + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()) + ")"
            if len(parts) > 1
            else ""
        )
        + (
            f" (+{p['db_cpu_ms_per_token']:.2f} in PostgreSQL)"
            if p["db_cpu_ms_per_token"] is not None
            else ""
        )
        + (
            f" (+{p['sealer_cpu_ms_per_token']:.2f} in the sealer)"
            if p["sealer_cpu_ms_per_token"] is not None
            else ""
        )
        + (
            f", unsealed {backlog['at_end']} at end (largest {backlog['largest']}, "
            f"limit {backlog['limit']}), drained in {backlog['drain_s']} s"
            if backlog
            else ""
        )
        + (
            f", audit lost {audit['lost']} extra {audit['extra']} dup {audit['duplicates']}"
            if audit
            else ""
        )
    )


def git_describe() -> str:
    """The commit the portal ran from, marked when the tree had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 (git from PATH)
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def build_servers(args: argparse.Namespace, run_id: str, portal_url: str) -> list[Server]:
    servers: list[Server] = []
    if "portal" in args.only:
        servers.append(
            Portal(
                out_dir=args.out,
                workers=args.workers,
                database_url=portal_url,
                machines=args.machines,
                run_id=run_id,
                sealer=args.sealer,
                mode=args.mode,
                fleet=args.fleet,
                side_concurrency=tuple(args.side_concurrency),
            )
        )
    if "stock" in args.only:
        servers.append(
            StockDot(
                out_dir=args.out,
                workers=args.workers,
                database_url=stock_database_url(portal_url),
            )
        )
    if "node" in args.only:
        servers.append(NodePeer(out_dir=args.out, workers=args.workers))
    return servers


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        wrk_path()
    except LoadToolMissing as exc:
        say(str(exc))
        return 2
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    run_id = "b" + datetime.now(UTC).strftime("%Y%m%d%H%M%S") + secrets.token_hex(2)
    portal_url = portal_database_url(args.out)
    result: dict = {
        "run_id": run_id,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "wrk": wrk_version(),
        },
        "portal_commit": git_describe(),
        "settings": {
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "timeout_s": args.timeout,
            "mode": args.mode,
            "machines": args.machines,
            "fleet": args.fleet,
            "side_concurrency": args.side_concurrency,
            "workers": args.workers,
            "sealer": args.sealer,
            "series": args.series,
            "baseline": args.baseline,
            "baseline_rounds": args.baseline_rounds if args.baseline else None,
            "baseline_together": args.baseline_together,
        },
        "servers": {},
        "points": [],
    }
    say(
        f"benchmark {run_id} ({args.mode} mode): {', '.join(args.only)} at c{args.concurrency}, "
        f"{args.duration} s per point"
        + (f"; before/after against {args.baseline}" if args.baseline else "")
        + ("; both loaded at once in each round" if args.baseline_together else "")
    )
    baseline = None
    if args.baseline:
        baseline = BaselinePortal(
            ref=args.baseline,
            out_dir=args.out,
            workers=args.workers,
            portal_database_url=portal_url,
            redis_url=args.baseline_redis_url_resolved,
            run_id=run_id,
            mode=args.mode,
            sealer=args.sealer,
        )
        result["baseline"] = {
            "ref": args.baseline,
            "series": baseline.name,
            "rounds": args.baseline_rounds,
            "together": args.baseline_together,
            "status": "ok",
            "points": [],
        }
    # SIGTERM (a timeout, a CI job cancelled) ends the run like Ctrl-C: the servers are
    # stopped and what was measured so far is still written.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if baseline is not None:
            # Before anything is measured: installing and migrating REF costs minutes of CPU.
            baseline_prepare(baseline, result)
        for server in build_servers(args, run_id, portal_url):
            info = result["servers"].setdefault(server.name, {"status": "ok"})
            if isinstance(server, NodePeer) and not NodePeer.available():
                info.update(status="skipped", reason="node is not installed")
                say(f"{server.name}: skipped (node is not installed)")
                continue
            say(f"{server.name}: preparing")
            try:
                server.prepare()
                server.start()
                info.update(server.notes)
                say(f"{server.name}: serving on {server.base_url}")
                audit_url = portal_url if isinstance(server, Portal) else None
                targets = server.targets()
                for target in targets:
                    if (
                        isinstance(server, Portal)
                        and args.series
                        and target.name not in args.series
                    ):
                        continue
                    try:
                        measure_target(
                            server=server,
                            target=target,
                            args=args,
                            run_id=run_id,
                            audit_url=audit_url,
                            points=result["points"],
                        )
                    except (ServerUnavailable, LoadFailed, AuditUnavailable) as exc:
                        info.setdefault("errors", []).append(str(exc))
                        say(f"{target.name}: not measured: {exc}")
                if isinstance(server, Portal) and baseline is not None and baseline.credentials:
                    measure_before_after(
                        current=server,
                        current_target=next(t for t in targets if t.name == "portal"),
                        baseline=baseline,
                        args=args,
                        run_id=run_id,
                        portal_url=portal_url,
                        result=result,
                    )
            except ServerUnavailable as exc:
                info.update(server.notes)
                info.update(status="failed", reason=str(exc))
                say(f"{server.name}: not run: {exc}")
            finally:
                server.stop()
            if info["status"] == "ok" and info.get("errors"):
                info["status"] = "partial"
    except KeyboardInterrupt:
        result["interrupted"] = True
        say("interrupted: writing what was measured so far")
    finally:
        if baseline is not None:
            say(f"{baseline.name}: removing its worktree and database")
            problems = baseline.cleanup()
            for problem in problems:
                say(f"{baseline.name}: cleanup: {problem}")
            if problems:
                result["baseline"]["cleanup_problems"] = problems
        signal.signal(signal.SIGTERM, previous)
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    if baseline is not None:
        result["baseline"]["summary"] = report.before_after(
            result["baseline"]["points"], base_series=baseline.name
        )
    result["ratios"] = report.ratios(result["points"])
    result["targets"] = report.targets(result)
    result["issue11_targets"] = report.issue11_targets(result)
    result["deployment_targets"] = report.deployment_targets(result)
    result["conditions"] = report.conditions(result)
    write_outputs(result, args.out)
    return 0 if result["points"] else 1


def baseline_prepare(baseline: BaselinePortal, result: dict) -> None:
    """Check REF out and install, migrate and register it; a failure is reported, the run
    goes on without the before/after."""
    info = result["servers"].setdefault(baseline.name, {"status": "ok"})
    say(f"{baseline.name}: preparing (worktree, venv, database)")
    try:
        baseline.prepare()
    except (ServerUnavailable, OSError, subprocess.SubprocessError) as exc:
        # A command that hung past its time limit, a folder that could not be made: the
        # run goes on without the before/after, and says why.
        baseline.credentials = []
        info.update(baseline.notes)
        info.update(status="failed", reason=str(exc))
        result["baseline"].update(status="failed", reason=str(exc))
        say(f"{baseline.name}: not run: {exc}")
        return
    info.update(baseline.notes)
    result["baseline"]["commit"] = baseline.commit


def measure_before_after(
    *,
    current: Portal,
    current_target: Target,
    baseline: BaselinePortal,
    args: argparse.Namespace,
    run_id: str,
    portal_url: str,
    result: dict,
) -> None:
    """REF's portal and the current one in turns on the secret path, at every concurrency.

    Both serve at once (REF's with its own database, Redis and VAR_DIR), and each
    point loads one of them while the other idles, so machine noise lands on both
    sides alike; ``report.before_after`` takes the medians. With
    ``--baseline-together`` each round loads both at once (``_measure_pair``).
    """
    record = result["baseline"]
    info = result["servers"][baseline.name]
    say(f"{baseline.name}: starting beside the current portal")
    try:
        baseline.start()
        info.update(baseline.notes)
        say(f"{baseline.name}: serving on {baseline.base_url}")
        base_target = baseline.targets()[0]
        sides = {
            "base": (baseline, base_target, baseline.database_url),
            "current": (current, current_target, portal_url),
        }
        if args.baseline_together:
            for c in args.concurrency:
                for number in range(1, args.baseline_rounds + 1):
                    _measure_pair(
                        sides, args=args, run_id=run_id, record=record, c=c, number=number
                    )
            return
        for c in args.concurrency:
            for number, side in round_order(args.baseline_rounds):
                _measure_round(
                    sides[side], args=args, run_id=run_id, record=record, c=c, number=number
                )
    except ServerUnavailable as exc:
        info.update(status="failed", reason=str(exc))
        record.update(status="failed", reason=str(exc))
        say(f"{baseline.name}: not run: {exc}")
    finally:
        baseline.stop()


def _measure_round(
    side: tuple,
    *,
    args: argparse.Namespace,
    run_id: str,
    record: dict,
    c: int,
    number: int,
    together: threading.Barrier | None = None,
) -> bool:
    """One side's point of a before/after round; False when it could not be measured.

    ``side`` is ``(server, target, audit_url)``. A failure that leaves the run
    going (a server away, wrk failing, the audit trail unreadable) is recorded
    under the baseline's ``errors`` and said; anything else is raised.
    """
    server, target, audit_url = side
    try:
        measure_target(
            server=server,
            target=target,
            args=args,
            run_id=run_id,
            audit_url=audit_url,
            points=record["points"],
            concurrency=[c],
            round_number=number,
            together=together,
        )
    except (ServerUnavailable, LoadFailed, AuditUnavailable) as exc:
        record.setdefault("errors", []).append(f"{target.name} c{c} r{number}: {exc}")
        say(f"{target.name} c{c} round {number}: not measured: {exc}")
        return False
    return True


# How long one side of a pair waits for the other to reach its point: a warm-up,
# a sealer catching up (bounded by measure_target's own limits) and some slack.
PAIR_WAIT_S = 900.0


def _measure_pair(
    sides: dict[str, tuple],
    *,
    args: argparse.Namespace,
    run_id: str,
    record: dict,
    c: int,
    number: int,
) -> None:
    """One ``--baseline-together`` round: both portals' points at ``c``, measured at once.

    Each side runs ``measure_target`` in its own thread up to a barrier before the
    measured wrk run; a side that fails breaks the barrier, so the other gives up
    rather than measuring alone (an unpaired point would compare nothing).
    """
    barrier = threading.Barrier(2, timeout=PAIR_WAIT_S)

    def one(name: str) -> None:
        try:
            measured = _measure_round(
                sides[name],
                args=args,
                run_id=run_id,
                record=record,
                c=c,
                number=number,
                together=barrier,
            )
            if not measured:
                barrier.abort()
        except BaseException as exc:  # noqa: BLE001 (re-raised below, by the thread that runs the bench)
            unexpected.append(exc)
            barrier.abort()

    unexpected: list[BaseException] = []
    threads = [threading.Thread(target=one, args=(name,), daemon=True) for name in sides]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if unexpected:
        raise unexpected[0]


def write_outputs(result: dict, out: Path) -> None:
    table = report.markdown(result)
    chart = report.svg_chart(
        result["points"],
        title=f"Token endpoint throughput, {result['host']['cores']} cores ({result['run_id']})",
    )
    document = json.dumps(result, indent=2) + "\n"
    for suffix in ("", "-" + result["run_id"]):
        (out / f"results{suffix}.md").write_text(table)
        (out / f"results{suffix}.json").write_text(document)
        (out / f"throughput{suffix}.svg").write_text(chart)
    say("")
    say(table)
    say(f"saved {out / 'results.md'}, {out / 'results.json'} and {out / 'throughput.svg'}")


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    say(f"({time.monotonic() - started:.0f} s)")
    sys.exit(code)
