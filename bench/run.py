"""`make bench`: token endpoint throughput and latency, the portal beside its peers.

    .venv/bin/python -m bench.run [--only portal,stock,node] [--concurrency 1,4,16,64]
                                  [--duration 10] [--warmup 2] [--machines 4]

Starts each server in turn on a spare port (the portal under granian with
its production config, against DATABASE_URL or a SQLite file under
var/bench/), drives client credentials requests with wrk at each concurrency,
reads the servers' CPU time from /proc, checks the portal's audit trail
against the tokens wrk received, and writes var/bench/results.{md,json} and
var/bench/throughput.svg (plus copies stamped with the run id).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import report
from bench.audit_check import AuditUnavailable, audit_compare, audited_request_ids
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
    REPO,
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
    "stock-default": "stockdef",
    "stock-plain": "stockplain",
}


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
    parser.add_argument("--machines", type=int, default=4, help="portal machines to register (4)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 2, help="portal web workers (cores)"
    )
    parser.add_argument(
        "--sealer",
        action="store_true",
        help="run the audit sealer beside the portal at AUDIT_SEAL_INTERVAL (python -m "
        "bench.sealer); each point then ends once its tokens are sealed, and counts the "
        "sealer's PostgreSQL work",
    )
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench", help="output folder")
    args = parser.parse_args(argv)
    args.only = args.only or list(SERVERS)
    unknown = set(args.only) - set(SERVERS)
    if unknown:
        parser.error(f"unknown server(s) {sorted(unknown)}; choose from {', '.join(SERVERS)}")
    args.concurrency = sorted(set(args.concurrency or [1, 4, 16, 64]))
    if any(c < 1 for c in args.concurrency):
        parser.error("concurrency must be at least 1")
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


def measure_target(
    *,
    server: Server,
    target: Target,
    args: argparse.Namespace,
    run_id: str,
    audit_url: str | None,
    points: list[dict],
) -> None:
    """Measure one series at every concurrency, appending each point as it is done."""
    status, body = token_request(target)
    if not 200 <= status < 300:
        raise ServerUnavailable(f"{target.name}: a single token request got {status}: {body[:300]}")
    for c in args.concurrency:
        prefix = f"{run_id}-{SHORT.get(target.name, 'node')}-c{c}-"
        stem = args.out / "runs" / run_id / f"{target.name}-c{c}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        if args.warmup > 0:
            run_wrk(
                target=target,
                connections=c,
                duration_s=args.warmup,
                rid_prefix=prefix + "w",
                out_stem=stem.with_name(stem.name + "-warmup"),
                timeout_s=args.timeout,
            )
            server.wait_idle()
        sealer = getattr(server, "sealer", None)
        if sealer is not None:
            # Start from a sealed trail, so the point pays for its own tokens only.
            sealer.wait_pass_after(time.time())
        db_url = audit_url if audit_url and is_postgres(audit_url) else None
        db_before = postgres_backends_cpu(db_url) if db_url else None
        sealer_before = sealer.cpu_seconds() if sealer is not None else 0.0
        cpu_before = server.cpu_seconds()
        host_before = host_busy_seconds()
        result = run_wrk(
            target=target,
            connections=c,
            duration_s=args.duration,
            rid_prefix=prefix + "m",
            out_stem=stem,
            timeout_s=args.timeout,
        )
        cpu = server.cpu_seconds() - cpu_before
        host = host_busy_seconds() - host_before
        sealer_cpu = None
        if sealer is not None:
            # End once a pass that started after the load has sealed every token of it.
            server.wait_idle()
            sealer.wait_pass_after(time.time())
            sealer_cpu = sealer.cpu_seconds() - sealer_before
        db_cpu = cpu_delta(db_before, postgres_backends_cpu(db_url)) if db_url else None
        server.wait_idle()
        audit = None
        if audit_url is not None:
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
            "db_cpu_ms_per_token": (
                round(db_cpu * 1000 / result.ok, 3) if db_cpu is not None and result.ok else None
            ),
            "sealer_cpu_ms_per_token": (
                round(sealer_cpu * 1000 / result.ok, 3)
                if sealer_cpu is not None and result.ok
                else None
            ),
            "load_tool_cpu_s": round(result.load_tool_cpu_s, 3),
            # Cores busy with anything else during the point: other people's work on a
            # shared machine (and, for the stock peer, its database).
            "others_cores": round(
                max(0.0, host - cpu - result.load_tool_cpu_s - (db_cpu or 0.0)) / result.duration_s,
                2,
            )
            if result.duration_s
            else None,
            "audit": audit,
        }
        points.append(p)
        audit_text = (
            f", audit lost {audit['lost']} extra {audit['extra']} dup {audit['duplicates']}"
            if audit
            else ""
        )
        say(
            f"  {target.name:<19} c{c:<3} {p['tokens_per_s']:>9,.1f} tokens/s  "
            f"p99 {result.latency_ms.get('p99', float('nan')):.2f} ms  "
            f"non-2xx {result.non_2xx}  socket errors {result.socket_error_total}  "
            f"CPU {p['cpu_ms_per_token'] or 0:.2f} ms/token"
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
            + audit_text
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
            "machines": args.machines,
            "workers": args.workers,
            "sealer": args.sealer,
        },
        "servers": {},
        "points": [],
    }
    say(
        f"benchmark {run_id}: {', '.join(args.only)} at c{args.concurrency}, "
        f"{args.duration} s per point"
    )
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
            for target in server.targets():
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
        except ServerUnavailable as exc:
            info.update(server.notes)
            info.update(status="failed", reason=str(exc))
            say(f"{server.name}: not run: {exc}")
        finally:
            server.stop()
        if info["status"] == "ok" and info.get("errors"):
            info["status"] = "partial"
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["ratios"] = report.ratios(result["points"])
    result["targets"] = report.targets(result)
    result["conditions"] = report.conditions(result)
    write_outputs(result, args.out)
    return 0 if result["points"] else 1


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
