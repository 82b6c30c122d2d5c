"""Writes of notifications: the outbox, webhook endpoints, and the dispatcher.

``notification_record`` is called by other apps' services inside the
transaction of the change that causes the notification (the outbox); the
dispatcher (a periodic task, and a kick after commit where a worker records
one) sends what is due. A delivery that fails is tried again with
exponential backoff until ``NOTIFICATION_RETRY_FOR`` after it was recorded.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.choices import EventType
from audit.context import Actor, RequestContext, Target
from audit.services import audit_record
from notifications.choices import Channel, DeliveryState, NotificationKind
from notifications.constants import DELIVERY_LEASE_SECONDS, SIGNATURE_HEADER
from notifications.crypto import (
    SecretNotAuthentic,
    delivery_mac,
    webhook_secret_generate,
    webhook_secret_unwrap,
    webhook_secret_wrap,
    webhook_signature,
)
from notifications.messages import email_text
from notifications.models import Delivery, DeliveryAttempt, Notification, WebhookEndpoint
from notifications.transport import SendResult, email_send, webhook_post, webhook_url_check

logger = logging.getLogger(__name__)

# Kinds about the whole portal rather than one team's machine: every endpoint hears them.
GLOBAL_KINDS = frozenset({NotificationKind.KEY_ROTATED})


def _endpoint_target(endpoint: WebhookEndpoint) -> Target:
    return Target(kind="webhook", id=str(endpoint.uid), display=f"{endpoint.team}: {endpoint.url}")


# --- the outbox -------------------------------------------------------------------


def _recipients(
    *, kind: str, team: str, email: str
) -> list[tuple[str, WebhookEndpoint | None, str]]:
    recipients: list[tuple[str, WebhookEndpoint | None, str]] = []
    if email:
        recipients.append((Channel.EMAIL, None, email))
    if kind in GLOBAL_KINDS and settings.NOTIFICATION_SECURITY_EMAIL:
        recipients.append((Channel.EMAIL, None, settings.NOTIFICATION_SECURITY_EMAIL))
    endpoints = WebhookEndpoint.objects.filter(enabled=True)
    if kind not in GLOBAL_KINDS:
        if not team:
            return recipients
        endpoints = endpoints.filter(team=team)
    recipients += [(Channel.WEBHOOK, endpoint, endpoint.url) for endpoint in endpoints]
    return recipients


def _deliveries_add(
    notification: Notification, recipients: Iterable[tuple[str, WebhookEndpoint | None, str]]
) -> list[Delivery]:
    now = notification.created_at
    rows = [
        Delivery(
            notification=notification,
            channel=channel,
            endpoint=endpoint,
            recipient=recipient,
            mac=delivery_mac(
                dedup_key=notification.dedup_key,
                kind=notification.kind,
                payload=notification.payload,
                channel=channel,
                recipient=recipient if endpoint is None else str(endpoint.uid),
            ),
            next_attempt_at=now,
            created_at=now,
        )
        for channel, endpoint, recipient in recipients
    ]
    return Delivery.objects.bulk_create(rows)


def notification_record(
    *,
    kind: str,
    dedup_key: str,
    subject: Target,
    team: str = "",
    email: str = "",
    payload: dict[str, Any],
    now: datetime | None = None,
) -> Notification | None:
    """Put a notification and its deliveries in the outbox, in the caller's transaction.

    At most once per ``dedup_key`` (None when it exists already): the callers'
    state guards make a second call rare, the unique key makes it harmless.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("notification_record runs inside the transaction of its change")
    if Notification.objects.filter(dedup_key=dedup_key).exists():
        return None
    now = now or timezone.now()
    payload = {
        "event": kind,
        "subject": {"kind": subject.kind, "id": subject.id, "display": subject.display},
        "team": team,
        "occurred_at": now.isoformat(),
        **payload,
    }
    try:
        with transaction.atomic():
            notification = Notification.objects.create(
                kind=kind,
                dedup_key=dedup_key[:255],
                subject_kind=subject.kind,
                subject_id=subject.id[:128],
                subject_display=subject.display[:255],
                team=team,
                payload=payload,
                created_at=now,
            )
    except IntegrityError:
        return None  # recorded by a concurrent caller
    _deliveries_add(notification, _recipients(kind=kind, team=team, email=email))
    return notification


def notifications_kick() -> None:
    """After commit, ask a worker to send what is due now rather than at the next beat.

    Best effort: with the broker away this does nothing and the periodic
    dispatcher sends it when it can, so the change itself never waits on the broker.
    """

    def kick() -> None:
        from notifications.tasks import notifications_dispatch_task

        try:
            notifications_dispatch_task.apply_async(retry=False)
        except Exception as exc:  # noqa: BLE001 (kombu raises many kinds; the outbox keeps it)
            logger.info("notifications: dispatcher not kicked (%s)", type(exc).__name__)

    transaction.on_commit(kick)


# --- webhook endpoints ------------------------------------------------------------


