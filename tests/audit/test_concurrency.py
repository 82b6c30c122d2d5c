"""Many writers and several sealers at once on PostgreSQL: no fork, no lost event."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import close_old_connections, connection, transaction

from audit import services as audit_services
from audit.models import AuditEvent, AuditSeal
from audit.selectors import audit_chain_verify, audit_events_sealed
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
    positions = list(AuditSeal.objects.values_list("position", flat=True))
    assert positions == list(range(1, total + 1))
    assert list(AuditSeal.objects.values_list("event_id", flat=True)) == list(
        AuditEvent.objects.order_by("id").values_list("id", flat=True)
    )
    report = audit_chain_verify()
    assert report.ok, report.problem
    assert report.checked == total


def _slow_writer():
    """A writer whose transaction stays open, holding a lower event id, until released."""
    inserted = threading.Event()
    release = threading.Event()

    def write():
        with transaction.atomic():
            record_token_event(1, machine="slow")
            inserted.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=_in_own_connection(write))
    thread.start()
    inserted.wait(timeout=30)
    return thread, release


def test_an_event_committed_after_a_higher_id_is_never_skipped(monkeypatch):
    monkeypatch.setattr(audit_services, "SEAL_WAIT_SECONDS", 0.0)
    thread, release = _slow_writer()
    record_token_event(2, machine="fast")

    # The fast event must not be sealed ahead of the open lower id: nothing is.
    assert audit_seal_pending() == 0
    assert AuditSeal.objects.count() == 0
    release.set()
    thread.join()
    assert audit_seal_pending() == 2

    sealed = dict(audit_events_sealed().values_list("actor_id", "position"))
    assert sealed == {"slow": 1, "fast": 2}
    assert AuditEvent.objects.get(actor_id="slow").pk < AuditEvent.objects.get(actor_id="fast").pk
    assert audit_chain_verify().ok


def test_the_sealer_waits_for_an_open_transaction_then_seals_in_id_order(monkeypatch):
    thread, release = _slow_writer()
    record_token_event(2, machine="fast")
    real_sleep = time.sleep

    def sleep(seconds):
        # The sealer is waiting on the open writer: let it commit.
        release.set()
        thread.join()
        real_sleep(0)

    monkeypatch.setattr(audit_services.time, "sleep", sleep)

    assert audit_seal_pending() == 2

    assert release.is_set()
    sealed = dict(audit_events_sealed().values_list("actor_id", "position"))
    assert sealed == {"slow": 1, "fast": 2}


def test_event_ids_are_drawn_after_the_transaction_has_its_xid():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_default FROM information_schema.columns "
            "WHERE table_name = 'audit_auditevent' AND column_name = 'id'"
        )
        [default] = cursor.fetchone()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id_if_assigned()")
        assert cursor.fetchone() == (None,)
        # The column's default, evaluated alone: it gives the transaction its xid.
        cursor.execute(f"SELECT {default}")
        cursor.execute("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")
        assert cursor.fetchone() == (True,)
    assert default.split() == [
        "CASE",
        "WHEN",
        "(pg_current_xact_id()",
        "IS",
        "NOT",
        "NULL)",
        "THEN",
        "nextval('audit_auditevent_id_seq'::regclass)",
        "ELSE",
        "NULL::bigint",
        "END",
    ]
