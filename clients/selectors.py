"""Reads of machines, secrets and the registries (the token path reads through machine_cache)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.utils import timezone

from clients.constants import SECRET_DISPLAY_PREFIX_LENGTH, SECRET_PREFIX
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