def _team(value: str) -> str:
    value = (value or "").strip()
    if not value or len(value) > 255 or not value.isprintable():
        raise ValidationError({"team": "A team name of 1 to 255 printable characters."})
    return value


@transaction.atomic
def webhook_endpoint_create(
    *,
    actor: Actor,
    team: str,
    url: str,
    description: str = "",
    context: RequestContext | None = None,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret, returned this once."""
    endpoint = WebhookEndpoint(
        team=_team(team),
        url=webhook_url_check(url),
        description=(description or "").strip()[:255],
        created_at=timezone.now(),
        created_by=actor.display[:255],
    )
    raw = webhook_secret_generate()
    endpoint.secret_wrapped, endpoint.kek_id = webhook_secret_wrap(raw, uid=str(endpoint.uid))
    endpoint.secret_last_four = raw[-4:]
    endpoint.save()
    audit_record(
        event_type=EventType.WEBHOOK_CREATED,
        actor=actor,
        target=_endpoint_target(endpoint),
        details={"team": endpoint.team, "url": endpoint.url, "secret_last_four": raw[-4:]},
        context=context,
    )
    return endpoint, raw


@transaction.atomic
def webhook_endpoint_update(
    *,
    actor: Actor,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    enabled: bool | None = None,
    description: str | None = None,
    context: RequestContext | None = None,
) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    changed: dict[str, Any] = {}
    if url is not None and webhook_url_check(url) != endpoint.url:
        endpoint.url = changed["url"] = webhook_url_check(url)
    if enabled is not None and bool(enabled) != endpoint.enabled:
        endpoint.enabled = changed["enabled"] = bool(enabled)
    if description is not None and description.strip()[:255] != endpoint.description:
        endpoint.description = changed["description"] = description.strip()[:255]
    if changed:
        endpoint.save()
        audit_record(
            event_type=EventType.WEBHOOK_UPDATED,
            actor=actor,
            target=_endpoint_target(endpoint),
            details={"changed": changed},
            context=context,
        )
    return endpoint


@transaction.atomic
def webhook_endpoint_secret_rotate(
    *, actor: Actor, endpoint: WebhookEndpoint, context: RequestContext | None = None
) -> tuple[WebhookEndpoint, str]:
    """A new signing secret, returned once; the previous one signs nothing more."""
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    raw = webhook_secret_generate()
    endpoint.secret_wrapped, endpoint.kek_id = webhook_secret_wrap(raw, uid=str(endpoint.uid))
    endpoint.secret_last_four = raw[-4:]
    endpoint.save(update_fields=["secret_wrapped", "kek_id", "secret_last_four"])
    audit_record(
        event_type=EventType.WEBHOOK_SECRET_ROTATED,
        actor=actor,
        target=_endpoint_target(endpoint),
        details={"secret_last_four": raw[-4:]},
        context=context,
    )
    return endpoint, raw


@transaction.atomic
def webhook_endpoint_delete(
    *, actor: Actor, endpoint: WebhookEndpoint, context: RequestContext | None = None
) -> None:
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    audit_record(
        event_type=EventType.WEBHOOK_DELETED,
        actor=actor,
        target=_endpoint_target(endpoint),
        details={"team": endpoint.team, "url": endpoint.url},
        context=context,
    )
    endpoint.delete()


@transaction.atomic
def webhook_endpoint_test(*, actor: Actor, endpoint: WebhookEndpoint) -> Notification:
    """A test notification to this endpoint only, sent as soon as a worker takes it."""
    now = timezone.now()
    notification = Notification.objects.create(
        kind=NotificationKind.TEST,
        dedup_key=f"test:{endpoint.uid}:{now.isoformat()}:{time.monotonic_ns()}",
        subject_kind="webhook",
        subject_id=str(endpoint.uid),
        subject_display=endpoint.url[:255],
        team=endpoint.team,
        payload={
            "event": NotificationKind.TEST,
            "subject": {"kind": "webhook", "id": str(endpoint.uid), "display": endpoint.url},
            "team": endpoint.team,
            "occurred_at": now.isoformat(),
            "requested_by": actor.display,
        },
        created_at=now,
    )
    _deliveries_add(notification, [(Channel.WEBHOOK, endpoint, endpoint.url)])
    notifications_kick()
    return notification


# --- the dispatcher ---------------------------------------------------------------


@dataclass(frozen=True)
class DispatchResult:
    delivered: int
    retried: int
    failed: int

    def as_dict(self) -> dict[str, int]:
        return {"delivered": self.delivered, "retried": self.retried, "failed": self.failed}


def _backoff(attempts: int) -> timedelta:
    base = settings.NOTIFICATION_RETRY_BASE
    return timedelta(
        seconds=min(base * 2 ** min(attempts - 1, 20), settings.NOTIFICATION_RETRY_MAX)
    )


def _claim(*, now: datetime, after_id: int, batch_size: int) -> list[int]:
    """Take up to ``batch_size`` due deliveries (id above ``after_id``) for this dispatcher.

    Rows another dispatcher holds are skipped (SKIP LOCKED, and the lease it
    wrote), so two dispatchers never send one delivery twice at once.
    """
    with transaction.atomic():
        due = (
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(state=DeliveryState.PENDING, next_attempt_at__lte=now, id__gt=after_id)
            .exclude(lease_until__gt=now)
            .order_by("id")
            .values_list("id", flat=True)[:batch_size]
        )
        ids = list(due)
        Delivery.objects.filter(id__in=ids).update(
            lease_until=now + timedelta(seconds=DELIVERY_LEASE_SECONDS)
        )
    return ids


def _authentic(delivery: Delivery) -> bool:
    """Whether the row is one this server wrote (see ``notifications.crypto``)."""
    notification = delivery.notification
    if delivery.channel == Channel.WEBHOOK:
        if delivery.endpoint_id is None:
            return False
        # Bound to the endpoint, not its URL: an edited URL receives what is pending.
        recipient = str(delivery.endpoint.uid)
    else:
        recipient = delivery.recipient
    expected = delivery_mac(
        dedup_key=notification.dedup_key,
        kind=notification.kind,
        payload=notification.payload,
        channel=delivery.channel,
        recipient=recipient,
    )
    return hmac.compare_digest(expected, delivery.mac)


def _send(delivery: Delivery) -> SendResult:
    notification = delivery.notification
    if delivery.channel == Channel.EMAIL:
        subject, body = email_text(notification)
        return email_send(to=delivery.recipient, subject=subject, body=body)
    endpoint = delivery.endpoint
    if endpoint is None or not endpoint.enabled:
        return SendResult(ok=False, status=None, error="endpoint disabled or deleted")
    try:
        secret = webhook_secret_unwrap(
            endpoint.secret_wrapped, kek_id=endpoint.kek_id, uid=str(endpoint.uid)
        )
    except SecretNotAuthentic:
        return SendResult(ok=False, status=None, error="endpoint secret does not decrypt")
    body = json.dumps(
        {"id": str(delivery.pk), **notification.payload}, separators=(",", ":"), sort_keys=True
    ).encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "machine-identity-portal",
        "X-Portal-Event": notification.kind,
        "X-Portal-Delivery": str(delivery.pk),
        SIGNATURE_HEADER: webhook_signature(
            secret=secret, timestamp=int(timezone.now().timestamp()), body=body
        ),
    }
    return webhook_post(url=endpoint.url, body=body, headers=headers)


def _attempt_record(delivery: Delivery, result: SendResult, *, started: datetime, ms: int) -> str:
    """Keep the attempt and move the delivery on: delivered, retried later, or given up."""
    now = timezone.now()
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            delivery=delivery,
            attempted_at=started,
            status_code=result.status,
            error=result.error,
            duration_ms=ms,
            succeeded=result.ok,
        )
        delivery.attempts += 1
        delivery.last_status = result.status
        delivery.last_error = result.error
        delivery.lease_until = None
        if result.ok:
            delivery.state = DeliveryState.DELIVERED
            delivery.delivered_at = now
            outcome = "delivered"
        else:
            retry_at = now + _backoff(delivery.attempts)
            give_up_at = delivery.created_at + timedelta(seconds=settings.NOTIFICATION_RETRY_FOR)
            if retry_at > give_up_at:
                delivery.state = DeliveryState.FAILED
                outcome = "failed"
            else:
                delivery.next_attempt_at = retry_at
                outcome = "retried"
        delivery.save(
            update_fields=[
                "attempts",
                "last_status",
                "last_error",
                "lease_until",
                "state",
                "delivered_at",
                "next_attempt_at",
            ]
        )
    return outcome


def notifications_dispatch(
    *, now: datetime | None = None, batch_size: int | None = None
) -> DispatchResult:
    """Send every delivery due at ``now``, in batches taken in id order (keyset cursor)."""
    now = now or timezone.now()
    batch_size = batch_size or settings.NOTIFICATION_BATCH_SIZE
    counts = {"delivered": 0, "retried": 0, "failed": 0}
    after_id = 0
    while True:
        ids = _claim(now=now, after_id=after_id, batch_size=batch_size)
        if not ids:
            break
        after_id = ids[-1]
        rows = Delivery.objects.select_related("notification", "endpoint").filter(id__in=ids)
        for delivery in rows.order_by("id"):
            if not _authentic(delivery):
                logger.error(
                    "notifications: delivery %s does not authenticate: dropped", delivery.pk
                )
                Delivery.objects.filter(pk=delivery.pk).update(
                    state=DeliveryState.FAILED, last_error="row not authentic", lease_until=None
                )
                counts["failed"] += 1
                continue
            started = timezone.now()
            clock = time.monotonic()
            result = _send(delivery)
            ms = int((time.monotonic() - clock) * 1000)
            counts[_attempt_record(delivery, result, started=started, ms=ms)] += 1
    return DispatchResult(**counts)
