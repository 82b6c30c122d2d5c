"""Red team: the audit storage against someone holding the application's DATABASE_URL.

Each attack runs as the runtime role ``manage.py db_roles`` creates, through a
connection of its own and raw SQL, the way an attacker with a leaked
``DATABASE_URL`` would; each must be refused by the database, with the exact
error, and leave every audit row as it was. The legitimate paths (sealing,
pruning through the function) still work as that role.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
import pytest
import time_machine
from django.db import connection

from audit import chain
from audit.context import Actor
from audit.models import AuditCheckpoint, AuditEvent, AuditSeal
from audit.selectors import AuditFilters, audit_chain_head, audit_chain_verify
from audit.services import (
    _checkpoint_build,
    _checkpoint_columns,
    audit_checkpoint_create,
    audit_export,
    audit_prune,
    audit_seal_pending,
    checkpoint_values,
)
from audit.signing import audit_verification_keys
from identity_portal.database_roles import (
    RuntimeRole,
    runtime_role_create_sql,
    runtime_role_grants_sql,
)
from tests.audit.conftest import record_token_event

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PERMISSION_DENIED = "42501"
OLD = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def runtime_role() -> RuntimeRole:
    """The least-privilege role of ``db_roles``, granted on the test database."""
    role = RuntimeRole(
        name=f"{connection.settings_dict['NAME']}_app", password=secrets.token_urlsafe(16)
    )
    with connection.cursor() as cursor:
        for statement in [
            *runtime_role_create_sql(role=role),
            *runtime_role_grants_sql(role=role, tables=connection.introspection.table_names()),
        ]:
            cursor.execute(statement)
    return role


@pytest.fixture
def attacker(runtime_role):
    """Run SQL as the runtime role in one transaction; return the error it raised."""
    settings = connection.settings_dict

    def run(*statements: tuple[str, list] | str) -> psycopg.Error:
        with psycopg.connect(
            host=settings["HOST"] or "127.0.0.1",
            port=settings["PORT"] or 5432,
            dbname=settings["NAME"],
            user=runtime_role.name,
            password=runtime_role.password,
        ) as conn:
            try:
                with conn.transaction():
                    for statement in statements:
                        sql, params = (
                            statement if isinstance(statement, tuple) else (statement, None)
                        )
                        conn.execute(sql, params)
            except psycopg.Error as exc:
                return exc
        pytest.fail("the attack was not refused")

    return run


@contextmanager
def as_runtime_role(role: RuntimeRole) -> Iterator[None]:
    """The application's own connection, logged in as the runtime role."""
    saved = {key: connection.settings_dict[key] for key in ("USER", "PASSWORD")}
    connection.close()
    connection.settings_dict.update(USER=role.name, PASSWORD=role.password)
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(saved)


def _state():
    return (
        list(AuditEvent.objects.order_by("id").values()),
        list(AuditSeal.objects.values()),
        list(AuditCheckpoint.objects.order_by("id").values()),
    )


def _refused(error: psycopg.Error, sqlstate: str, message: str) -> None:
    assert (error.sqlstate, error.diag.message_primary) == (sqlstate, message)


@pytest.fixture
def trail():
    for n in range(3):
        record_token_event(n)
    audit_seal_pending()
    audit_checkpoint_create()
    return _state()


def test_the_prune_setting_does_not_open_delete(attacker, trail):
    error = attacker("SET LOCAL audit.prune = 'on'", "DELETE FROM audit_auditevent")

    _refused(error, PERMISSION_DENIED, "permission denied for table audit_auditevent")
    assert _state() == trail


def test_the_truncate_setting_does_not_open_truncate(attacker, trail):
    for table in ("audit_auditcheckpoint", "audit_auditseal", "audit_auditevent"):
        error = attacker("SET audit.allow_truncate = 'on'", f"TRUNCATE {table}")

        _refused(error, PERMISSION_DENIED, f"permission denied for table {table}")
    assert _state() == trail


def test_an_edited_details_field_is_refused(attacker, trail):
    error = attacker(
        (
            "UPDATE audit_auditevent SET details = %s WHERE id = "
            "(SELECT event_id FROM audit_auditseal WHERE position = 2)",
            ['{"scope": "admin"}'],
        )
    )

    _refused(error, PERMISSION_DENIED, "permission denied for table audit_auditevent")
    assert _state() == trail


