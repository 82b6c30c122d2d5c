"""Retention: the oldest sealed events go as a chain prefix; verification re-anchors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection

from audit import chain
from audit.choices import CheckpointKind, EventType
from audit.context import Actor
from audit.models import AuditCheckpoint, AuditEvent
from audit.selectors import (
    AuditFilters,
    audit_chain_verify,
    audit_events_sealed,
    audit_unsealed_count,
)
from audit.services import audit_export, audit_prune, audit_seal_pending, manifest_path_for
from tests.audit.conftest import record_token_event

START = datetime(2026, 1, 1, tzinfo=UTC)


def _history(db):
    with time_machine.travel(START, tick=False):
        for n in range(3):
            record_token_event(n)
        audit_seal_pending()
    with time_machine.travel(START + timedelta(days=300), tick=False):
        for n in range(3, 5):
            record_token_event(n)
        audit_seal_pending()


def test_prune_removes_only_sealed_events_past_retention(db, settings):
    settings.AUDIT_RETENTION_DAYS = 400
    _history(db)

    with time_machine.travel(START + timedelta(days=401), tick=False):
        record_token_event(99)  # unsealed: never pruned
        result = audit_prune()

    assert (result.deleted, result.anchor_position) == (3, 3)
    assert sorted(audit_events_sealed().values_list("position", flat=True)) == [4, 5]
    assert audit_unsealed_count() == 2
    pruned = AuditEvent.objects.get(event_type=EventType.AUDIT_PRUNED)
    assert pruned.details["deleted"] == 3
    assert pruned.details["up_to_position"] == 3
    checkpoint = AuditCheckpoint.objects.get(kind=CheckpointKind.PRUNE)
    assert (checkpoint.anchor_position, checkpoint.position) == (3, 5)


def test_verify_passes_after_prune_anchored_at_the_prune_checkpoint(db):
    _history(db)
    with time_machine.travel(START + timedelta(days=401), tick=False):
        audit_prune()
    audit_seal_pending()

    report = audit_chain_verify()

    assert report.ok, report.problem
    assert (report.anchor_position, report.checked, report.head_position) == (3, 3, 6)


def test_export_after_prune_verifies_offline(db, tmp_path):
    _history(db)
    with time_machine.travel(START + timedelta(days=401), tick=False):
        audit_prune()
    audit_seal_pending()
    out = tmp_path / "after.jsonl"

    audit_export(fmt="jsonl", filters=AuditFilters(), out_path=out, actor=Actor.cli("t"))

    manifest = json.loads(manifest_path_for(out).read_text())
    assert (manifest["anchor_position"], manifest["first_position"]) == (3, 4)
    assert chain.verify_export(out, manifest) == []


def test_nothing_to_prune_changes_nothing(db):
    _history(db)

    with time_machine.travel(START + timedelta(days=350), tick=False):
        result = audit_prune()

    assert (result.deleted, result.anchor_position) == (0, 0)
    assert AuditEvent.objects.count() == 5
    assert AuditCheckpoint.objects.count() == 0


def test_zero_retention_keeps_everything(db):
    _history(db)

    with time_machine.travel(START + timedelta(days=4000), tick=False):
        result = audit_prune(retention_days=0)

    assert result.deleted == 0
    assert AuditEvent.objects.count() == 5


def test_prune_everything_then_keep_sealing(db):
    _history(db)
    with time_machine.travel(START + timedelta(days=800), tick=False):
        call_command("audit_prune")
    audit_seal_pending()

    assert list(audit_events_sealed().values_list("position", flat=True)) == [6]
    assert audit_chain_verify().ok


@pytest.mark.postgres
def test_the_database_refuses_a_prune_inside_its_retention_floor(db):
    _history(db)
    with connection.cursor() as cursor:
        # As the migration role would, with db_roles --retention-floor-days.
        cursor.execute("UPDATE audit_retention_floor SET days = 100000")
    before = (AuditEvent.objects.count(), AuditCheckpoint.objects.count())

    with (
        time_machine.travel(START + timedelta(days=401), tick=False),
        pytest.raises(CommandError) as refused,
    ):
        call_command("audit_prune")

    assert str(refused.value) == (
        "audit prune refused: position 1 is within the 100000 day retention floor; "
        "nothing was deleted"
    )
    assert (AuditEvent.objects.count(), AuditCheckpoint.objects.count()) == before
