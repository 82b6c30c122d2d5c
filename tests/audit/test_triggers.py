"""The PostgreSQL triggers: the audit tables are insert-only below the ORM.

These run as the test connection (a superuser, like the tables' owner): the
triggers refuse it too, with no session setting to open them. What the
runtime role cannot do at all (disable a trigger, delete through privileges)
is in test_red_team_storage.
"""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from audit import chain
from audit.models import AuditCheckpoint, AuditEvent, AuditSeal
from audit.selectors import audit_events_sealed
from audit.services import audit_checkpoint_create, audit_seal_pending

pytestmark = pytest.mark.postgres


def _refused(sql: str, params=None, *, match: str = "append-only") -> None:
    with (
        pytest.raises(DatabaseError, match=match),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql, params)


def _state():
    return (
        list(AuditEvent.objects.order_by("id").values()),
        list(AuditSeal.objects.values()),
        list(AuditCheckpoint.objects.values()),
    )


def test_update_delete_and_truncate_of_events_and_seals_are_refused(make_events):
    make_events(2)
    audit_seal_pending()
    audit_checkpoint_create()
    before = _state()

    _refused("UPDATE audit_auditevent SET reason = 'x'")
    _refused("DELETE FROM audit_auditevent")
    _refused("TRUNCATE audit_auditevent")
    _refused("UPDATE audit_auditseal SET hash = repeat('a', 64) WHERE position = 1")
    _refused("DELETE FROM audit_auditseal WHERE position = 2")
    _refused("TRUNCATE audit_auditseal")
    _refused("UPDATE audit_auditcheckpoint SET position = 5")
    _refused("DELETE FROM audit_auditcheckpoint")
    _refused("TRUNCATE audit_auditcheckpoint")

    assert _state() == before


def test_the_old_session_settings_open_nothing(make_events):
    make_events(1)
    audit_seal_pending()
    before = _state()

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL audit.prune = 'on'")
        cursor.execute("SET LOCAL audit.allow_truncate = 'on'")
        _refused("DELETE FROM audit_auditevent")
        _refused("DELETE FROM audit_auditseal")
        _refused("TRUNCATE audit_auditevent, audit_auditseal, audit_auditcheckpoint")

    assert _state() == before


def test_a_seal_must_extend_the_head(make_events):
    first, _second, third = make_events(3)
    audit_seal_pending(batch_size=1, max_batches=2)
    head = AuditSeal.objects.get(position=2)
    before = _state()
    insert = (
        "INSERT INTO audit_auditseal (position, event_id, prev_hash, hash, sealed_at) "
        "VALUES (%s, %s, %s, %s, now())"
    )

    # An old position again (already sealed), a gap, a wrong link: refused.
    _refused(insert, [1, third.pk, chain.GENESIS_HASH, "f" * 64], match="audit_auditseal_pkey")
    _refused(insert, [4, third.pk, head.hash, "f" * 64], match=r"position 4 \(event")
    _refused(insert, [3, third.pk, "0" * 64, "f" * 64], match=r"position 3 \(event")
    # The right place, but an event already sealed, or one that does not exist.
    _refused(insert, [3, first.pk, head.hash, "f" * 64], match="audit_auditseal_event_id_key")
    _refused(insert, [3, third.pk + 100, head.hash, "f" * 64], match=r"position 3 \(event")

    assert _state() == before
    assert audit_seal_pending() == 1
    assert list(audit_events_sealed().values_list("position", flat=True)) == [1, 2, 3]


def test_a_plain_insert_of_an_event_works_and_is_sealed(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditevent (occurred_at, event_type, actor_kind, actor_id, "
            "actor_display, target_kind, target_id, target_display, outcome, reason, "
            "source_ip, user_agent, request_id, details) VALUES "
            "(now(), 'token.issued', 'machine', 'm', '', '', '', '', 'success', '', "
            "'192.0.2.1', '', '', '{}')"
        )

    assert audit_seal_pending() == 1
