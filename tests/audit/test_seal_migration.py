"""Migration 0011 on a trail sealed the old way: seals move over, hashes unchanged.

Run in a child process against a database of its own (PostgreSQL or a SQLite
file), migrated to 0010 first, filled the old way, then to the latest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]

UPGRADE = r"""
import json
import django
django.setup()
from datetime import UTC, datetime
from django.core.management import call_command
from django.db import connection
from audit import chain

call_command("migrate", "audit", "0010_checkpoint_chain", verbosity=0)
columns = ("occurred_at", "event_type", "actor_kind", "actor_id", "actor_display",
           "target_kind", "target_id", "target_display", "outcome", "reason", "source_ip",
           "user_agent", "request_id", "details")
when = datetime(2026, 1, 1, tzinfo=UTC)
prev, sealed = chain.GENESIS_HASH, []
with connection.cursor() as cursor:
    for n in range(5):
        values = dict(zip(columns, (when, "token.issued", "machine", f"m{n}", "", "", "", "",
                                    "success", "", None, "", f"r{n}", {"n": n})))
        cursor.execute(
            f"INSERT INTO audit_auditevent ({', '.join(columns)}) VALUES "
            f"({', '.join(['%s'] * len(columns))})",
            [connection.ops.adapt_datetimefield_value(when) if c == "occurred_at" else
             json.dumps(v) if c == "details" else v for c, v in values.items()],
        )
    # The old sealer sealed ids 1, 2 and 4; 3 committed late, 5 is new.
    for position, event_id in enumerate((1, 2, 4), start=1):
        row = dict(zip(columns, (when, "token.issued", "machine", f"m{event_id - 1}", "", "", "",
                                 "", "success", "", None, "", f"r{event_id - 1}",
                                 {"n": event_id - 1})))
        row.update(position=position, sealed_at=when)
        digest = chain.event_hash(chain.event_record(row), prev)
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
        cursor.execute(
            "UPDATE audit_auditevent SET position = %s, prev_hash = %s, hash = %s, "
            "sealed_at = %s WHERE id = %s",
            [position, prev, digest, connection.ops.adapt_datetimefield_value(when), event_id],
        )
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")
        sealed.append(digest)
        prev = digest

call_command("migrate", verbosity=0)

from audit.models import AuditSeal
from audit.selectors import audit_chain_verify, audit_unsealed_count
from audit.services import audit_seal_pending

moved = list(AuditSeal.objects.values_list("position", "event_id", "hash"))
unsealed = audit_unsealed_count()
newly = audit_seal_pending()
report = audit_chain_verify()
print(json.dumps({
    "moved": moved, "old_hashes": sealed, "unsealed": unsealed, "newly": newly,
    "ok": report.ok, "problem": str(report.problem), "head": report.head_position,
}))
"""


def _upgrade(database_url: str, tmp_path: Path) -> dict:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "VAR_DIR": str(tmp_path / "var"),
        "DJANGO_SETTINGS_MODULE": "identity_portal.settings",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("MIGRATION_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", UPGRADE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_upgraded(result: dict) -> None:
    # Positions and hashes as the old sealer left them; the late event 3 sealed at 4.
    assert [tuple(row) for row in result["moved"][:3]] == [
        (1, 1, result["old_hashes"][0]),
        (2, 2, result["old_hashes"][1]),
        (3, 4, result["old_hashes"][2]),
    ]
    assert [row[:2] for row in result["moved"][3:]] == [[4, 3]]
    assert (result["unsealed"], result["newly"]) == (1, 1)
    assert (result["ok"], result["head"]) == (True, 5), result["problem"]


@pytest.mark.postgres
def test_upgrade_on_postgresql(db, tmp_path):
    settings = connection.settings_dict
    name = f"{settings['NAME']}_upgrade"
    admin = {
        "host": settings["HOST"] or "127.0.0.1",
        "port": settings["PORT"] or 5432,
        "user": settings["USER"] or None,
        "password": settings["PASSWORD"] or None,
        "dbname": "postgres",
        "autocommit": True,
    }
    with psycopg.connect(**admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    user = settings["USER"] or ""
    password = f":{settings['PASSWORD']}" if settings["PASSWORD"] else ""
    url = f"postgres://{user}{password}@{admin['host']}:{admin['port']}/{name}"
    try:
        _assert_upgraded(_upgrade(url, tmp_path))
    finally:
        with psycopg.connect(**admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_upgrade_on_sqlite(tmp_path):
    _assert_upgraded(_upgrade(f"sqlite:///{tmp_path / 'upgrade.sqlite3'}", tmp_path))
