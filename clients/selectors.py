"""Reads of machines, secrets and the registries (the token path reads through machine_cache)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from clients.constants import (
    MACHINE_UNUSED_SECONDS,
    SECRET_DISPLAY_PREFIX_LENGTH,
    SECRET_EXPIRY_WARNING_SECONDS,
    SECRET_PREFIX,
)
from clients.credentials import secret_effective_expiry, secret_is_usable
from clients.models import Audience, ClientSecret, Machine, Scope


def machine_get(*, client_id: str, include_deleted: bool = False) -> Machine:
    """The machine with this client_id; raises ``Machine.DoesNotExist``."""
    machines = Machine.objects.all()
    if not include_deleted:
        machines = machines.filter(deleted_at__isnull=True)
    return machines.get(client_id=client_id)


def machine_list(*, include_deleted: bool = False) -> QuerySet[Machine]:
    machines = Machine.objects.select_related("default_audience").prefetch_related(
        "allowed_scopes", "default_scopes", "allowed_audiences"
    )
    if not include_deleted:
        machines = machines.filter(deleted_at__isnull=True)
    return machines.order_by("name", "id")


def machine_filter(
    *,
    enabled: bool | None = None,
    owner_team: str | None = None,
    scope: str | None = None,
    audience: str | None = None,
    search: str | None = None,
    include_deleted: bool = False,
) -> QuerySet[Machine]:
    """Machines matching every given filter, with what their representation reads prefetched."""
    machines = machine_list(include_deleted=include_deleted).prefetch_related("secrets")
    if enabled is not None:
        machines = machines.filter(enabled=enabled)
    if owner_team:
        machines = machines.filter(owner_team=owner_team)
    if scope:
        machines = machines.filter(allowed_scopes__name=scope)
    if audience:
        machines = machines.filter(allowed_audiences__uri=audience)
    if search:
        machines = machines.filter(Q(name__icontains=search) | Q(client_id=search))
    return machines.distinct()


def secret_list_usable(*, machine: Machine, now: datetime | None = None) -> list[ClientSecret]:
    """The machine's secrets that authenticate at ``now``, newest first."""
    now = now or timezone.now()
    rows = machine.secrets.filter(revoked_at__isnull=True).order_by("-created_at", "-id")
    return [
        row
        for row in rows
        if secret_is_usable(
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            max_secret_age=machine.max_secret_age,
            now=now,
        )
    ]


def secret_expiry(*, secret: ClientSecret, machine: Machine) -> datetime | None:
    return secret_effective_expiry(
        created_at=secret.created_at,
        expires_at=secret.expires_at,
        max_secret_age=machine.max_secret_age,
    )


def secret_get_by_prefix(*, machine: Machine, prefix: str) -> ClientSecret:
    """The one secret of ``machine`` whose display prefix starts with ``prefix``.

    Raises ``ValidationError`` unless ``prefix`` is ``SECRET_PREFIX`` plus 1 to 4
    characters: an empty or bare prefix would match every secret, and a longer
    one is probably a whole raw secret pasted by mistake. The message never
    repeats what was given, which may be that secret. Then raises
    ``ClientSecret.DoesNotExist`` or ``ClientSecret.MultipleObjectsReturned``.
    """
    if not (
        prefix.startswith(SECRET_PREFIX)
        and len(SECRET_PREFIX) < len(prefix) <= SECRET_DISPLAY_PREFIX_LENGTH
    ):
        raise ValidationError(
            f"A secret prefix is {SECRET_PREFIX} followed by 1 to "
            f"{SECRET_DISPLAY_PREFIX_LENGTH - len(SECRET_PREFIX)} characters, "
            "as the console and `machine list` show it."
        )
    return machine.secrets.get(display_prefix__startswith=prefix)


def scope_list() -> QuerySet[Scope]:
    return Scope.objects.order_by("name")


def audience_list() -> QuerySet[Audience]:
    return Audience.objects.order_by("uri")


# --- The console's dashboard ------------------------------------------------------


def machine_counts() -> dict[str, int]:
    """Live machines, enabled and disabled (one aggregate over the machine table)."""
    counts = Machine.objects.filter(deleted_at__isnull=True).aggregate(
        on=Count("id", filter=Q(enabled=True)),
        off=Count("id", filter=Q(enabled=False)),
    )
    return {"enabled": counts["on"] or 0, "disabled": counts["off"] or 0}


