"""The PostgreSQL triggers: append-only below the ORM."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from audit.models import AuditEvent
from audit.services import audit_checkpoint_create, audit_seal_pending

pytestmark = pytest.mark.postgres


def _refused(sql: str, params=None) -> None:
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql, params)


def test_update_delete_and_truncate_of_events_are_refused(make_events):
    make_events(2)
    audit_seal_pending()
    before = list(AuditEvent.objects.order_by("id").values_list("position", "hash", "reason"))

    _refused("UPDATE audit_auditevent SET reason = 'x'")
    _refused("UPDATE audit_auditevent SET hash = repeat('a', 64) WHERE position = 1")
    _refused("DELETE FROM audit_auditevent WHERE position = 1")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL audit.allow_truncate = 'off'")
        _refused("TRUNCATE audit_auditevent")

    after = list(AuditEvent.objects.order_by("id").values_list("position", "hash", "reason"))
    assert after == before


def test_sealer_update_is_allowed_once_and_only_on_seal_fields(make_events):
    [event] = make_events(1)

    _refused(
        "UPDATE audit_auditevent SET position = 1, prev_hash = repeat('0', 64), "
        "hash = repeat('a', 64), sealed_at = now(), reason = 'x' WHERE id = %s",
        [event.pk],
    )
    assert audit_seal_pending() == 1
    _refused(
        "UPDATE audit_auditevent SET position = 7, hash = repeat('b', 64) WHERE id = %s",
        [event.pk],
    )
    assert AuditEvent.objects.get(pk=event.pk).position == 1


def test_a_plain_insert_of_non_seal_columns_works(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditevent (occurred_at, event_type, actor_kind, actor_id, "
            "actor_display, target_kind, target_id, target_display, outcome, reason, "
            "source_ip, user_agent, request_id, details) VALUES "
            "(now(), 'token.issued', 'machine', 'm', '', '', '', '', 'success', '', "
            "'192.0.2.1', '', '', '{}')"
        )

    assert audit_seal_pending() == 1


def test_checkpoints_cannot_be_changed_or_deleted(db):
    checkpoint = audit_checkpoint_create()

    _refused("UPDATE audit_auditcheckpoint SET position = 5")
    _refused("DELETE FROM audit_auditcheckpoint")

    assert list(AuditEvent.objects.all()) == []
    checkpoint.refresh_from_db()
    assert checkpoint.position == 0


def test_the_prune_flag_does_not_allow_updates_or_unsealed_deletes(make_events):
    make_events(1)

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL audit.prune = 'on'")
        _refused("DELETE FROM audit_auditevent WHERE position IS NULL")
        _refused("UPDATE audit_auditevent SET reason = 'x'")

    assert AuditEvent.objects.count() == 1
