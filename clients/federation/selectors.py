"""Reads of federation trusts; the token path reads a machine's trusts through the cache.

The token path needs a machine's trusts on every federated request, so they
are kept in the shared cache like the machine entry (``clients.machine_cache``):
one JSON entry per machine, authenticated by the cache backend, loaded from
the database on a miss, and invalidated the same way: adding or removing a
trust gives the machine a new generation, and an entry is served only under
the generation its reader saw before reading the rows (so a reader that
loaded them just before the change cannot serve them after it), for at most
``MACHINE_CACHE_TTL`` after that. Each row's binding (``clients.federation.binding``)
is checked when it is loaded: a row that fails is kept in the entry as not
authentic, so a token it would have admitted is refused with that reason in
the audit trail, and it grants nothing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

from django.core.cache import cache
from django.db import transaction
from django.db.models import QuerySet

from clients.cache_outcome import cache_failure_report
from clients.constants import MACHINE_CACHE_TOMBSTONE_TTL, MACHINE_CACHE_TTL
from clients.federation.binding import trust_binding_holds
from clients.machine_cache import (
    CACHE_ERRORS,
    cache_safely,
    machine_cache_invalidate,
    machine_generation_key,
)
from clients.models import FederationTrust, Machine

logger = logging.getLogger(__name__)

TRUSTS_CACHE_VERSION = 2
# Tombstoned on every change, for the nodes of a release before generations.
TRUSTS_CACHE_PREVIOUS_VERSIONS = (1,)
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


def trusts_cache_key(client_id: str, version: int = TRUSTS_CACHE_VERSION) -> str:
    digest = hashlib.sha256(client_id.encode("utf-8")).hexdigest()[:40]
    return f"clients:trusts:v{version}:{digest}"


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


def _encode(client_id: str, trusts: list[CachedTrust], generation: str, read_at: float) -> dict:
    return {
        "client_id": client_id,
        "generation": [generation, read_at],
        "trusts": [
            [t.uid, t.issuer, t.audience, t.subject, t.condition, t.jwks, t.authentic]
            for t in trusts
        ],
    }


def _decode(
    client_id: str, value: object, generation: str, now: float
) -> tuple[CachedTrust, ...] | None:
    """The trusts in ``value`` if it is this machine's entry under its current generation."""
    if not isinstance(value, dict) or value.get("client_id") != client_id:
        return None
    try:
        stored_generation, read_at = value["generation"]
        if stored_generation != generation or now - float(read_at) > MACHINE_CACHE_TTL:
            return None
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


def machine_trusts(
    *,
    client_id: str,
    cached: object = _UNREAD,
    generation: object = None,
    read_at: float | None = None,
) -> tuple[CachedTrust, ...]:
    """The machine's trusts: one cache read (entry and generation), the database on a miss.

    ``cached`` and ``generation``: what the cache already returned under
    ``trusts_cache_key`` and ``machine_generation_key`` (``None`` for nothing),
    when the caller read them with other keys in one round trip
    (``clients.authentication``, at ``read_at``); they are then not read again.
    """
    if cached is _UNREAD or read_at is None:
        read_at = time.time()
    key, generation_key = trusts_cache_key(client_id), machine_generation_key(client_id)
    if cached is _UNREAD:
        values = cache_safely(cache.get_many, [key, generation_key], default={})
        cached, generation = values.get(key), values.get(generation_key)
    generation = generation if type(generation) is str else ""
    trusts = _decode(client_id, cached, generation, time.time())
    if trusts is not None:
        return trusts
    loaded = _load(client_id)
    ttl = read_at + MACHINE_CACHE_TTL - time.time()
    if ttl >= 1:  # a reader stalled past the entry's life stores nothing
        # Into an empty key, or over an entry of ours (outdated), never over a value
        # the cache refused as not ours.
        write = cache.add if cached is None else cache.set
        cache_safely(write, key, _encode(client_id, loaded, generation, read_at), int(ttl))
    return tuple(loaded)


TRUSTS_CACHE_FAILURE_MESSAGE = (
    "The change is saved, but the cache could not be told: other processes may keep "
    f"using the previous trusts of this machine for up to {MACHINE_CACHE_TTL} s. "
    "Check the cache (Redis), then repeat the action to tell it again."
)


def machine_trusts_invalidate(*, client_id: str) -> None:
    """Give the machine a new generation once the transaction commits.

    The machine's own entry is reloaded once too (trusts change rarely). The
    previous version's key gets a tombstone, for the nodes of an earlier
    release during a rolling deploy.
    """
    machine_cache_invalidate(client_id=client_id, failure_message=TRUSTS_CACHE_FAILURE_MESSAGE)
    previous = [trusts_cache_key(client_id, version) for version in TRUSTS_CACHE_PREVIOUS_VERSIONS]

    def tombstones() -> None:
        for key in previous:
            for attempt in (1, 2):
                try:
                    cache.set(key, _TOMBSTONE, MACHINE_CACHE_TOMBSTONE_TTL)
                    break
                except CACHE_ERRORS as exc:
                    if attempt == 2:
                        logger.error(
                            "federation trusts invalidation failed, a stale entry may live "
                            "%d s: %s",
                            MACHINE_CACHE_TTL,
                            type(exc).__name__,
                        )
                        cache_failure_report(message=TRUSTS_CACHE_FAILURE_MESSAGE)

    transaction.on_commit(tombstones)