@dataclass(frozen=True)
class ExpiringSecret:
    machine: Machine
    secret: ClientSecret
    expires_at: datetime


def secrets_expiring(
    *, now: datetime | None = None, within: timedelta | None = None
) -> list[ExpiringSecret]:
    """Machines whose newest usable secret expires within its warning period, soonest first.

    The warning period is the machine's (``secret_warning_period``), else
    ``SECRET_WARNING_PERIOD`` (as ``clients.lifecycle`` warns owners), or
    ``within`` when given. Only the newest usable secret counts: an older one
    expiring after a rotation is the grace period doing its job. Expiry is
    ``secret_expiry`` (its own end or its age limit, whichever comes first).
    """
    now = now or timezone.now()
    candidates = (
        ClientSecret.objects.filter(
            revoked_at__isnull=True, machine__deleted_at__isnull=True, machine__enabled=True
        )
        .filter(Q(expires_at__gt=now) | Q(expires_at__isnull=True))
        .select_related("machine")
        .order_by("machine_id", "-created_at", "-id")
    )
    newest: dict[int, ClientSecret] = {}
    for secret in candidates:
        newest.setdefault(secret.machine_id, secret)
    found = []
    for secret in newest.values():
        machine = secret.machine
        if within is not None:
            period = within
        elif machine.secret_warning_period is not None:
            period = timedelta(seconds=machine.secret_warning_period)
        else:
            period = timedelta(
                seconds=getattr(settings, "SECRET_WARNING_PERIOD", SECRET_EXPIRY_WARNING_SECONDS)
            )
        expiry = secret_expiry(secret=secret, machine=machine)
        if expiry is None or not now < expiry <= now + period:
            continue
        usable = secret_list_usable(machine=machine, now=now)
        if usable and usable[0].pk == secret.pk:
            found.append(ExpiringSecret(machine=machine, secret=secret, expires_at=expiry))
    return sorted(found, key=lambda row: (row.expires_at, row.machine.name))


def machines_unused(*, now: datetime | None = None, limit: int = 10) -> tuple[int, list[Machine]]:
    """Enabled machines without a token for ``MACHINE_UNUSED_SECONDS`` (or never used since)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=MACHINE_UNUSED_SECONDS)
    machines = Machine.objects.filter(deleted_at__isnull=True, enabled=True).filter(
        Q(last_used_at__lt=cutoff) | Q(last_used_at__isnull=True, created__lt=cutoff)
    )
    oldest_first = machines.order_by(F("last_used_at").asc(nulls_first=True), "name")
    return machines.count(), list(oldest_first[:limit])


@dataclass(frozen=True)
class SecretsExpiry:
    """Usable secrets of live machines, and those that expire within the warning period."""

    usable: int
    expiring: int  # usable, but expiring within the warning period
    # Machines whose every usable secret expires within the warning period: a
    # secret in a rotation's grace period is expiring, but its machine has a newer one.
    machines_expiring: int


def secrets_expiry(*, now: datetime, warning: timedelta) -> SecretsExpiry:
    """One pass over the usable secrets of machines not deleted (four columns each).

    A secret's expiry is its own ``expires_at`` or its machine's maximum age,
    whichever comes first (``clients.credentials.secret_effective_expiry``), so
    the age part is applied here rather than in SQL.
    """
    rows = (
        ClientSecret.objects.filter(revoked_at__isnull=True, machine__deleted_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .values_list("machine_id", "created_at", "expires_at", "machine__max_secret_age")
    )
    horizon = now + warning
    usable = expiring = 0
    lasting: dict[int, bool] = {}  # machine -> has a usable secret lasting past the warning
    for machine_id, created_at, expires_at, max_age in rows.iterator(chunk_size=2000):
        expiry = secret_effective_expiry(
            created_at=created_at, expires_at=expires_at, max_secret_age=max_age
        )
        if expiry is not None and expiry <= now:
            continue
        usable += 1
        soon = expiry is not None and expiry <= horizon
        expiring += soon
        lasting[machine_id] = lasting.get(machine_id, False) or not soon
    return SecretsExpiry(
        usable=usable,
        expiring=expiring,
        machines_expiring=sum(1 for lasts in lasting.values() if not lasts),
    )
