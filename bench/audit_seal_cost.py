"""PostgreSQL CPU per audit event: the insert, the sealing, and the VACUUM after them.

    DATABASE_URL=postgres://... .venv/bin/python -m bench.audit_seal_cost [--events 20000]

One database backend does all the work, so its CPU time (read from /proc: the
server must run on this machine) is the database's alone, without the web
server or the network; give it a database of its own (it is migrated, and
the events stay). ``make bench --sealer`` measures the same inside a real run,
where this share is small against the noise of a shared machine.
"""

from __future__ import annotations

import argparse
import os
import sys

from bench.servers import process_cpu_seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_seal_cost")
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args(argv)
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("needs PostgreSQL: set DATABASE_URL=postgres://...")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "identity_portal.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from audit.context import Actor, RequestContext, Target
    from audit.services import audit_record, audit_seal_pending

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    count = args.events
    started = process_cpu_seconds(pid)
    for n in range(count):
        machine = f"machine-{n % 50}"
        audit_record(
            event_type="token.issued",
            actor=Actor(kind="machine", id=machine, display=machine),
            target=Target(kind="machine", id=machine, display=machine),
            details={"jti": f"j{n}", "scope": "read", "aud": ["https://api.example"]},
            context=RequestContext(
                source_ip="10.0.0.1", user_agent="bench/1.0", request_id=f"r{n}"
            ),
        )
    inserted = process_cpu_seconds(pid)
    sealed = audit_seal_pending()
    sealing = process_cpu_seconds(pid)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM audit_auditevent")
        cursor.execute("VACUUM audit_auditseal")
        vacuumed = process_cpu_seconds(pid)
        cursor.execute(
            "SELECT pg_total_relation_size('audit_auditevent') "
            "+ pg_total_relation_size('audit_auditseal')"
        )
        size = cursor.fetchone()[0]

    def per_event(seconds: float) -> str:
        return f"{seconds * 1e6 / count:.1f} us"

    print(  # noqa: T201 (a command-line tool talking to its user)
        f"{count} events, {sealed} sealed; PostgreSQL CPU per event: insert "
        f"{per_event(inserted - started)}, seal {per_event(sealing - inserted)}, vacuum "
        f"{per_event(vacuumed - sealing)}; audit tables {size / count:.0f} bytes per event "
        "(all events in the database)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