def test_seal_rows_cannot_be_changed_reordered_or_deleted(attacker, trail):
    for sql in (
        "UPDATE audit_auditseal SET hash = repeat('f', 64) WHERE position = 3",
        "UPDATE audit_auditseal SET position = 5 - position WHERE position IN (2, 3)",
        "DELETE FROM audit_auditseal WHERE position >= 2",
        "UPDATE audit_auditcheckpoint SET position = 0",
        "DELETE FROM audit_auditcheckpoint",
    ):
        error = attacker(sql)

        table = sql.split()[1] if sql.startswith("UPDATE") else sql.split()[2]
        _refused(error, PERMISSION_DENIED, f"permission denied for table {table}")
    assert _state() == trail


def test_an_event_inserted_already_sealed_is_refused(attacker, trail):
    head_position, head_hash = audit_chain_head()
    first_event = AuditSeal.objects.get(position=1).event_id
    insert_event = (
        "INSERT INTO audit_auditevent (id, occurred_at, event_type, actor_kind, actor_id, "
        "actor_display, target_kind, target_id, target_display, outcome, reason, user_agent, "
        "request_id, details) VALUES (%s, now(), 'token.issued', 'machine', 'evil', '', '', "
        "'', '', 'success', '', '', '', '{}')"
    )
    insert_seal = (
        "INSERT INTO audit_auditseal (position, event_id, prev_hash, hash, sealed_at) "
        "VALUES (%s, %s, %s, %s, now())"
    )
    forged = 10_000

    # Sealed into an old position again.
    error = attacker((insert_event, [forged]), (insert_seal, [2, forged, "0" * 64, "f" * 64]))
    assert error.sqlstate == "23505"
    assert error.diag.constraint_name == "audit_auditseal_pkey"
    # At the head, but not linked to it.
    error = attacker(
        (insert_event, [forged]), (insert_seal, [head_position + 1, forged, "0" * 64, "f" * 64])
    )
    _refused(
        error,
        PERMISSION_DENIED,
        f"audit seals only extend the chain: position 4 (event {forged}) breaks it",
    )
    # Linked to the head, but for an event below the ones already sealed (out of id order).
    error = attacker(
        (insert_event, [first_event - 1]),
        (insert_seal, [head_position + 1, first_event - 1, head_hash, "f" * 64]),
    )
    _refused(
        error,
        PERMISSION_DENIED,
        f"audit seals only extend the chain: position 4 (event {first_event - 1}) breaks it",
    )
    # Below the chain's first position, after the head row.
    error = attacker((insert_event, [forged]), (insert_seal, [0, forged, "0" * 64, "f" * 64]))
    _refused(error, PERMISSION_DENIED, "audit seals only extend the chain: inserted below the head")
    assert _state() == trail


def test_an_event_slipped_in_below_the_sealed_head_is_named_by_verify(trail):
    first_event = AuditSeal.objects.get(position=1).event_id
    with connection.cursor() as cursor:
        # INSERT is the runtime role's right: the row stays outside the chain.
        cursor.execute(
            "INSERT INTO audit_auditevent (id, occurred_at, event_type, actor_kind, actor_id, "
            "actor_display, target_kind, target_id, target_display, outcome, reason, "
            "user_agent, request_id, details) VALUES (%s, now(), 'token.issued', 'machine', "
            "'evil', '', '', '', '', 'success', '', '', '', '{}')",
            [first_event - 1],
        )

    assert audit_seal_pending() == 0
    report = audit_chain_verify()
    assert str(report.problem) == (
        f"event id {first_event - 1} is below the sealed head but not sealed"
    )


def test_triggers_cannot_be_disabled_or_dropped(attacker, trail):
    for sql, message in (
        (
            "ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_guard",
            "must be owner of table audit_auditevent",
        ),
        (
            "ALTER TABLE audit_auditseal DISABLE TRIGGER USER",
            "must be owner of table audit_auditseal",
        ),
        (
            "DROP TRIGGER audit_checkpoint_guard ON audit_auditcheckpoint",
            "must be owner of relation audit_auditcheckpoint",
        ),
        ("DROP FUNCTION audit_row_guard()", "must be owner of function audit_row_guard"),
        (
            "SET session_replication_role = replica",
            'permission denied to set parameter "session_replication_role"',
        ),
    ):
        _refused(attacker(sql), PERMISSION_DENIED, message)
    assert _state() == trail


