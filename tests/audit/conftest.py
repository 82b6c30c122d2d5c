"""Fixtures for the audit tests: events, roles and raw-SQL tampering."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection

from audit.choices import ActorKind, EventType, Outcome
from audit.context import Actor, RequestContext, Target
from audit.services import audit_record
from core.roles import AUDITORS


def record_token_event(n: int, *, machine: str = "m-1", outcome: str = Outcome.SUCCESS):
    return audit_record(
        event_type=EventType.TOKEN_ISSUED if outcome == Outcome.SUCCESS else EventType.TOKEN_DENIED,
        actor=Actor(kind=ActorKind.MACHINE, id=machine, display=f"machine {machine}"),
        target=Target(kind="machine", id=machine, display=f"machine {machine}"),
        outcome=outcome,
        reason="" if outcome == Outcome.SUCCESS else "invalid_client",
        details={"jti": f"jti-{n}", "scope": "read write", "aud": ["https://api.test"], "n": n},
        context=RequestContext(source_ip="192.0.2.7", user_agent="agent/1.0 ü", request_id=f"r{n}"),
    )


@pytest.fixture
def make_events(db):
    def make(count: int, **kwargs):
        return [record_token_event(n, **kwargs) for n in range(count)]

    return make


AUDIT_TABLES = ("audit_auditevent", "audit_auditseal", "audit_auditcheckpoint")


def tamper(sql: str, params=None) -> None:
    """Change the audit tables behind the application's back, as an attacker with SQL would.

    On PostgreSQL the immutability triggers are switched off around the change,
    as the tables' owner (or a superuser) could (the triggers themselves, and
    the runtime role that cannot do this, are tested separately).
    """
    with connection.cursor() as cursor:
        postgres = connection.vendor == "postgresql"
        if postgres:
            for table in AUDIT_TABLES:
                cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        cursor.execute(sql, params)
        if postgres:
            for table in AUDIT_TABLES:
                cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


@pytest.fixture
def auditor(db):
    user = get_user_model().objects.create_user(
        username="audrey", password="correct horse battery", is_staff=True
    )
    user.groups.add(Group.objects.get_or_create(name=AUDITORS)[0])
    return user


@pytest.fixture
def bystander(db):
    return get_user_model().objects.create_user(
        username="bob", password="correct horse battery", is_staff=True
    )


@pytest.fixture
def witness_file(settings, tmp_path):
    """A file witness of its own for the test (the suite's default witness is the log)."""
    path = tmp_path / "witness.jsonl"
    settings.AUDIT_WITNESS = [f"file:{path}"]
    return path


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run a service and then its on-commit work (the witness writes), as a real commit would."""

    def run(service, /, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return service(**kwargs)

    return run


def verify_command(*args: str) -> tuple[int, str, str]:
    """``manage.py audit_verify``: exit code, stdout, stderr."""
    import io

    from django.core.management import call_command

    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("audit_verify", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return exc.code, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def rehash_from(position: int) -> None:
    """Recompute the seals' prev_hash and hash from ``position`` on, exactly as the sealer would.

    What an attacker does after editing or inserting an event, so that the chain
    of events is self-consistent again and only signed heads can tell. The
    event's chain fields live in its ``audit_auditseal`` row.
    """
    from audit import chain
    from audit.models import AuditSeal
    from audit.selectors import audit_events_sealed

    before = AuditSeal.objects.filter(position=position - 1).values_list("hash", flat=True)
    prev = before.first() or chain.GENESIS_HASH
    for event in audit_events_sealed().filter(position__gte=position).order_by("position"):
        values = {name: getattr(event, name) for name in chain.RECORD_FIELDS}
        digest = chain.event_hash(chain.event_record(values), prev)
        tamper(
            "UPDATE audit_auditseal SET prev_hash = %s, hash = %s WHERE position = %s",
            [prev, digest, event.position],
        )
        prev = digest
