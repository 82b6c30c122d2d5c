"""The first hour of a new user: the issuer follows PORT, first_run's scopes, machine update,
the refusal of a machine that could never get a token, and the offline verifier copied."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from audit.context import Actor
from audit.models import AuditEvent
from audit.selectors import AuditFilters
from audit.services import audit_export, audit_seal_pending
from clients.models import Machine, Scope
from identity_portal.services import portal_scopes_ensure
from tests.audit.conftest import record_token_event
from tests.identity_portal.test_settings import _manage

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_issuer_follows_port(tmp_path):
    shown = _manage(
        [
            "shell",
            "-c",
            "from django.conf import settings as s; "
            "print('|'.join([s.ISSUER, s.AUDIT_API_AUDIENCE, *s.CSRF_TRUSTED_ORIGINS]))",
        ],
        {"PORT": "8391"},
        tmp_path,
    )

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().splitlines()[-1] == (
        "http://127.0.0.1:8391|http://127.0.0.1:8391/api/v1/audit|http://127.0.0.1:8391"
    )


def test_first_run_registers_the_portals_own_scopes_once(db):
    created = portal_scopes_ensure()
    again = portal_scopes_ensure()

    assert (created, again) == (["openid", "tokens:introspect", "audit:read"], [])
    assert sorted(Scope.objects.values_list("name", flat=True)) == [
        "audit:read",
        "openid",
        "tokens:introspect",
    ]
    events = AuditEvent.objects.filter(event_type="scope.created")
    assert [(e.actor_kind, e.actor_display, e.target_display) for e in events] == [
        ("cli", "first_run", "openid"),
        ("cli", "first_run", "tokens:introspect"),
        ("cli", "first_run", "audit:read"),
    ]


def test_creating_a_machine_without_audience_is_refused_clearly(db, scope_read):
    with pytest.raises(CommandError) as raised:
        call_command("machine", "create", "--name", "lost", "--scope", "read", stdout=StringIO())

    assert raised.value.returncode == 2
    assert "could never get a token" in str(raised.value)
    assert Machine.objects.count() == 0


def _update(*args: str) -> dict:
    out = StringIO()
    call_command("machine", "update", *args, stdout=out)
    return json.loads(out.getvalue())


def test_machine_update_changes_scopes_audiences_lifetime_and_allow_list(
    machine_and_secret, cli_actor
):
    machine, _ = machine_and_secret
    Scope.objects.create(name="write")
    call_command("audience", "create", "https://other.example", stdout=StringIO())

    changed = _update(
        machine.client_id,
        "--scope",
        "read",
        "--scope",
        "write",
        "--audience",
        "https://api.example",
        "--audience",
        "https://other.example",
        "--ttl",
        "120",
        "--ip",
        "10.0.0.0/8",
    )
    cleared = _update(machine.client_id, "--any-ip")

    assert (changed["scopes"], changed["audiences"], changed["access_token_ttl"]) == (
        ["read", "write"],
        ["https://api.example", "https://other.example"],
        120,
    )
    assert (changed["ip_allowlist"], cleared["ip_allowlist"]) == (["10.0.0.0/8"], [])
    events = AuditEvent.objects.filter(event_type="machine.updated").order_by("id")
    assert [
        (e.actor_kind, e.actor_display.startswith("manage.py machine update"), e.details["changed"])
        for e in events
    ] == [
        ("cli", True, ["access_token_ttl", "audiences", "ip_allowlist", "scopes"]),
        ("cli", True, ["ip_allowlist"]),
    ]


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--scope", "nope"),
        ("--ttl", "0"),
        ("--ip", "10.0.0.0/99"),
        ("--ip", "10.0.0.0/8", "--any-ip"),
    ],
)
def test_machine_update_refuses_and_changes_nothing(machine_and_secret, args):
    machine, _ = machine_and_secret
    before = AuditEvent.objects.count()

    with pytest.raises(CommandError) as raised:
        call_command("machine", "update", machine.client_id, *args, stdout=StringIO())

    machine.refresh_from_db()
    assert raised.value.returncode == 2
    assert (machine.access_token_ttl, machine.ip_allowlist) == (600, [])
    assert AuditEvent.objects.count() == before


def _verifier(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-I", str(folder / "verify_audit_export.py"), *args],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_the_offline_verifier_works_copied_beside_chain_py(db, tmp_path):
    for n in range(3):
        record_token_event(n)
    audit_seal_pending()
    out = tmp_path / "audit.jsonl"
    audit_export(fmt="jsonl", filters=AuditFilters(), out_path=out, actor=Actor.cli("test"))
    folder = tmp_path / "copied"
    folder.mkdir()
    shutil.copy(ROOT / "scripts" / "verify_audit_export.py", folder)
    alone = _verifier(folder, str(out))
    shutil.copy(ROOT / "audit" / "chain.py", folder)

    works = _verifier(folder, str(out))

    assert (alone.returncode, "chain.py not found" in alone.stderr) == (2, True)
    assert works.returncode == 0, works.stderr
    assert works.stdout.startswith("OK 3 events")
    assert _verifier(folder, str(tmp_path / "missing.jsonl")).returncode == 2
    assert _verifier(folder, str(out), "--chain").returncode == 2
