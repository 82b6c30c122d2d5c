"""The credential lifecycle run by beat: secrets that expire, machines nobody uses.

Each job walks its rows in bounded batches with a keyset cursor (id order)
and changes each row in a transaction of its own, under the machine's row
lock, behind a state guard (``warned_at``, ``expired_at``,
``stale_reported_at``): a second run, or two runs at once, find nothing left
to do. Each change writes its audit event and its notification (the outbox)
in that same transaction; the dispatcher is asked to send after commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.choices import EventType
from audit.context import Actor, Target
from audit.services import audit_record
from clients.choices import StaleAction
from clients.machine_cache import machine_cache_invalidate
from clients.models import ClientSecret, Machine
from clients.selectors import secret_expiry
from notifications.choices import NotificationKind
from notifications.services import notification_record, notifications_kick


def _target(machine: Machine) -> Target:
    return Target(kind="machine", id=machine.client_id, display=machine.name or machine.client_id)


def _display(secret: ClientSecret) -> str:
    return f"{secret.display_prefix}…{secret.last_four}"


def machine_warning_period(machine: Machine) -> int:
    """Seconds before expiry the owner is warned: the machine's policy, else the default."""
    if machine.secret_warning_period is not None:
        return machine.secret_warning_period
    return settings.SECRET_WARNING_PERIOD


def machine_stale_action(machine: Machine) -> str:
    return machine.stale_action or settings.STALE_MACHINE_ACTION


def _superseded(secret: ClientSecret) -> bool:
    """A newer secret of the machine exists: this one is being rotated away, on purpose."""
    return ClientSecret.objects.filter(
        machine_id=secret.machine_id, id__gt=secret.pk, revoked_at__isnull=True
    ).exists()


def _notify(machine: Machine, *, kind: str, dedup_key: str, payload: dict[str, Any], now) -> bool:
    return (
        notification_record(
            kind=kind,
            dedup_key=dedup_key,
            subject=_target(machine),
            team=machine.owner_team,
            email=machine.owner_email,
            payload={"client_id": machine.client_id, **payload},
            now=now,
        )
        is not None
    )


@dataclass(frozen=True)
class ExpiryResult:
    warned: int
    expired: int

    def as_dict(self) -> dict[str, int]:
        return {"warned": self.warned, "expired": self.expired}


def _secret_locked(secret_id: int) -> tuple[Machine, ClientSecret] | None:
    secret = ClientSecret.objects.filter(pk=secret_id).only("machine_id").first()
    if secret is None:
        return None
    machine = Machine.objects.select_for_update().get(pk=secret.machine_id)
    return machine, ClientSecret.objects.get(pk=secret_id)


@transaction.atomic
def secret_warn(*, secret_id: int, now: datetime, actor: Actor) -> bool:
    """Warn the owner that the secret nears its expiry, once (``warned_at``)."""
    locked = _secret_locked(secret_id)
    if locked is None:
        return False
    machine, secret = locked
    expiry = secret_expiry(secret=secret, machine=machine)
    period = machine_warning_period(machine)
    if (
        secret.warned_at is not None
        or secret.expired_at is not None
        or secret.revoked_at is not None
        or expiry is None
        or not period
        or not now < expiry <= now + timedelta(seconds=period)
        or _superseded(secret)
    ):
        return False
    secret.warned_at = now
    secret.save(update_fields=["warned_at"])
    details = {
        "secret_id": secret.pk,
        "display": _display(secret),
        "expires_at": expiry.isoformat(),
    }
    audit_record(
        event_type=EventType.SECRET_EXPIRING, actor=actor, target=_target(machine), details=details
    )
    _notify(
        machine,
        kind=NotificationKind.SECRET_EXPIRING,
        dedup_key=f"secret.expiring:{secret.pk}",
        payload=details,
        now=now,
    )
    return True


@transaction.atomic
def secret_expire(*, secret_id: int, now: datetime, actor: Actor) -> bool:
    """Record that the secret stopped working (``secret.expired``), once (``expired_at``).

    Authentication already refuses it by time; this is the state change the
    owner and the audit trail hear about. A secret that a rotation replaced
    expires quietly (the event, no notification): its end was the plan.
    """
    locked = _secret_locked(secret_id)
    if locked is None:
        return False
    machine, secret = locked
    expiry = secret_expiry(secret=secret, machine=machine)
    if (
        secret.expired_at is not None
        or secret.revoked_at is not None
        or expiry is None
        or expiry > now
    ):
        return False
    secret.expired_at = now
    secret.save(update_fields=["expired_at"])
    superseded = _superseded(secret)
    details = {
        "secret_id": secret.pk,
        "display": _display(secret),
        "expired_at": expiry.isoformat(),
        "superseded": superseded,
    }
    audit_record(
        event_type=EventType.SECRET_EXPIRED, actor=actor, target=_target(machine), details=details
    )
    if not superseded:
        _notify(
            machine,
            kind=NotificationKind.SECRET_EXPIRED,
            dedup_key=f"secret.expired:{secret.pk}",
            payload=details,
            now=now,
        )
    machine_cache_invalidate(client_id=machine.client_id)
    return True


