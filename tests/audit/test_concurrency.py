"""Many writers and several sealers at once on PostgreSQL: no fork, no lost event."""

from __future__ import annotations

import threading

import pytest
from django.db import close_old_connections, connection, transaction

from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from audit.services import audit_checkpoint_create, audit_seal_pending
from tests.audit.conftest import record_token_event

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WRITERS = 6
EVENTS_PER_WRITER = 40


def _in_own_connection(work):
    def run():
        try:
            work()
        finally:
            connection.close()

    return run


def test_concurrent_writers_and_sealers_build_one_chain():
    start = threading.Barrier(WRITERS + 2)
    writers_done = threading.Event()
    errors: list[BaseException] = []

    def writer(index: int):
        start.wait()
        try:
            for n in range(EVENTS_PER_WRITER):
                with transaction.atomic():
                    record_token_event(n, machine=f"w{index}")
        except BaseException as exc:  # noqa: BLE001  (reported by the main thread)
            errors.append(exc)

    def sealer():
        start.wait()
        try:
            while not writers_done.is_set():
                audit_seal_pending(batch_size=7)
                audit_checkpoint_create()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [
        threading.Thread(target=_in_own_connection(lambda i=i: writer(i))) for i in range(WRITERS)
    ]
    sealers = [threading.Thread(target=_in_own_connection(sealer)) for _ in range(2)]
    for thread in threads + sealers:
        thread.start()
    for thread in threads:
        thread.join()
    writers_done.set()
    for thread in sealers:
        thread.join()
    close_old_connections()
    audit_seal_pending()

    assert errors == []
    total = WRITERS * EVENTS_PER_WRITER
    positions = list(AuditEvent.objects.order_by("position").values_list("position", flat=True))
    assert positions == list(range(1, total + 1))
    report = audit_chain_verify()
    assert report.ok, report.problem
    assert report.checked == total


def test_an_event_committing_late_is_sealed_in_a_later_batch():
    inserted = threading.Event()
    release = threading.Event()

    def slow_writer():
        with transaction.atomic():
            record_token_event(1, machine="slow")
            inserted.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=_in_own_connection(slow_writer))
    thread.start()
    inserted.wait(timeout=30)
    record_token_event(2, machine="fast")

    assert audit_seal_pending() == 1  # the slow one is not committed yet
    release.set()
    thread.join()
    assert audit_seal_pending() == 1

    sealed = dict(AuditEvent.objects.values_list("actor_id", "position"))
    assert sealed == {"fast": 1, "slow": 2}
    assert AuditEvent.objects.get(actor_id="slow").pk < AuditEvent.objects.get(actor_id="fast").pk
    assert audit_chain_verify().ok
