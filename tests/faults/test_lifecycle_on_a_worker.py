"""Issue 12 on real parts: a Celery worker with beat against PostgreSQL and Redis.

The worker cannot share the test's moved clock, so the days a job waits for
are set in the rows instead (a secret created 20 and 31 days ago, a machine
idle for 40, a key activated 31 days ago, tokens that expired an hour ago);
beat runs every job each second (``*_INTERVAL=1``) and the test watches each
one do its work, then sees that more runs do it no second time.

Notifications go to a webhook receiver on a loopback port (allowed with
``NOTIFICATION_WEBHOOK_ALLOW_PRIVATE``) and, by email, to Django's console
backend, which writes them into the worker's log.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from audit.selectors import audit_unsealed_count
from clients.models import ClientSecret, Machine
from jobs.models import JobRun
from notifications.crypto import webhook_signature_verify
from notifications.services import webhook_endpoint_create
from tests.faults.conftest import (
    TokenLoad,
    WorkerWithBeat,
    assert_every_token_audited_once,
    portal_env,
)
from tests.fixtures.celery_worker import wait_for
from tests.identity_portal.test_web_server import _running_server
from tokens.choices import KeyState
from tokens.models import IssuedToken, SigningKey

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DAY = timedelta(days=1)
FAST = {
    "LIFECYCLE_CHECK_INTERVAL": "1",
    "NOTIFICATION_DISPATCH_INTERVAL": "1",
    "TOKEN_PURGE_INTERVAL": "1",
    "KEY_SCHEDULE_INTERVAL": "1",
    "AUDIT_SEAL_INTERVAL": "1",
    "JWKS_MAX_AGE": "1",
    "KEY_PUBLISH_DELAY": "2",
    "NOTIFICATION_WEBHOOK_ALLOW_PRIVATE": "true",
    "NOTIFICATION_RETRY_BASE": "1",
    "NOTIFICATION_SECURITY_EMAIL": "security@example.test",
}


def _events(receiver, secret: str) -> Counter:
    kinds = Counter()
    for received in list(receiver.received):
        header = received.headers["X-Portal-Signature"]
        assert webhook_signature_verify(secret=secret, header=header, body=received.body)
        kinds[json.loads(received.body)["event"]] += 1
    return kinds


def _job_runs(name: str) -> int:
    run = JobRun.objects.filter(name=name).first()
    return run.runs if run else 0


def test_each_job_does_its_work_once_on_a_real_worker_with_beat(
    signing_key, machine_factory, throwaway_redis, webhook_receiver, tmp_path, cli_actor
):
    now = timezone.now()
    endpoint, secret = webhook_endpoint_create(
        actor=cli_actor, team="platform", url="https://hooks.example.com/placeholder"
    )
    # Loopback is refused by default; the row is pointed at the receiver as a test may.
    type(endpoint).objects.filter(pk=endpoint.pk).update(url=webhook_receiver.url)

    warned = machine_factory(name="nearing-expiry")
    expired = machine_factory(name="expired")
    stale = machine_factory(name="stale")
    Machine.objects.filter(pk__in=[warned.machine.pk, expired.machine.pk]).update(
        max_secret_age=30 * 86400
    )
    ClientSecret.objects.filter(machine=warned.machine).update(created_at=now - 20 * DAY)
    ClientSecret.objects.filter(machine=expired.machine).update(created_at=now - 31 * DAY)
    Machine.objects.filter(pk=stale.machine.pk).update(
        created=now - 40 * DAY, stale_action="disable"
    )
    Machine.objects.exclude(pk=stale.machine.pk).update(last_used_at=now)
    SigningKey.objects.filter(pk=signing_key.pk).update(activated_at=now - 31 * DAY)
    for _ in range(3):
        IssuedToken.objects.create(
            jti=secrets.token_hex(16),
            checksum=secrets.token_hex(32),
            machine=warned.machine,
            audience="https://orders.example.test",
            issued_at=now - 2 * DAY,
            expires_at=now - DAY,
            signing_key=signing_key,
        )

    cache, broker = throwaway_redis("cache"), throwaway_redis("broker")
    env = portal_env(cache=cache.url(), broker=broker.url(), **FAST)
    (tmp_path / "worker").mkdir()
    worker = WorkerWithBeat(tmp_path / "worker", env)
    worker.start()
    try:
        expected = {"secret.expiring": 1, "secret.expired": 1, "machine.stale": 1, "key.rotated": 1}
        wait_for(lambda: _events(webhook_receiver, secret) == expected, timeout=90, interval=0.2)
        wait_for(
            lambda: (
                SigningKey.objects.filter(state=KeyState.ACTIVE).exclude(pk=signing_key.pk).exists()
            ),
            timeout=60,
        )
        wait_for(lambda: AuditEvent.objects.filter(event_type="token.purged").exists(), timeout=60)
        # Several more runs of every job: nothing is done, sent or written twice.
        marks = {
            name: _job_runs(name) for name in ("clients.secrets_expire", "clients.machines_stale")
        }
        wait_for(
            lambda: all(_job_runs(name) >= mark + 3 for name, mark in marks.items()), timeout=60
        )
        wait_for(lambda: audit_unsealed_count() == 0, timeout=60)
    finally:
        worker.stop()

    assert _events(webhook_receiver, secret) == expected
    warned_row = ClientSecret.objects.get(machine=warned.machine)
    expired_row = ClientSecret.objects.get(machine=expired.machine)
    assert warned_row.warned_at is not None and warned_row.expired_at is None
    assert expired_row.expired_at is not None
    assert Machine.objects.get(pk=stale.machine.pk).enabled is False
    counts = Counter(
        AuditEvent.objects.filter(
            event_type__in=[
                "secret.expiring",
                "secret.expired",
                "machine.stale",
                "machine.disabled",
            ]
        ).values_list("event_type", flat=True)
    )
    assert counts == {
        "secret.expiring": 1,
        "secret.expired": 1,
        "machine.stale": 1,
        "machine.disabled": 1,
    }
    assert SigningKey.objects.get(pk=signing_key.pk).state == KeyState.RETIRING
    assert IssuedToken.objects.count() == 0
    purges = AuditEvent.objects.filter(event_type="token.purged").order_by("id")
    assert purges[0].details["purged"] == 3
    assert all(event.details["purged"] == 0 for event in purges[1:])
    # Email through Django's console backend: in the worker's log, each once.
    log = worker.log().replace("\n ", " ")  # headers longer than a line are folded
    assert (
        log.count(
            "Subject: [Machine Identity Portal] A client secret of nearing-expiry expires soon"
        )
        == 1
    )
    assert (
        log.count("Subject: [Machine Identity Portal] A client secret of expired has expired") == 1
    )
    assert log.count("Subject: [Machine Identity Portal] Machine stale has not been used") == 1
    assert log.count("Subject: [Machine Identity Portal] A new token signing key is active") == 1
    for name in (
        "clients.secrets_expire",
        "clients.machines_stale",
        "notifications.dispatch",
        "tokens.tasks.issued_tokens_purge",
        "tokens.tasks.signing_keys_advance",
        "audit.seal_pending",
    ):
        run = JobRun.objects.get(name=name)
        assert (run.last_outcome, run.failures) == ("success", 0), name
        assert run.interval_seconds == 1, name


def test_the_broker_away_delays_notifications_and_sealing_and_never_the_tokens(
    signing_key, machine_factory, throwaway_redis, webhook_receiver, tmp_path, cli_actor
):
    endpoint, secret = webhook_endpoint_create(
        actor=cli_actor, team="platform", url="https://hooks.example.com/placeholder"
    )
    type(endpoint).objects.filter(pk=endpoint.pk).update(url=webhook_receiver.url)
    loaded = [machine_factory(name=f"loaded-{n}") for n in range(2)]
    target = machine_factory(name="guessed-at")
    wrong = type(target)(machine=target.machine, client_id=target.client_id, secret="mip_cs_wrong")

    cache, broker = throwaway_redis("cache"), throwaway_redis("broker")
    env = portal_env(cache=cache.url(), broker=broker.url(), **FAST)
    (tmp_path / "worker").mkdir()
    worker = WorkerWithBeat(tmp_path / "worker", env)
    worker.start()
    try:
        with _running_server(tmp_path, **env) as port, TokenLoad(port, loaded, pause=0.02) as load:
            load.run_phase("before", answers=30)
            wait_for(lambda: audit_unsealed_count() < len(load.answers), timeout=30)

            broker.kill()
            load.run_phase("down", answers=60)
            # While the broker is away, someone keeps guessing a machine's secret: the
            # denials are audited and the owner's notification goes into the outbox.
            with TokenLoad(port, [wrong], threads=1) as guesses:
                guesses.run_phase("down", answers=8)
            unsealed_while_away = audit_unsealed_count()
            received_while_away = len(webhook_receiver.received)

            broker.restart()
            load.run_phase("after", answers=30)
        wait_for(
            lambda: _events(webhook_receiver, secret) == {"auth.failures": 1},
            timeout=60,
            interval=0.2,
        )
        wait_for(lambda: audit_unsealed_count() == 0, timeout=60, interval=0.2)
    finally:
        worker.stop()

    answers = load.answers
    assert {a.status for a in answers} == {200}
    assert len(load.in_phase("down")) >= 60
    assert_every_token_audited_once(answers)
    assert {a.status for a in guesses.answers} <= {401, 429}
    assert unsealed_while_away > 0
    assert received_while_away == 0
    denied = AuditEvent.objects.filter(event_type="token.denied", target_id=target.client_id)
    assert denied.count() == sum(1 for a in guesses.answers if a.status == 401)
    assert "Connection to broker lost" in worker.log()
