"""Reads of federation trusts; the token path reads a machine's trusts through the cache.

The token path needs a machine's trusts on every federated request, so they
are kept in the shared cache like the machine entry (``clients.machine_cache``):
one JSON entry per machine, authenticated by the cache backend, replaced by a
short-lived tombstone when a trust is added or removed (so a reader that
loaded the rows just before the change cannot put them back), and loaded
from the database on a miss. Each row's binding (``clients.federation.binding``)
is checked when it is loaded: a row that fails is kept in the entry as not
authentic, so a token it would have admitted is refused with that reason in
the audit trail, and it grants nothing.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from django.core.cache import cache
from django.db import transaction
from django.db.models import QuerySet

from clients.cache_outcome import cache_failure_report
from clients.constants import MACHINE_CACHE_TOMBSTONE_TTL, MACHINE_CACHE_TTL
from clients.federation.binding import trust_binding_holds
from clients.machine_cache import CACHE_ERRORS, cache_safely
from clients.models import FederationTrust, Machine

logger = logging.getLogger(__name__)

TRUSTS_CACHE_VERSION = 1
_TOMBSTONE = "tombstone"


@dataclass(frozen=True)
class CachedTrust:
    """What verification needs of a trust. ``authentic`` False: its binding failed."""

    uid: str
    issuer: str
    audience: str
    subject: str
    condition: str
    jwks: str
    authentic: bool


def trust_list(*, machine: Machine | None = None) -> QuerySet[FederationTrust]:
    trusts = FederationTrust.objects.select_related("machine").filter(
        machine__deleted_at__isnull=True
    )
    if machine is not None:
        trusts = trusts.filter(machine=machine)
    return trusts.order_by("created_at", "id")


def trust_get(*, trust_id: str) -> FederationTrust:
    """The trust with this id (its uid); ``FederationTrust.DoesNotExist`` otherwise."""
    return FederationTrust.objects.select_related("machine").get(uid=trust_id)


def trust_is_authentic(trust: FederationTrust) -> bool:
    return trust_binding_holds(
        pepper_id=trust.pepper_id,
        binding=trust.binding,
        uid=str(trust.uid),
        client_id=trust.machine.client_id,
        issuer=trust.issuer,
        audience=trust.audience,
        subject=trust.subject,
        condition=trust.condition,
        jwks=trust.jwks,
    )


def machine_for_issuer_subject(*, issuer: str, subject: str) -> str | None:
    """The client_id of the one machine with a trust naming exactly this issuer and subject.

    For a workload that sends its token without a client_id: with none, or
    with several machines trusting the same issuer and subject, there is no
    answer and the request is refused.
    """
    client_ids = list(
        FederationTrust.objects.filter(
            issuer=issuer, subject=subject, machine__deleted_at__isnull=True
        )
        .exclude(subject="")
        .values_list("machine__client_id", flat=True)
        .distinct()[:2]
    )
    return client_ids[0] if len(client_ids) == 1 else None


def trusts_cache_key(client_id: str) -> str:
    digest = hashlib.sha256(client_id.encode("utf-8")).hexdigest()[:40]
    return f"clients:trusts:v{TRUSTS_CACHE_VERSION}:{digest}"


def _load(client_id: str) -> list[CachedTrust]:
    rows = FederationTrust.objects.select_related("machine").filter(
        machine__client_id=client_id, machine__deleted_at__isnull=True
    )
    trusts = []
    for row in rows.order_by("created_at", "id"):
        authentic = trust_is_authentic(row)
        if not authentic:
            logger.warning(
                "federation: trust %s of machine %s fails its binding: ignored", row.uid, client_id
            )
        trusts.append(
            CachedTrust(
                uid=str(row.uid),
                issuer=row.issuer,
                audience=row.audience,
                subject=row.subject,
                condition=row.condition,
                jwks=row.jwks,
                authentic=authentic,
            )
        )
    return trusts


def _encode(client_id: str, trusts: list[CachedTrust]) -> dict:
    return {
        "client_id": client_id,
        "trusts": [
            [t.uid, t.issuer, t.audience, t.subject, t.condition, t.jwks, t.authentic]
            for t in trusts
        ],
    }


def _decode(client_id: str, value: object) -> tuple[CachedTrust, ...] | None:
    if not isinstance(value, dict) or value.get("client_id") != client_id:
        return None
    try:
        return tuple(
            CachedTrust(
                uid=str(uid),
                issuer=str(issuer),
                audience=str(audience),
                subject=str(subject),
                condition=str(condition),
                jwks=str(jwks),
                authentic=authentic is True,
            )
            for uid, issuer, audience, subject, condition, jwks, authentic in value["trusts"]
        )
    except (KeyError, TypeError, ValueError):
        return None


# ``machine_trusts``'s default: nothing was read from the cache yet.
_UNREAD = object()


def machine_trusts(*, client_id: str, cached: object = _UNREAD) -> tuple[CachedTrust, ...]:
    """The machine's trusts: one cache read, the database on a miss.

    ``cached``: what the cache already returned under ``trusts_cache_key``
    (``None`` for nothing), when the caller read it with other keys in one
    round trip (``clients.authentication``); it is then not read again.
    """
    key = trusts_cache_key(client_id)
    if cached is _UNREAD:
        cached = cache_safely(cache.get, key)
    trusts = _decode(client_id, cached)
    if trusts is not None:
        return trusts
    loaded = _load(client_id)
    if cached is None:  # a tombstone (or a value not ours) means: do not cache yet
        cache_safely(cache.add, key, _encode(client_id, loaded), MACHINE_CACHE_TTL)
    return tuple(loaded)


TRUSTS_CACHE_FAILURE_MESSAGE = (
    "The change is saved, but the cache could not be told: other processes may keep "
    f"using the previous trusts of this machine for up to {MACHINE_CACHE_TTL} s. "
    "Check the cache (Redis), then repeat the action to tell it again."
)


def machine_trusts_invalidate(*, client_id: str) -> None:
    """Replace the machine's trusts entry by a tombstone once the transaction commits."""
    key = trusts_cache_key(client_id)

    def tombstone() -> None:
        for attempt in (1, 2):
            try:
                cache.set(key, _TOMBSTONE, MACHINE_CACHE_TOMBSTONE_TTL)
                return
            except CACHE_ERRORS as exc:
                if attempt == 2:
                    logger.error(
                        "federation trusts invalidation failed, a stale entry may live %d s: %s",
                        MACHINE_CACHE_TTL,
                        type(exc).__name__,
                    )
                    cache_failure_report(message=TRUSTS_CACHE_FAILURE_MESSAGE)

    transaction.on_commit(tombstone)
