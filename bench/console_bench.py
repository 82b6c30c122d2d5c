"""Console benchmark (not a test): the dashboard and the audit log with ten million events.

    make bench-console                       # 10,000,000 events into mip_console_bench
    make bench-console CONSOLE_BENCH_EVENTS=1000000

Loads N audit events spread over 30 days (500 machines, 4% refused, a few
console events) with one ``INSERT ... SELECT generate_series`` in PostgreSQL,
seals them with synthetic seal rows and fills the hourly counts the sealer
would have written (triggers off for the load only: the superuser's session),
leaves 2,000 events unsealed, ANALYZEs, then times every read the dashboard
and the audit log make, each the median of several runs. Prints a table; the
numbers depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/mip_console_bench"

LOAD_SQL = """
INSERT INTO audit_auditevent (occurred_at, event_type, actor_kind, actor_id, actor_display,
    target_kind, target_id, target_display, outcome, reason, source_ip, user_agent,
    request_id, details)
SELECT now() - interval '30 days' + (g * (interval '30 days' / %(n)s)),
    CASE WHEN g %% 100 = 0 THEN 'machine.updated' WHEN g %% 25 = 1 THEN 'token.denied'
         ELSE 'token.issued' END,
    CASE WHEN g %% 100 = 0 THEN 'user' ELSE 'machine' END,
    CASE WHEN g %% 100 = 0 THEN '1' ELSE 'client-' || (g %% 500) END,
    CASE WHEN g %% 100 = 0 THEN 'admin' ELSE 'machine-' || (g %% 500) END,
    'machine', 'client-' || (g %% 500), 'machine-' || (g %% 500),
    CASE WHEN g %% 25 = 1 THEN 'failure' ELSE 'success' END,
    CASE WHEN g %% 25 = 1
         THEN (ARRAY['invalid_client', 'invalid_scope', 'invalid_target'])[g %% 3 + 1]
         ELSE '' END,
    ('10.' || (g %% 7) || '.' || (g / 7 %% 256) || '.' || (g %% 251))::inet,
    'bench/1.0', 'req-' || g, '{}'::jsonb
FROM generate_series(1, %(n)s) AS g
"""

SEAL_SQL = """
INSERT INTO audit_auditseal (position, event_id, prev_hash, hash, sealed_at)
SELECT row_number() OVER (ORDER BY id), id, md5(id::text) || md5(id::text),
       md5((id + 1)::text) || md5((id + 1)::text), occurred_at
FROM audit_auditevent WHERE id <= (SELECT max(id) - %(unsealed)s FROM audit_auditevent)
"""

COUNTS_SQL = [
    """INSERT INTO audit_audithourlycount (hour, event_type, outcome, reason, count)
       SELECT date_trunc('hour', occurred_at), event_type, outcome, reason, count(*)
       FROM audit_auditevent e JOIN audit_auditseal s ON s.event_id = e.id
       GROUP BY 1, 2, 3, 4""",
    """INSERT INTO audit_audithourlymachinecount (hour, machine, outcome, count)
       SELECT date_trunc('hour', occurred_at), actor_id, outcome, count(*)
       FROM audit_auditevent e JOIN audit_auditseal s ON s.event_id = e.id
       WHERE event_type LIKE 'token.%%' AND actor_kind = 'machine' GROUP BY 1, 2, 3""",
]


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def ensure_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def load(n: int, unsealed: int) -> None:
    from django.db import connection

    from audit.models import AuditEvent

    have = AuditEvent.objects.count()
    if have >= n:
        say(f"reusing {have:,} events")
        return
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")  # the load only
        for table in ("audithourlymachinecount", "audithourlycount", "auditseal", "auditevent"):
            cursor.execute(f"TRUNCATE audit_{table} RESTART IDENTITY")
        cursor.execute(LOAD_SQL, {"n": n})
        cursor.execute(SEAL_SQL, {"unsealed": unsealed})
        for statement in COUNTS_SQL:
            cursor.execute(statement)
        cursor.execute("SET session_replication_role = origin")
        cursor.execute("ANALYZE")
    say(f"loaded {n:,} events in {time.perf_counter() - started:.0f} s")


def timed(name: str, call, runs: int = 5) -> tuple[str, float, float]:
    if runs > 1:
        call()  # warm the caches once
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return name, statistics.median(times), max(times)


def measure() -> list[tuple[str, float, float]]:
    from datetime import timedelta

    from django.utils import timezone

    from audit.selectors import (
        AuditFilters,
        AuditLogQuery,
        audit_chain_state,
        audit_log_page,
        audit_top_failure_reasons,
        audit_top_machines,
    )
    from identity_portal.console.dashboard import dashboard_get, token_charts

    now = timezone.now()
    day_ago = now - timedelta(hours=24)
    middle = audit_log_page(
        query=AuditLogQuery(
            filters=AuditFilters(since=now - timedelta(days=15), until=now - timedelta(days=14))
        ),
        before=None,
        size=1,
    ).events
    deep = (middle[0].occurred_at, middle[0].id)

    def page(**filters):
        search = filters.pop("search", "")
        before = filters.pop("before", None)
        query = AuditLogQuery(filters=AuditFilters(**filters), search=search)
        return lambda: audit_log_page(query=query, before=before, size=50)

    week_ago = now - timedelta(days=7)
    month_ago = now - timedelta(days=31)
    return [
        timed("dashboard: everything (dashboard_get)", dashboard_get),
        timed("dashboard: charts 24 h + 30 days", lambda: token_charts(now=now)),
        timed("dashboard: top machines 24 h", lambda: audit_top_machines(since=day_ago)),
        timed(
            "dashboard: top failure reasons 24 h", lambda: audit_top_failure_reasons(since=day_ago)
        ),
        timed("dashboard: chain state + unsealed backlog", audit_chain_state),
        timed("log: newest page", page()),
        timed("log: page 15 days deep (cursor)", page(before=deep)),
        timed("log: failures only", page(outcome="failure")),
        timed("log: one machine", page(machine="client-42")),
        timed("log: one machine's failures", page(machine="client-42", outcome="failure")),
        timed("log: a machine with no event", page(machine="client-none")),
        timed(
            "log: one hour a week ago", page(since=week_ago, until=week_ago + timedelta(hours=1))
        ),
        timed("log: type machine.* (1%)", page(event_types=("machine.updated",))),
        timed("log: type key.* (none)", page(event_types=("key.created", "key.revoked"))),
        timed("log: source address, no range (bounded scan)", page(source_ip="10.3.17.200")),
        timed("log: source address, last 24 h", page(source_ip="10.3.17.200", since=day_ago)),
        timed("log: search, no range (bounded scan)", page(search="req-123456")),
        timed("log: search a request id, last 24 h", page(search="req-9999000", since=day_ago)),
        timed("log: search matching nothing, last 24 h", page(search="nothing", since=day_ago)),
        timed("log: search matching nothing, 30 days", page(search="nothing", since=month_ago)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--unsealed", type=int, default=2000)
    args = parser.parse_args()
    url = os.environ.setdefault("DATABASE_URL", DEFAULT_URL)
    if not url.startswith("postgres"):
        sys.stderr.write("bench-console needs PostgreSQL (DATABASE_URL=postgres://...)\n")
        return 2
    ensure_database(url)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "identity_portal.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    load(args.events, args.unsealed)
    rows = measure()
    say(f"\n{'read':<48} {'median ms':>10} {'max ms':>8}")
    for name, median, worst in rows:
        say(f"{name:<48} {median:>10.1f} {worst:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
