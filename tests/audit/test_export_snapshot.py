"""An export reads one snapshot: a prune during an export cannot break its signed file."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest
import time_machine
from django.db import connection

from audit import chain
from audit import services as audit_services
from audit.context import Actor
from audit.models import AuditEvent
from audit.selectors import AuditFilters
from audit.services import audit_export, audit_prune, audit_seal_pending, manifest_path_for
from tests.audit.conftest import record_token_event

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

OLD = datetime(2026, 1, 1, tzinfo=UTC)


def _old_trail(count: int) -> None:
    with time_machine.travel(OLD, tick=False):
        for n in range(count):
            record_token_event(n)
    audit_seal_pending()


def _prune_elsewhere() -> int:
    """A prune committed by another connection (the hourly task, say)."""
    result = {}

    def run():
        try:
            result["deleted"] = audit_prune(retention_days=60).deleted
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return result["deleted"]


def test_a_prune_during_an_export_leaves_a_file_that_verifies(monkeypatch, tmp_path):
    _old_trail(6)
    write = audit_services._write_jsonl
    pruned = []

    def write_then_prune_midway(handle, rows):
        def rows_with_a_prune():
            for number, row in enumerate(rows):
                if number == 1:
                    pruned.append(_prune_elsewhere())
                yield row

        return write(handle, rows_with_a_prune())

    monkeypatch.setattr(audit_services, "_write_jsonl", write_then_prune_midway)
    out = tmp_path / "during.jsonl"

    audit_export(
        fmt="jsonl", filters=AuditFilters(), out_path=out, actor=Actor.cli("t"), chunk_size=2
    )

    manifest = json.loads(manifest_path_for(out).read_text())
    assert pruned == [6]
    assert AuditEvent.objects.filter(event_type="token.issued").count() == 0
    assert (manifest["count"], manifest["first_position"], manifest["last_position"]) == (6, 1, 6)
    assert chain.verify_export(out, manifest) == []


def test_a_prune_between_checkpoint_and_snapshot_signs_a_new_checkpoint(monkeypatch, tmp_path):
    _old_trail(4)
    record_token_event(99)  # recent: stays
    audit_seal_pending()
    create = audit_services.audit_checkpoint_create
    calls = []

    def create_then_prune(**kwargs):
        checkpoint = create(**kwargs)
        calls.append(checkpoint.anchor_position)
        if len(calls) == 1:
            _prune_elsewhere()
        return checkpoint

    monkeypatch.setattr(audit_services, "audit_checkpoint_create", create_then_prune)
    out = tmp_path / "after.jsonl"

    audit_export(fmt="jsonl", filters=AuditFilters(), out_path=out, actor=Actor.cli("t"))

    manifest = json.loads(manifest_path_for(out).read_text())
    assert calls == [0, 4]
    assert (manifest["anchor_position"], manifest["first_position"]) == (4, 5)
    assert chain.verify_export(out, manifest) == []
