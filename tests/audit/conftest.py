"""Fixtures for the audit tests: events, roles and raw-SQL tampering."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection

from audit.choices import ActorKind, EventType, Outcome
from audit.context import Actor, RequestContext, Target
from audit.roles import AUDITORS
from audit.services import audit_record


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
