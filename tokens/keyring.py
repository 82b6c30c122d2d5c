"""The process's parsed keys: loaded once, reloaded only when the keys change.

Parsing and decrypting a private key costs far more than signing with it, so
each process keeps the key objects in memory. Every change to a key bumps a
version in the shared cache (after commit); a request reads that one cache
value and reloads from the database only when it differs. When the cache is
unreachable, the ring is reloaded from the database at most every few
seconds, so tokens are still issued (DESIGN.md decision 8).

Trust decisions that must hold on every process at once (a revoked key) are
also checked against the database by introspection; the ring is for speed.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from redis.exceptions import RedisError

from tokens import jose
from tokens.choices import KeyState
from tokens.constants import PUBLISHED_STATES
from tokens.models import SigningKey

logger = logging.getLogger(__name__)

VERSION_CACHE_KEY = "tokens:keyring:version"
# Without a reachable cache, how stale the ring may get before a database reload.
FALLBACK_RELOAD_SECONDS = 5.0


class NoSigningKey(LookupError):
    """No active key can sign: first-run setup or a rotation is missing."""


@dataclass
class Keyring:
    version: str | None
    loaded_at: float
    checked_at: float
    signers: dict[str, jose.Signer] = field(default_factory=dict)  # by algorithm
    verifiers: dict[str, jose.Verifier] = field(default_factory=dict)  # by kid

    def signer(self, algorithm: str) -> jose.Signer:
        signer = self.signers.get(algorithm)
        if signer is None:
            # Another algorithm's active key rather than no token at all.
            signer = next(iter(self.signers.values()), None)
        if signer is None:
            raise NoSigningKey("no active signing key")
        return signer


_lock = threading.Lock()
_ring: Keyring | None = None


def _read_version() -> str | None:
    value = cache.get(VERSION_CACHE_KEY)
    return None if value is None else str(value)


def _new_version() -> int:
    return secrets.randbits(62)


def _cached_version() -> str | None:
    try:
        version = _read_version()
        if version is None:
            # Evicted or flushed: agree on a new value; every process reloads once.
            cache.add(VERSION_CACHE_KEY, _new_version(), timeout=None)
            version = _read_version()
    except (RedisError, OSError):
        logger.warning("keyring: cache unreachable, falling back to the database")
        return None
    return version


def _load(version: str | None) -> Keyring:
    signers: dict[str, jose.Signer] = {}
    verifiers: dict[str, jose.Verifier] = {}
    keks = settings.SERVER_SECRETS.key_encryption_keys
    for key in SigningKey.objects.filter(state__in=PUBLISHED_STATES).order_by("created_at"):
        verifiers[key.kid] = jose.Verifier(
            kid=key.kid,
            algorithm=key.algorithm,
            public_key=jose.public_key_from_jwk(key.public_jwk, key.algorithm),
        )
        if key.state != KeyState.ACTIVE:
            continue
        kek = keks.get(key.kek_id)
        if kek is None:
            logger.error("keyring: key %s is wrapped under an unknown KEK %s", key.kid, key.kek_id)
            continue
        try:
            private_key = jose.private_key_unwrap(
                bytes(key.private_key_wrapped), kek=kek, kid=key.kid
            )
        except InvalidTag:
            logger.error("keyring: key %s does not decrypt under KEK %s", key.kid, key.kek_id)
            continue
        signers[key.algorithm] = jose.Signer(
            kid=key.kid, algorithm=key.algorithm, private_key=private_key
        )
    now = time.monotonic()
    return Keyring(
        version=version, loaded_at=now, checked_at=now, signers=signers, verifiers=verifiers
    )


def keyring_current() -> Keyring:
    """The ring for this request: a cache read at most every KEYRING_CHECK_INTERVAL seconds.

    Between checks the parsed ring is used as is. A key change is therefore
    seen by other processes within the interval (default 1 s): a revoked key
    may sign for that long, but it is gone from JWKS and introspection rejects
    its tokens at once, so nothing it signs is ever trusted.
    """
    global _ring
    ring = _ring
    if ring is not None and time.monotonic() - ring.checked_at < settings.KEYRING_CHECK_INTERVAL:
        return ring
    version = _cached_version()
    if ring is not None:
        if version is not None and version == ring.version:
            ring.checked_at = time.monotonic()
            return ring
        if version is None and time.monotonic() - ring.loaded_at < FALLBACK_RELOAD_SECONDS:
            return ring
    with _lock:
        if _ring is ring or _ring is None:
            _ring = _load(version)
        return _ring


def keyring_changed() -> None:
    """Call inside the transaction that changes a key: every process reloads after commit."""
    global _ring
    _ring = None  # this process sees its own change at once

    def bump() -> None:
        global _ring
        _ring = None
        try:
            cache.set(VERSION_CACHE_KEY, _new_version(), timeout=None)
        except (RedisError, OSError):
            logger.warning("keyring: cache unreachable; other processes reload within seconds")

    transaction.on_commit(bump)


def keyring_reset() -> None:
    """Forget the parsed keys of this process (tests, after a database rollback)."""
    global _ring
    _ring = None
