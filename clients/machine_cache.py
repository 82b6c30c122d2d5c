"""The authentication cache: a machine and its secret digests in one cache entry.

The token endpoint must not touch the database to decide who a machine is:
one cache GET returns the ``Machine`` (with its scopes and audiences
prefetched, so the token code needs no query either), the digests of its
recent secrets with their expiry, and its parsed IP allow-list.

Every service that changes a machine, its scopes, audiences or secrets calls
``machine_cache_invalidate`` inside its transaction; the entry is replaced
after commit by a short-lived tombstone rather than deleted. A reader that
loaded the old rows just before the commit stores its entry with
``cache.add``, which a tombstone refuses, so a stale entry cannot outlive a
revocation (a plain delete would let that reader put it back).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models.query import QuerySet
from redis.exceptions import RedisError

from clients.constants import (
    CACHED_SECRETS_PER_MACHINE,
    MACHINE_CACHE_MISS_TTL,
    MACHINE_CACHE_PREVIOUS_VERSIONS,
    MACHINE_CACHE_TOMBSTONE_TTL,
    MACHINE_CACHE_TTL,
    MACHINE_CACHE_VERSION,
)
from clients.credentials import secret_effective_expiry
from clients.models import Audience, ClientSecret, Machine, Scope

logger = logging.getLogger(__name__)

# What a cache backend raises when its server is away (Redis) or its disk fails (file cache).
CACHE_ERRORS = (RedisError, OSError)

_MISSING = "missing"
_TOMBSTONE = "tombstone"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class CachedSecret:
    """What verification needs of a secret; times are POSIX seconds."""

    id: int
    pepper_id: str
    digest: str
    expires_at: float | None
    revoked_at: float | None


@dataclass(frozen=True)
class MachineAuthEntry:
    """What one cache GET returns. The related rows are kept apart from ``machine``
    because a pickled prefetch cache (whole QuerySets) costs three times as much
    to unpickle; ``machine_with_relations`` puts them back."""

    machine: Machine
    allowed_scopes: tuple[Scope, ...]
    default_scopes: tuple[Scope, ...]
    allowed_audiences: tuple[Audience, ...]
    secrets: tuple[CachedSecret, ...]
    networks: tuple[IPNetwork, ...]

    def machine_with_relations(self) -> Machine:
        """The machine, whose ``allowed_scopes.all()`` and friends need no query.

        Set once per entry: a decoded entry serves every request of the process
        until the machine changes, and building the three QuerySets is not free.
        """
        machine = self.machine
        if "allowed_audiences" not in getattr(machine, "_prefetched_objects_cache", {}):
            machine._prefetched_objects_cache = {
                "allowed_scopes": _evaluated(Scope, self.allowed_scopes),
                "default_scopes": _evaluated(Scope, self.default_scopes),
                "allowed_audiences": _evaluated(Audience, self.allowed_audiences),
            }
        return machine


def _evaluated(model, rows) -> QuerySet:
    queryset = QuerySet(model=model)
    queryset._result_cache = list(rows)
    queryset._prefetch_done = True
    return queryset


def cache_safely(call: Callable[..., Any], *args: Any, default: Any = None, **kwargs: Any) -> Any:
    """Run one cache call; if the cache is down, log and return ``default``.

    The token path keeps working without the cache (DESIGN.md decision 8):
    machines are read from the database and throttling is skipped until the
    cache is back, because refusing every machine is a worse outage.
    """
    try:
        return call(*args, **kwargs)
    except CACHE_ERRORS as exc:
        logger.warning("cache unavailable (%s): %s", call.__name__, type(exc).__name__)
        return default


def machine_cache_key(client_id: str, version: int = MACHINE_CACHE_VERSION) -> str:
    # Hashed: client_id comes from the network and may hold anything. Versioned: a
    # deploy that changes the entry's shape must not read the previous one.
    digest = hashlib.sha256(client_id.encode("utf-8")).hexdigest()[:40]
    return f"clients:machine:v{version}:{digest}"


def machine_auth_entry_load(client_id: str) -> MachineAuthEntry | None:
    """Read the entry from the database (the cold path)."""
    machine = (
        Machine.objects.select_related("default_audience")
        .filter(client_id=client_id, deleted_at__isnull=True)
        .first()
    )
    if machine is None:
        return None
    allowed_scopes = tuple(machine.allowed_scopes.all())
    default_scopes = tuple(machine.default_scopes.all())
    allowed_audiences = tuple(machine.allowed_audiences.all())
    rows = ClientSecret.objects.filter(machine=machine).order_by("-created_at", "-id")[
        :CACHED_SECRETS_PER_MACHINE
    ]
    secrets = []
    for row in rows:
        expiry = secret_effective_expiry(
            created_at=row.created_at,
            expires_at=row.expires_at,
            max_secret_age=machine.max_secret_age,
        )
        secrets.append(
            CachedSecret(
                id=row.pk,
                pepper_id=row.pepper_id,
                digest=row.digest,
                expires_at=expiry.timestamp() if expiry else None,
                revoked_at=row.revoked_at.timestamp() if row.revoked_at else None,
            )
        )
    networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in machine.ip_allowlist)
    return MachineAuthEntry(
        machine=machine,
        allowed_scopes=allowed_scopes,
        default_scopes=default_scopes,
        allowed_audiences=allowed_audiences,
        secrets=tuple(secrets),
        networks=networks,
    )


# Per process: an entry's pickled bytes -> the entry. Unpickling a Machine costs
# more than the cache round trip's own parsing, and an entry changes only when
# the machine does, so equal bytes are decoded once. Entries are never
# mutated by their readers (``machine_with_relations`` only sets a cache of
# the same relations), so sharing one between requests is safe.
_decoded: dict[bytes, MachineAuthEntry] = {}
_DECODED_MAX = 4096


def machine_auth_entry_encode(entry: MachineAuthEntry) -> bytes:
    return pickle.dumps(entry, pickle.HIGHEST_PROTOCOL)


def machine_auth_entry_decode(raw: bytes) -> MachineAuthEntry:
    entry = _decoded.get(raw)
    if entry is None:
        # Our own bytes, from our own cache: the same trust as Django's pickled cache values.
        entry = pickle.loads(raw)  # noqa: S301
        if len(_decoded) >= _DECODED_MAX:
            _decoded.clear()
        _decoded[raw] = entry
    return entry


def machine_auth_entry_resolve(client_id: str, cached: object) -> MachineAuthEntry | None:
    """Turn what the cache returned for ``client_id`` into an entry, loading on a miss."""
    if isinstance(cached, bytes):
        return machine_auth_entry_decode(cached)
    if cached == _MISSING:
        return None
    entry = machine_auth_entry_load(client_id)
    if cached is None:  # a tombstone means: do not cache yet
        value, ttl = (
            (machine_auth_entry_encode(entry), MACHINE_CACHE_TTL)
            if entry
            else (_MISSING, MACHINE_CACHE_MISS_TTL)
        )
        cache_safely(cache.add, machine_cache_key(client_id), value, ttl)
    return entry


def machine_auth_entry_get(client_id: str) -> MachineAuthEntry | None:
    return machine_auth_entry_resolve(
        client_id, cache_safely(cache.get, machine_cache_key(client_id))
    )


def _tombstone_write(key: str) -> None:
    """Replace the entry by a tombstone, retrying once.

    A lost tombstone leaves a revoked secret working until the entry expires
    (``MACHINE_CACHE_TTL``), so a second failure is an ERROR for the operators,
    not the WARNING of a cache that is merely away. The change itself has
    committed: raising here would only turn it into a 500.
    """
    for attempt in (1, 2):
        try:
            cache.set(key, _TOMBSTONE, MACHINE_CACHE_TOMBSTONE_TTL)
            return
        except CACHE_ERRORS as exc:
            if attempt == 1:
                logger.warning(
                    "machine cache invalidation failed, retrying: %s", type(exc).__name__
                )
            else:
                logger.error(
                    "machine cache invalidation failed, a stale entry may live up to %d s: %s",
                    MACHINE_CACHE_TTL,
                    type(exc).__name__,
                )


def machine_cache_invalidate(*, client_id: str) -> None:
    """Drop the machine's entry once the current transaction commits.

    Under the previous cache versions too, so that during a rolling deploy a
    node still running the previous release cannot keep serving a revoked
    secret from its own key until that entry expires.
    """
    keys = [
        machine_cache_key(client_id, version)
        for version in (MACHINE_CACHE_VERSION, *MACHINE_CACHE_PREVIOUS_VERSIONS)
    ]

    def tombstones() -> None:
        for key in keys:
            _tombstone_write(key)

    transaction.on_commit(tombstones)
