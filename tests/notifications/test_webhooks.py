"""Webhook endpoints and the outbox: signed deliveries to a loopback receiver, retries.

The receiver is a real HTTP server on a loopback port; the portal allows it
only with ``NOTIFICATION_WEBHOOK_ALLOW_PRIVATE`` (refused otherwise).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import transaction
from django.test import override_settings

from audit.context import Target
from audit.models import AuditEvent
from clients.lifecycle import secrets_expire
from clients.services import audience_create, machine_register
from notifications.crypto import webhook_secret_unwrap, webhook_signature_verify
from notifications.models import Delivery, DeliveryAttempt, Notification, WebhookEndpoint
from notifications.services import (
    notification_record,
    notifications_dispatch,
    webhook_endpoint_create,
    webhook_endpoint_secret_rotate,
    webhook_endpoint_test,
)
from notifications.transport import webhook_url_check

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
DAY = 86400
loopback = override_settings(NOTIFICATION_WEBHOOK_ALLOW_PRIVATE=True)


def _verify(received, secret: str) -> dict:
    header = received.headers["X-Portal-Signature"]
    assert webhook_signature_verify(secret=secret, header=header, body=received.body) is not None
    return json.loads(received.body)


@loopback
def test_an_owner_hears_the_warning_and_the_expiry_once_each_by_webhook_and_email(
    cli_actor, webhook_receiver
):
    with time_machine.travel(T0, tick=False):
        endpoint, secret = webhook_endpoint_create(
            actor=cli_actor, team="payments", url=webhook_receiver.url
        )
        webhook_endpoint_create(actor=cli_actor, team="other-team", url=webhook_receiver.url + "x")
        machine, _ = machine_register(
            actor=cli_actor,
            name="billing",
            owner_team="payments",
            owner_email="owner@example.test",
            max_secret_age=30 * DAY,
            audiences=[audience_create(actor=cli_actor, uri="https://api.example").uri],
        )
    for day in (10, 16, 20, 30, 31):
        with time_machine.travel(T0 + timedelta(days=day), tick=False):
            secrets_expire()
            notifications_dispatch()

    bodies = [_verify(r, secret) for r in webhook_receiver.received]
    assert [r.path for r in webhook_receiver.received] == ["/hooks/portal"] * 2
    assert [b["event"] for b in bodies] == ["secret.expiring", "secret.expired"]
    assert [r.headers["X-Portal-Event"] for r in webhook_receiver.received] == [
        "secret.expiring",
        "secret.expired",
    ]
    assert bodies[1]["subject"] == {
        "kind": "machine",
        "id": machine.client_id,
        "display": "billing",
    }
    assert bodies[1]["team"] == "payments"
    assert bodies[1]["client_id"] == machine.client_id
    assert len(mail.outbox) == 2
    attempts = DeliveryAttempt.objects.filter(delivery__endpoint=endpoint)
    assert sorted((a.status_code, a.succeeded) for a in attempts) == [(204, True), (204, True)]


@loopback
def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(cli_actor, webhook_receiver):
    webhook_receiver.answers = [500, 503]
    with time_machine.travel(T0, tick=False):
        _endpoint, secret = webhook_endpoint_create(
            actor=cli_actor, team="payments", url=webhook_receiver.url
        )
        with transaction.atomic():
            notification_record(
                kind="machine.stale",
                dedup_key="k1",
                subject=Target(kind="machine", id="c1", display="m1"),
                team="payments",
                payload={},
            )
        assert notifications_dispatch().as_dict() == {"delivered": 0, "retried": 1, "failed": 0}
        # Not due again yet: nothing is sent.
        assert notifications_dispatch().as_dict() == {"delivered": 0, "retried": 0, "failed": 0}
    delivery = Delivery.objects.get()
    assert delivery.next_attempt_at == T0 + timedelta(seconds=30)
    with time_machine.travel(T0 + timedelta(seconds=30), tick=False):
        assert notifications_dispatch().as_dict() == {"delivered": 0, "retried": 1, "failed": 0}
    delivery.refresh_from_db()
    assert delivery.next_attempt_at == T0 + timedelta(seconds=30 + 60)
    with time_machine.travel(T0 + timedelta(seconds=90), tick=False):
        assert notifications_dispatch().as_dict() == {"delivered": 1, "retried": 0, "failed": 0}

    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 3, 204)
    statuses = list(
        delivery.attempts_made.order_by("attempted_at").values_list("status_code", "error")
    )
    assert statuses == [(500, "HTTP 500"), (503, "HTTP 503"), (204, "")]
    # The same body each time (same id), each signed afresh.
    bodies = [_verify(r, secret) for r in webhook_receiver.received]
    assert len({json.dumps(b, sort_keys=True) for b in bodies}) == 1
    assert bodies[0]["id"] == str(delivery.pk)


@loopback
@override_settings(NOTIFICATION_RETRY_FOR=3600, NOTIFICATION_RETRY_MAX=600)
def test_a_delivery_is_given_up_after_the_retry_period(cli_actor, webhook_receiver):
    webhook_receiver.default = 500
    with time_machine.travel(T0, tick=False):
        webhook_endpoint_create(actor=cli_actor, team="payments", url=webhook_receiver.url)
        with transaction.atomic():
            notification_record(
                kind="machine.stale",
                dedup_key="k1",
                subject=Target(kind="machine", id="c1", display="m1"),
                team="payments",
                payload={},
            )
    minute = 0
    while Delivery.objects.get().state == "pending" and minute < 200:
        with time_machine.travel(T0 + timedelta(minutes=minute), tick=False):
            notifications_dispatch()
        minute += 1
    delivery = Delivery.objects.get()
    assert delivery.state == "failed"
    # Tried at minutes 0, 1, 2, 4, 8, 16, 26, 36, 46, 56 (30 s doubling to the 600 s cap,
    # the dispatcher running each minute); the next would fall after the hour.
    assert delivery.attempts == 10
    attempted = sorted(a.attempted_at for a in delivery.attempts_made.all())
    assert [int((t - T0).total_seconds() // 60) for t in attempted] == [
        0,
        1,
        2,
        4,
        8,
        16,
        26,
        36,
        46,
        56,
    ]
    assert webhook_receiver.received[-1].headers["X-Portal-Event"] == "machine.stale"
    assert len(webhook_receiver.received) == 10


@loopback
def test_the_test_button_sends_to_that_endpoint_only(
    cli_actor, webhook_receiver, django_capture_on_commit_callbacks
):
    endpoint, secret = webhook_endpoint_create(
        actor=cli_actor, team="payments", url=webhook_receiver.url
    )
    webhook_endpoint_create(actor=cli_actor, team="payments", url=webhook_receiver.url + "2")
    with django_capture_on_commit_callbacks(execute=True):
        webhook_endpoint_test(actor=cli_actor, endpoint=endpoint)
    # The kick after commit ran the dispatcher (eagerly here, on a worker in production).
    (received,) = webhook_receiver.received
    assert _verify(received, secret)["event"] == "test"
    assert Delivery.objects.get().state == "delivered"


@loopback
def test_a_rotated_endpoint_secret_signs_from_then_on(cli_actor, webhook_receiver):
    endpoint, old = webhook_endpoint_create(
        actor=cli_actor, team="payments", url=webhook_receiver.url
    )
    endpoint, new = webhook_endpoint_secret_rotate(actor=cli_actor, endpoint=endpoint)
    webhook_endpoint_test(actor=cli_actor, endpoint=endpoint)
    notifications_dispatch()
    (received,) = webhook_receiver.received
    header = received.headers["X-Portal-Signature"]
    assert webhook_signature_verify(secret=new, header=header, body=received.body)
    assert webhook_signature_verify(secret=old, header=header, body=received.body) is None
    events = AuditEvent.objects.filter(event_type__startswith="webhook.").order_by("id")
    assert [e.event_type for e in events] == ["webhook.created", "webhook.secret_rotated"]
    assert all(
        old not in json.dumps(e.details) and new not in json.dumps(e.details) for e in events
    )


def test_the_endpoint_secret_is_stored_encrypted_and_bound_to_its_endpoint(cli_actor):
    first, raw = webhook_endpoint_create(
        actor=cli_actor, team="payments", url="https://hooks.example.com/a"
    )
    second, _ = webhook_endpoint_create(
        actor=cli_actor, team="payments", url="https://hooks.example.com/b"
    )
    stored = bytes(WebhookEndpoint.objects.get(pk=first.pk).secret_wrapped)
    assert raw.encode() not in stored
    assert webhook_secret_unwrap(stored, kek_id=first.kek_id, uid=str(first.uid)) == raw
    from notifications.crypto import SecretNotAuthentic

    # Moved to another endpoint (one UPDATE by someone holding the database): useless.
    with pytest.raises(SecretNotAuthentic):
        webhook_secret_unwrap(stored, kek_id=first.kek_id, uid=str(second.uid))


@loopback
def test_a_delivery_row_written_into_the_database_is_never_sent(cli_actor, webhook_receiver):
    _endpoint, _ = webhook_endpoint_create(
        actor=cli_actor, team="payments", url=webhook_receiver.url
    )
    with transaction.atomic():
        notification_record(
            kind="machine.stale",
            dedup_key="k1",
            subject=Target(kind="machine", id="c1", display="m1"),
            team="payments",
            payload={"note": "genuine"},
        )
    # Someone holding the database rewrites what the portal would sign and send.
    Notification.objects.update(payload={"event": "secret.expired", "note": "forged"})
    assert notifications_dispatch().as_dict() == {"delivered": 0, "retried": 0, "failed": 1}
    assert webhook_receiver.received == []
    assert Delivery.objects.get().last_error == "row not authentic"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://localhost/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ],
)
def test_private_and_loopback_targets_are_refused(cli_actor, url):
    with pytest.raises(ValidationError) as caught:
        webhook_endpoint_create(actor=cli_actor, team="payments", url=url)
    assert caught.value.message_dict == {"url": ["Private and loopback targets are refused."]}
    assert WebhookEndpoint.objects.count() == 0
    assert not AuditEvent.objects.filter(event_type="webhook.created").exists()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://hooks.example.com/x",
        "https://user:pw@hooks.example.com/x",
        "https://hooks.example.com:99999/x",
        "https://hooks.example.com/\x00",
        "https://" + "a" * 2000 + ".com/",
        "javascript:alert(1)",
    ],
)
def test_malformed_urls_are_refused(cli_actor, url):
    with pytest.raises(ValidationError):
        webhook_url_check(url)
    with pytest.raises(ValidationError):
        webhook_endpoint_create(actor=cli_actor, team="payments", url=url)
    assert WebhookEndpoint.objects.count() == 0


def test_a_name_resolving_to_a_private_address_is_refused_at_send_time(cli_actor, monkeypatch):
    endpoint, _ = webhook_endpoint_create(
        actor=cli_actor, team="payments", url="https://hooks.example.com/x"
    )
    import socket

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [(2, 1, 6, "", ("10.1.2.3", 443))])
    webhook_endpoint_test(actor=cli_actor, endpoint=endpoint)
    assert notifications_dispatch().as_dict() == {"delivered": 0, "retried": 1, "failed": 0}
    assert Delivery.objects.get().last_error == "refused: a private or loopback address"