def test_the_retention_floor_and_prune_marker_are_out_of_reach(attacker, trail):
    _refused(
        attacker("UPDATE audit_retention_floor SET days = 0"),
        PERMISSION_DENIED,
        "permission denied for table audit_retention_floor",
    )
    _refused(
        attacker(
            "INSERT INTO audit_pruning VALUES (pg_current_xact_id())",
            "DELETE FROM audit_auditevent",
        ),
        PERMISSION_DENIED,
        "permission denied for table audit_pruning",
    )
    assert _state() == trail


def _prune_call(up_to: int) -> tuple[str, list]:
    position, head_hash = audit_chain_head()
    anchor_hash = AuditSeal.objects.get(position=up_to).hash
    checkpoint = _checkpoint_build(
        kind="prune",
        position=position,
        head_hash=head_hash,
        anchor_position=up_to,
        anchor_hash=anchor_hash,
    )
    return (
        "SELECT audit_prune_prefix(%s, %s::jsonb)",
        [up_to, json.dumps(_checkpoint_columns(checkpoint))],
    )


def test_the_prune_function_refuses_recent_events(attacker, trail):
    error = attacker(_prune_call(2))

    _refused(
        error,
        PERMISSION_DENIED,
        "audit prune refused: position 1 is within the 30 day retention floor",
    )
    assert _state() == trail


def test_the_prune_function_refuses_a_checkpoint_that_does_not_match(attacker, trail):
    sql, (up_to, checkpoint) = _prune_call(2)
    forged = {**json.loads(checkpoint), "anchor_hash": "0" * 64}

    error = attacker((sql, [up_to, json.dumps(forged)]))

    _refused(
        error,
        "22023",
        "audit prune refused: the checkpoint must anchor at 2 and sign head 3",
    )
    assert _state() == trail


def test_the_legitimate_prune_and_sealing_work_as_the_runtime_role(runtime_role):
    with time_machine.travel(OLD, tick=False):
        for n in range(3):
            record_token_event(n)
    record_token_event(3)

    with as_runtime_role(runtime_role):
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            assert cursor.fetchone() == (runtime_role.name,)
        assert audit_seal_pending() == 4
        result = audit_prune(retention_days=60)
        assert audit_seal_pending() == 1  # the audit.pruned event
        report = audit_chain_verify()

    assert (result.deleted, result.anchor_position) == (3, 3)
    assert report.ok, report.problem
    assert (report.anchor_position, report.checked, report.head_position) == (3, 2, 5)
    assert list(AuditSeal.objects.values_list("position", flat=True)) == [3, 4, 5]
    prune = AuditCheckpoint.objects.get(kind="prune")
    assert (prune.position, prune.anchor_position) == (4, 3)
    # The row the function wrote is the one the application signed, chained fields and all.
    assert prune.prev_checkpoint == chain.GENESIS_CHECKPOINT
    assert chain.checkpoint_valid(checkpoint_values(prune), audit_verification_keys())


def test_an_unsigned_checkpoint_row_rebases_nothing(runtime_role, trail, tmp_path):
    # INSERT is the runtime role's right: a checkpoint claiming a later head and anchor.
    with psycopg.connect(
        host=connection.settings_dict["HOST"] or "127.0.0.1",
        port=connection.settings_dict["PORT"] or 5432,
        dbname=connection.settings_dict["NAME"],
        user=runtime_role.name,
        password=runtime_role.password,
    ) as conn:
        conn.execute(
            "INSERT INTO audit_auditcheckpoint (created_at, kind, position, head_hash, "
            "anchor_position, anchor_hash, key_id, signature) VALUES "
            "(now(), 'scheduled', 1000, repeat('e', 64), 2, repeat('e', 64), 'k', 'forged')"
        )
    record_token_event(9)

    assert audit_seal_pending() == 1
    assert audit_chain_head()[0] == 4
    checkpoint = audit_checkpoint_create()
    out = tmp_path / "all.jsonl"
    manifest = audit_export(fmt="jsonl", filters=AuditFilters(), out_path=out, actor=Actor.cli("t"))
    report = audit_chain_verify()

    assert (checkpoint.position, checkpoint.anchor_position) == (4, 0)
    assert (manifest["anchor_position"], manifest["first_position"], manifest["count"]) == (0, 1, 4)
    assert chain.verify_export(out, manifest) == []
    forged = AuditCheckpoint.objects.get(position=1000)
    assert str(report.problem) == (
        "position 1000: a checkpoint here has an invalid signature or an untrusted key "
        f"[checkpoint id {forged.pk} (scheduled, position 1000, created "
        f"{chain.format_timestamp(forged.created_at)})]"
    )
