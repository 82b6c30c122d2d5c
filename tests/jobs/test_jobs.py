"""Periodic jobs: safe to run twice, recorded, overdue ones flagged; the purge's audit event;
the signing-key rotation schedule; repeated authentication failures told to the owner."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.db import OperationalError
from django.test import override_settings

from audit.models import AuditEvent
from jobs.models import JobRun
from jobs.selectors import job_status_list
from jobs.services import job_execute
from notifications.models import Notification
from notifications.services import notifications_dispatch
from tests.tokens.helpers import basic
from tokens.choices import KeyState
from tokens.models import IssuedToken, SigningKey
from tokens.services import signing_key_rotate_due
from tokens.tasks import issued_tokens_purge, signing_keys_advance

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_a_run_is_recorded_with_its_duration_and_outcome():
    with time_machine.travel(T0, tick=False):
        assert job_execute(name="tokens.tasks.issued_tokens_purge", call=lambda: 7) == 7
    run = JobRun.objects.get()
    assert (run.runs, run.failures, run.last_outcome, run.last_result) == (1, 0, "success", 7)
    assert (run.last_started_at, run.last_finished_at, run.last_duration_ms) == (T0, T0, 0)
    assert run.interval_seconds == 3600  # from the beat schedule
    assert run.lease_until is None


def test_a_failure_is_recorded_by_its_type_and_raised_again():
    def broken():
        raise OperationalError("connection to server at 10.0.0.1 failed: password=hunter2")

    with pytest.raises(OperationalError):
        job_execute(name="audit.prune", call=broken)
    run = JobRun.objects.get()
    assert (run.runs, run.failures, run.last_outcome, run.last_error) == (
        1,
        1,
        "failure",
        "OperationalError",
    )
    assert run.lease_until is None


def test_a_second_run_while_the_first_holds_the_lease_does_nothing():
    calls = []

    def outer():
        calls.append("outer")
        # Beat started twice by mistake: the second process's run meets the lease.
        assert job_execute(name="audit.prune", call=lambda: calls.append("inner")) is None
        return 1

    assert job_execute(name="audit.prune", call=outer) == 1
    assert calls == ["outer"]
    assert JobRun.objects.get().runs == 1


def test_a_lease_left_by_a_killed_run_lapses():
    with time_machine.travel(T0, tick=False):
        JobRun.objects.create(name="audit.prune", lease_until=T0 + timedelta(seconds=600))
        assert job_execute(name="audit.prune", call=lambda: 1) is None
    with time_machine.travel(T0 + timedelta(seconds=601), tick=False):
        assert job_execute(name="audit.prune", call=lambda: 1) == 1


def test_a_job_not_run_for_three_intervals_is_flagged():
    with time_machine.travel(T0, tick=False):
        job_execute(name="tokens.tasks.issued_tokens_purge", call=lambda: 0)
    with time_machine.travel(T0 + timedelta(hours=3), tick=False):
        status = {s.name: s for s in job_status_list()}
    assert status["tokens.tasks.issued_tokens_purge"].overdue is False
    with time_machine.travel(T0 + timedelta(hours=3, seconds=1), tick=False):
        status = {s.name: s for s in job_status_list()}
    assert status["tokens.tasks.issued_tokens_purge"].overdue is True
    # Every scheduled job is listed, also those that never ran.
    assert {"audit.seal_pending", "clients.secrets_expire", "notifications.dispatch"} <= set(status)
    assert status["audit.seal_pending"].runs == 0


def test_the_purge_writes_one_audit_event_per_run_with_its_count(
    client, signing_key, machine_factory
):
    registered = machine_factory()
    with time_machine.travel(T0, tick=False):
        for _ in range(3):
            response = client.post(
                "/oauth/token",
                data="grant_type=client_credentials",
                content_type="application/x-www-form-urlencoded",
                HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
            )
            assert response.status_code == 200, response.content
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        assert issued_tokens_purge() == 3
        assert issued_tokens_purge() == 0
    assert IssuedToken.objects.count() == 0
    events = AuditEvent.objects.filter(event_type="token.purged").order_by("id")
    assert [e.details["purged"] for e in events] == [3, 0]
    assert events[0].actor_display == "token purge"


@override_settings(KEY_ROTATION_INTERVAL=30 * 86400, KEY_PUBLISH_DELAY=3600)
def test_signing_keys_rotate_on_schedule(signing_key, cli_actor, settings):
    settings.NOTIFICATION_SECURITY_EMAIL = "security@example.test"
    SigningKey.objects.filter(pk=signing_key.pk).update(activated_at=T0)
    with time_machine.travel(T0 + timedelta(days=29), tick=False):
        signing_keys_advance()
        assert SigningKey.objects.count() == 1
    with time_machine.travel(T0 + timedelta(days=30), tick=False):
        signing_keys_advance()
        signing_keys_advance()  # twice: one pending key
    pending = SigningKey.objects.get(state=KeyState.PENDING)
    assert pending.activate_after == T0 + timedelta(days=30, hours=1)
    with time_machine.travel(T0 + timedelta(days=30, hours=1), tick=False):
        signing_keys_advance()
        notifications_dispatch()
    states = dict(SigningKey.objects.values_list("kid", "state"))
    assert states == {signing_key.kid: KeyState.RETIRING, pending.kid: KeyState.ACTIVE}
    with time_machine.travel(T0 + timedelta(days=30, hours=3), tick=False):
        signing_keys_advance()
    assert SigningKey.objects.get(pk=signing_key.pk).state == KeyState.RETIRED
    # Not again until the new key is itself 30 days old.
    with time_machine.travel(T0 + timedelta(days=59), tick=False):
        assert signing_key_rotate_due() is None
    rotated = Notification.objects.filter(kind="key.rotated").order_by("id")
    assert [n.dedup_key for n in rotated] == [
        f"key.activated:{signing_key.kid}",  # the first key, activated by the fixture
        f"key.activated:{pending.kid}",
    ]
    assert [m.to for m in mail.outbox] == [["security@example.test"]]
    assert JobRun.objects.get(name="tokens.tasks.signing_keys_advance").runs == 5


@override_settings(KEY_ROTATION_INTERVAL=0)
def test_key_rotation_interval_zero_rotates_only_by_hand(signing_key):
    SigningKey.objects.filter(pk=signing_key.pk).update(activated_at=T0)
    with time_machine.travel(T0 + timedelta(days=3000), tick=False):
        assert signing_key_rotate_due() is None
    assert SigningKey.objects.count() == 1


def test_repeated_authentication_failures_are_told_to_the_owner_once(
    client, signing_key, machine_factory
):
    registered = machine_factory()
    with time_machine.travel(T0, tick=False):
        for _ in range(6):
            client.post(
                "/oauth/token",
                data="grant_type=client_credentials",
                content_type="application/x-www-form-urlencoded",
                HTTP_AUTHORIZATION=basic(registered.client_id, "mip_cs_wrong"),
            )
    with time_machine.travel(T0 + timedelta(seconds=5), tick=False):
        for _ in range(3):
            client.post(
                "/oauth/token",
                data="grant_type=client_credentials",
                content_type="application/x-www-form-urlencoded",
                HTTP_AUTHORIZATION=basic(registered.client_id, "mip_cs_wrong"),
            )
        notifications_dispatch()
    (notification,) = Notification.objects.filter(kind="auth.failures")
    assert notification.subject_id == registered.client_id
    assert [m.subject for m in mail.outbox] == [
        "[Machine Identity Portal] Repeated authentication failures for orders-worker"
    ]
    assert mail.outbox[0].to == ["platform@example.test"]
    assert "mip_cs_wrong" not in mail.outbox[0].body
    assert "mip_cs_wrong" not in json.dumps(notification.payload)