def secrets_expire(*, now: datetime | None = None, batch_size: int | None = None) -> ExpiryResult:
    """The periodic job: warn about secrets nearing expiry, expire those past it."""
    now = now or timezone.now()
    batch_size = batch_size or settings.LIFECYCLE_BATCH_SIZE
    actor = Actor.system("secret expiry")
    warned = expired = 0
    cursor = 0
    while True:
        rows = list(
            ClientSecret.objects.filter(
                id__gt=cursor,
                revoked_at__isnull=True,
                expired_at__isnull=True,
                machine__deleted_at__isnull=True,
            )
            .select_related("machine")
            .order_by("id")[:batch_size]
        )
        if not rows:
            break
        cursor = rows[-1].pk
        for row in rows:
            expiry = secret_expiry(secret=row, machine=row.machine)
            if expiry is None:
                continue
            if expiry <= now:
                expired += secret_expire(secret_id=row.pk, now=now, actor=actor)
            elif row.warned_at is None and expiry <= now + timedelta(
                seconds=machine_warning_period(row.machine)
            ):
                warned += secret_warn(secret_id=row.pk, now=now, actor=actor)
    return ExpiryResult(warned=warned, expired=expired)


@dataclass(frozen=True)
class StaleResult:
    reported: int
    disabled: int

    def as_dict(self) -> dict[str, int]:
        return {"reported": self.reported, "disabled": self.disabled}


def _idle_since(machine: Machine) -> datetime:
    return max(machine.created, machine.last_used_at or machine.created)


@transaction.atomic
def machine_stale_report(*, machine_id: int, now: datetime, actor: Actor) -> str:
    """Report a machine unused for ``STALE_MACHINE_DAYS`` once per idle period.

    Returns "" (nothing to do), "reported" or "disabled". Disabling is
    reversible: an admin enables the machine again, and it is not disabled
    again until it has been used and then left idle for a full period.
    """
    machine = Machine.objects.select_for_update().filter(pk=machine_id).first()
    if machine is None or machine.deleted_at is not None or not machine.enabled:
        return ""
    idle_since = _idle_since(machine)
    if idle_since > now - timedelta(days=settings.STALE_MACHINE_DAYS):
        return ""
    if machine.stale_reported_at is not None and machine.stale_reported_at >= idle_since:
        return ""
    action = machine_stale_action(machine)
    machine.stale_reported_at = now
    fields = ["stale_reported_at"]
    if action == StaleAction.DISABLE:
        machine.enabled = False
        fields += ["enabled", "updated"]
    machine.save(update_fields=fields)
    details = {
        "idle_since": idle_since.isoformat(),
        "last_used_at": machine.last_used_at.isoformat() if machine.last_used_at else None,
        "stale_days": settings.STALE_MACHINE_DAYS,
        "action": action,
    }
    audit_record(
        event_type=EventType.MACHINE_STALE, actor=actor, target=_target(machine), details=details
    )
    if action == StaleAction.DISABLE:
        audit_record(
            event_type=EventType.MACHINE_DISABLED,
            actor=actor,
            target=_target(machine),
            reason="stale",
            details={"idle_since": idle_since.isoformat()},
        )
        machine_cache_invalidate(client_id=machine.client_id)
    _notify(
        machine,
        kind=NotificationKind.MACHINE_STALE,
        dedup_key=f"machine.stale:{machine.client_id}:{idle_since.isoformat()}",
        payload=details,
        now=now,
    )
    return "disabled" if action == StaleAction.DISABLE else "reported"


def machines_stale_sweep(
    *, now: datetime | None = None, batch_size: int | None = None
) -> StaleResult:
    """The periodic job: report (and by policy disable) machines nobody used for a while."""
    now = now or timezone.now()
    if not settings.STALE_MACHINE_DAYS:
        return StaleResult(reported=0, disabled=0)
    batch_size = batch_size or settings.LIFECYCLE_BATCH_SIZE
    cutoff = now - timedelta(days=settings.STALE_MACHINE_DAYS)
    actor = Actor.system("stale machines")
    counts = {"": 0, "reported": 0, "disabled": 0}
    cursor = 0
    while True:
        ids = list(
            Machine.objects.filter(
                id__gt=cursor, deleted_at__isnull=True, enabled=True, created__lte=cutoff
            )
            .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=cutoff))
            .order_by("id")
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            break
        cursor = ids[-1]
        for machine_id in ids:
            counts[machine_stale_report(machine_id=machine_id, now=now, actor=actor)] += 1
    return StaleResult(reported=counts["reported"], disabled=counts["disabled"])


def auth_failures_notify(*, machine: Machine, now: float, window: int) -> None:
    """Tell the owner that a machine's credentials keep failing (once per throttle window).

    Called inside the transaction that records the denial that started a block.
    """
    bucket = int(now // window)
    notification_record(
        kind=NotificationKind.AUTH_FAILURES,
        dedup_key=f"auth.failures:{machine.client_id}:{bucket}",
        subject=_target(machine),
        team=machine.owner_team,
        email=machine.owner_email,
        payload={"client_id": machine.client_id, "window_seconds": window},
    )


def lifecycle_kick() -> None:
    """Ask for the notifications a job recorded to be sent now (after commit, best effort)."""
    notifications_kick()
