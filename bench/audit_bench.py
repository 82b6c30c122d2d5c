"""Audit benchmark (not a test): export rate and peak memory, and audit_record's cost.

    make bench-audit            # 1,000,000 events into the mip_audit_bench database

Steps: (re)create the audit tables' content in a dedicated PostgreSQL database,
COPY N events in, seal them with the real sealer, then export them (JSON Lines
and CSV) with ``manage.py audit_export`` in a child process whose peak RSS
(``ru_maxrss``) is read back, verify one export offline, and time
``audit_record`` per call. It loads the shared CPU for minutes: run it alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/mip_audit_bench"


def ensure_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def child_run(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of ``python SCRIPT ARGS`` run in a fresh process.

    ``ru_maxrss`` of a child includes the memory of the (big) parent it was forked
    from, so the child reports its own high-water mark (VmHWM) instead.
    """
    started = time.perf_counter()
    done = subprocess.run(  # noqa: S603
        [sys.executable, __file__, "--peak-of", *argv],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    elapsed = time.perf_counter() - started
    peak = [line for line in done.stderr.splitlines() if line.startswith("PEAK_KB=")]
    return elapsed, int(peak[-1].removeprefix("PEAK_KB="))


def peak_of(argv: list[str]) -> int:
    """Run a Python script in this process, then report this process's VmHWM."""
    import runpy

    sys.argv = argv
    status = 0
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            sys.stderr.write(f"PEAK_KB={line.split()[1]}\n")
    return status


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    if sys.argv[1:2] == ["--peak-of"]:
        return peak_of(sys.argv[2:])
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--record-calls", type=int, default=5000)
    args = parser.parse_args()

    url = os.environ.setdefault("DATABASE_URL", DEFAULT_URL)
    if not url.startswith("postgres"):
        sys.exit("the audit benchmark needs PostgreSQL: set DATABASE_URL=postgres://...")
    ensure_database(url)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "identity_portal.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction

    from audit.context import Actor, RequestContext, Target
    from audit.services import audit_record, audit_seal_pending

    call_command("migrate", verbosity=0)
    with transaction.atomic(), connection.cursor() as cursor:
        # The triggers refuse TRUNCATE to everyone; the benchmark's superuser switches
        # ordinary triggers off for this one transaction (no runtime role can).
        cursor.execute("SET LOCAL session_replication_role = 'replica'")
        cursor.execute(
            "TRUNCATE audit_auditevent, audit_auditseal, audit_auditcheckpoint RESTART IDENTITY"
        )

    # 1. Bulk insert with COPY (the benchmark is about export, not insertion).
    started = time.perf_counter()
    base = datetime(2026, 1, 1, tzinfo=UTC)
    columns = (
        "occurred_at, event_type, actor_kind, actor_id, actor_display, target_kind, target_id, "
        "target_display, outcome, reason, source_ip, user_agent, request_id, details"
    )
    connection.ensure_connection()
    raw = connection.connection
    with raw.cursor() as cursor, cursor.copy(f"COPY audit_auditevent ({columns}) FROM STDIN") as cp:
        for n in range(args.events):
            machine = f"machine-{n % 500}"
            cp.write_row(
                (
                    base + timedelta(milliseconds=n * 10),
                    "token.issued" if n % 20 else "token.denied",
                    "machine",
                    machine,
                    f"Machine {n % 500}",
                    "machine",
                    machine,
                    f"Machine {n % 500}",
                    "success" if n % 20 else "failure",
                    "" if n % 20 else "invalid_client",
                    f"10.0.{(n >> 8) % 256}.{n % 256}",
                    "bench-agent/1.0",
                    f"req-{n:08d}",
                    f'{{"jti": "jti-{n:08d}", "scope": "read write", '
                    f'"aud": ["https://api.example"], "exp": {1767225600 + n}}}',
                )
            )
    raw.commit()
    insert_s = time.perf_counter() - started

    started = time.perf_counter()
    sealed = audit_seal_pending(batch_size=5000)
    seal_s = time.perf_counter() - started
    connection.close()

    # 2. Exports in child processes, each measured on its own.
    env = {**os.environ, "DATABASE_URL": url}
    manage = [str(ROOT / "manage.py")]
    _idle_s, idle_rss = child_run([*manage, "check"], env)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("jsonl", "csv"):
            out = Path(tmp) / f"bench.{fmt}"
            seconds, rss = child_run(
                [*manage, "audit_export", "--format", fmt, "--out", str(out)], env
            )
            results[fmt] = (seconds, rss, out.stat().st_size)
        verify_s, verify_rss = child_run(
            [str(ROOT / "scripts" / "verify_audit_export.py"), str(out)], env
        )

    # 3. audit_record per call: inside an open transaction (what it adds to a token
    # request's own transaction), and as a transaction of its own (with COMMIT).
    actor = Actor(kind="machine", id="machine-1", display="Machine 1")
    target = Target(kind="machine", id="machine-1", display="Machine 1")
    context = RequestContext(source_ip="10.0.0.1", user_agent="bench/1.0", request_id="r")
    details = {"jti": "j", "scope": "read", "aud": ["https://api.example"], "exp": 1}
    inside, alone = [], []
    with transaction.atomic():
        for _ in range(args.record_calls):
            t0 = time.perf_counter_ns()
            audit_record(
                event_type="token.issued",
                actor=actor,
                target=target,
                details=details,
                context=context,
            )
            inside.append(time.perf_counter_ns() - t0)
    for _ in range(args.record_calls):
        t0 = time.perf_counter_ns()
        with transaction.atomic():
            audit_record(
                event_type="token.issued",
                actor=actor,
                target=target,
                details=details,
                context=context,
            )
        alone.append(time.perf_counter_ns() - t0)

    say(f"events: {args.events:,}")
    say(f"COPY insert: {insert_s:.1f} s; sealing: {seal_s:.1f} s ({sealed / seal_s:,.0f} events/s)")
    say(f"child process baseline (manage.py check): peak RSS {idle_rss / 1024:.0f} MiB")
    for fmt, (seconds, rss, size) in results.items():
        say(
            f"export {fmt}: {seconds:.1f} s, {args.events / seconds:,.0f} events/s, "
            f"peak RSS {rss / 1024:.0f} MiB, file {size / 2**20:.0f} MiB"
        )
    say(
        f"offline verify (csv, scripts/verify_audit_export.py): {verify_s:.1f} s, "
        f"{args.events / verify_s:,.0f} events/s, peak RSS {verify_rss / 1024:.0f} MiB"
    )
    say(
        f"audit_record inside a transaction: median {statistics.median(inside) / 1000:.0f} us, "
        f"p99 {sorted(inside)[int(len(inside) * 0.99)] / 1000:.0f} us"
    )
    say(
        f"audit_record in its own transaction (with COMMIT): median "
        f"{statistics.median(alone) / 1000:.0f} us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
