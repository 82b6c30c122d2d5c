"""The figures /metrics reads from the database at scrape time, and the record of job runs."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import OperationalError
from django.test import override_settings

from audit.choices import EventType
from audit.context import Actor
from audit.models import AuditCheckpoint
from audit.services import audit_checkpoint_create, audit_record, audit_seal_pending
from audit.tasks import audit_checkpoint_task, audit_seal_pending_task
from clients.models import ClientSecret, Machine
from clients.services import secret_rotate
from identity_portal import metrics as metrics_view
from jobs.choices import JobOutcome
from jobs.models import JobRun
from tests.identity_portal.test_metrics import COUNTED_FAMILIES, counted, scrape, value
from tokens.keyring import keyring_reset
from tokens.models import SigningKey

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_secrets_figures():
    metrics_view.secrets_memo.clear()
    yield
    metrics_view.secrets_memo.clear()


def _events(n: int) -> None:
    for index in range(n):
        audit_record(
            event_type=EventType.SCOPE_CREATED,
            actor=Actor.cli("test"),
            details={"n": index},
        )


# --- The audit trail ------------------------------------------------------------------


def test_the_backlog_and_its_oldest_event_then_nothing_once_sealed(client):
    audit_seal_pending()
    with time_machine.travel(T0, tick=False):
        _events(5)
    with time_machine.travel(T0 + timedelta(seconds=42), tick=False):
        waiting = scrape(client)
        sealed = audit_seal_pending()
        caught_up = scrape(client)

    assert sealed == 5
    assert value(waiting, "portal_audit_unsealed_events") == 5
    assert value(waiting, "portal_audit_oldest_unsealed_event_age_seconds") == 42
    assert value(caught_up, "portal_audit_unsealed_events") == 0
    assert value(caught_up, "portal_audit_oldest_unsealed_event_age_seconds") == 0
    assert (
        value(caught_up, "portal_audit_chain_head_position")
        == value(waiting, "portal_audit_chain_head_position") + 5
    )


def test_checkpoint_age_counts_only_signed_checkpoints(client):
    nothing_signed = scrape(client)
    with time_machine.travel(T0, tick=False):
        signed = audit_checkpoint_create()
    with time_machine.travel(T0 + timedelta(seconds=100), tick=False):
        # Someone with INSERT adds a fresh checkpoint row they cannot sign.
        AuditCheckpoint.objects.create(
            created_at=T0 + timedelta(seconds=100),
            kind=signed.kind,
            position=signed.position,
            head_hash=signed.head_hash,
            anchor_position=signed.anchor_position,
            anchor_hash=signed.anchor_hash,
            key_id=signed.key_id,
            signature="A" * 86,
        )
        after = scrape(client)

    assert value(nothing_signed, "portal_audit_checkpoint_age_seconds") == math.inf
    assert value(after, "portal_audit_checkpoint_age_seconds") == 100


# --- Signing keys ---------------------------------------------------------------------


def test_keys_by_state_the_active_keys_age_and_a_planted_row(client, signing_key):
    signing_key.refresh_from_db()
    SigningKey.objects.create(
        kid="planted-by-someone-with-the-database",
        algorithm="ES256",
        state="pending",
        public_jwk={},
        private_key_wrapped=bytes(signing_key.private_key_wrapped),
        kek_id=signing_key.kek_id,
        created_at=signing_key.created_at,
    )
    keyring_reset()
    active_since = signing_key.activated_at or signing_key.created_at

    with time_machine.travel(active_since + timedelta(days=3), tick=False):
        families = scrape(client)

    assert {s.labels["state"]: s.value for s in families["portal_signing_keys"].samples} == {
        "pending": 1,
        "active": 1,
        "retiring": 0,
        "retired": 0,
        "revoked": 0,
    }
    assert value(families, "portal_signing_key_active_age_seconds", algorithm="ES256") == 3 * 86400
    assert value(families, "portal_signing_keys_signing") == 1
    assert value(families, "portal_signing_keys_distrusted") == 1


def test_no_key_that_signs_reads_zero(client, signing_key):
    SigningKey.objects.filter(pk=signing_key.pk).update(state="retiring")
    keyring_reset()

    families = scrape(client)

    assert value(families, "portal_signing_keys_signing") == 0
    assert families["portal_signing_key_active_age_seconds"].samples == []


# --- Client secrets -------------------------------------------------------------------


@override_settings(SECRET_WARNING_DAYS=14)
def test_secrets_near_expiry_and_the_machines_that_need_a_rotation(
    client, signing_key, machine_factory, cli_actor
):
    with time_machine.travel(T0, tick=False):
        machine_factory(name="forever")
        aging = machine_factory(name="aging")
        Machine.objects.filter(pk=aging.machine.pk).update(max_secret_age=20 * 86400)
        rotated = machine_factory(name="rotated")
        deleted = machine_factory(name="deleted")
        Machine.objects.filter(pk=deleted.machine.pk).update(deleted_at=T0)
        revoked = machine_factory(name="revoked")
        ClientSecret.objects.filter(machine=revoked.machine).update(revoked_at=T0)
    with time_machine.travel(T0 + timedelta(days=7), tick=False):
        secret_rotate(actor=cli_actor, machine=rotated.machine, grace=86400)
        families = scrape(client)
    with time_machine.travel(T0 + timedelta(days=21), tick=False):
        metrics_view.secrets_memo.clear()
        later = scrape(client)

    # Day 7: "aging" expires on day 20 (within 14 days); "rotated" has an old secret
    # in its day of grace and a new one without expiry; deleted and revoked count nothing.
    assert value(families, "portal_client_secrets", state="active") == 2
    assert value(families, "portal_client_secrets", state="expiring") == 2
    assert value(families, "portal_machines_secrets_expiring") == 1
    # Day 21: aging's secret and rotated's old one have expired.
    assert value(later, "portal_client_secrets", state="active") == 2
    assert value(later, "portal_client_secrets", state="expiring") == 0
    assert value(later, "portal_machines_secrets_expiring") == 0


# --- Periodic jobs --------------------------------------------------------------------


def test_a_scheduled_tasks_runs_are_read_from_jobrun_with_their_outcome(client, monkeypatch):
    with time_machine.travel(T0, tick=False) as traveller:
        audit_seal_pending_task.apply()

        def broken(**kwargs):
            traveller.shift(timedelta(milliseconds=1500))
            # Not a transient error (those the task retries): the run fails for good.
            raise RuntimeError("a bug in the sealer")

        monkeypatch.setattr("audit.tasks.audit_seal_pending", broken)
        traveller.move_to(T0 + timedelta(seconds=10))
        with pytest.raises(RuntimeError):  # raised again by job_execute, not retried
            audit_seal_pending_task.apply()
        audit_checkpoint_task.apply()
        families = scrape(client)

    runs = {
        run.name: (run.last_outcome, run.last_finished_at, run.last_duration_ms, run.last_error)
        for run in JobRun.objects.all()
    }
    ten = T0 + timedelta(seconds=10)
    assert runs == {
        "audit.seal_pending": (
            JobOutcome.FAILURE,
            ten + timedelta(milliseconds=1500),
            1500,
            "RuntimeError",
        ),
        "audit.checkpoint": (JobOutcome.SUCCESS, ten + timedelta(milliseconds=1500), 0, ""),
    }
    # Labelled by the schedule entry's name, as the alerts and the dashboard expect.
    assert (
        value(families, "portal_job_last_run_timestamp_seconds", periodic_job="audit-seal")
        == (ten + timedelta(milliseconds=1500)).timestamp()
    )
    assert value(families, "portal_job_last_run_success", periodic_job="audit-seal") == 0
    assert value(families, "portal_job_last_run_duration_seconds", periodic_job="audit-seal") == 1.5
    assert value(families, "portal_job_last_run_success", periodic_job="audit-checkpoint") == 1
    assert (
        value(families, "portal_job_last_run_duration_seconds", periodic_job="audit-checkpoint")
        == 0
    )
    assert (
        value(families, "portal_job_last_run_timestamp_seconds", periodic_job="audit-prune") is None
    )
    assert value(families, "portal_job_interval_seconds", periodic_job="audit-prune") == 3600
    assert value(families, "portal_job_interval_seconds", periodic_job="worker-heartbeat") == 30


def test_a_recorded_job_no_longer_scheduled_is_not_exported(client):
    JobRun.objects.create(
        name="gone.task",
        interval_seconds=60,
        last_started_at=T0,
        last_finished_at=T0,
        last_duration_ms=5,
        last_outcome=JobOutcome.FAILURE,
    )

    families = scrape(client)

    for family in (
        "portal_job_interval_seconds",
        "portal_job_last_run_timestamp_seconds",
        "portal_job_last_run_success",
    ):
        assert all(
            sample.labels["periodic_job"] != "gone.task" for sample in families[family].samples
        )


# --- The database away ----------------------------------------------------------------


def test_without_the_database_the_counts_are_still_served(client, monkeypatch):
    before = scrape(client)

    def away():
        raise OperationalError("connection refused")

    monkeypatch.setattr("identity_portal.metrics.audit_backlog", away)
    during = scrape(client)

    assert value(during, "portal_metrics_database_up") == 0
    assert set(during) == {*COUNTED_FAMILIES, "portal_metrics_database_up"}
    assert (
        counted(during, "portal_database_errors_total", where="metrics")
        - counted(before, "portal_database_errors_total", where="metrics")
        == 1
    )


def test_every_job_of_the_schedule_records_its_runs(settings):
    # A scheduled task that does not go through job_execute would never have a last
    # run in /metrics, and the "never ran" alert would fire for it forever.
    import importlib

    from celery import current_app

    for app in ("audit", "clients", "identity_portal", "notifications", "tokens"):
        importlib.import_module(f"{app}.tasks")  # what the worker's autodiscovery loads
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    with time_machine.travel(T0, tick=False):
        for task in sorted(tasks):
            current_app.tasks[task].apply()

    assert set(JobRun.objects.values_list("name", flat=True)) == tasks
    assert set(JobRun.objects.values_list("last_outcome", flat=True)) == {JobOutcome.SUCCESS}
