"""The process's parsed keys: loaded once, reloaded only when the keys change.

Parsing and decrypting a private key costs far more than signing with it, so
each process keeps the key objects in memory. Every change to a key bumps a
version in the shared cache (after commit); a request reads that one cache
value and reloads from the database only when it differs. When the cache is
unreachable, the ring is reloaded from the database at most every few
seconds, so tokens are still issued (docs/design.md, decision 8).

Trust decisions that must hold on every process at once (a revoked key) are
also checked against the database by introspection; the ring is for speed.

A row is trusted only if it is authentic (issue 10: the attacker may write to
the database but holds no KEK). Every load decrypts every published key,
pending ones included, with the row's kid and algorithm as AES-GCM associated
data, and derives the public key from the private one: the stored
``public_jwk`` column is never read as truth. A row that fails is left out of
the ring (it is not published, never signs, never verifies) and reported as a
problem: ``/readyz`` names it, the log says which kid, and a ``key.rejected``
audit event records it once.
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
from django.db import DatabaseError, transaction
from redis.exceptions import RedisError

from clients.cache_outcome import cache_failure_report
from core import jose, metrics
from tokens import key_material
from tokens.choices import KeyProblemReason, KeyState
from tokens.constants import PUBLISHED_STATES
from tokens.models import SigningKey

logger = logging.getLogger(__name__)

VERSION_CACHE_KEY = "tokens:keyring:version"
# What the console and the CLI say when the version bump after a key change failed:
# processes that can still read the old version keep their parsed ring.
KEYRING_NOT_TOLD = (
    "The key change is saved, but the cache could not be told: other web processes may "
    "keep signing and verifying with the previous keys until they reach the cache. "
    "Repeat the change once the cache answers."
)
# Without a reachable cache, how stale the ring may get before a database reload.
FALLBACK_RELOAD_SECONDS = 5.0

# The clock of the reload intervals; a module attribute so that tests can move
# it (time-machine does not move ``time.monotonic``).
monotonic = time.monotonic


class NoSigningKey(LookupError):
    """No active key can sign: first-run setup or a rotation is missing."""


class KeyNotAuthentic(ValueError):
    """A signing-key row whose private key does not authenticate its identity under a KEK."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class KeyProblem:
    """A published row the ring distrusts, by kid: what readiness and the audit report."""

    kid: str
    reason: str
    trusted: bool  # True only when the key is authentic and just its public_jwk column differs


def signing_key_unwrap(*, key: SigningKey, keks: dict[str, bytes]) -> jose.PrivateKey:
    """The private key of an authentic row, or ``KeyNotAuthentic`` with the reason.

    Authentic means: it decrypts under the row's KEK with the row's kid and
    algorithm as associated data, is a key of that algorithm, and the kid is
    the RFC 7638 thumbprint of its public key. Every path that trusts or
    re-encrypts a private key goes through here, so a forged row is never
    laundered by a rewrap.
    """
    kek = keks.get(key.kek_id)
    if kek is None:
        raise KeyNotAuthentic(KeyProblemReason.UNKNOWN_KEK)
    try:
        private_key = key_material.private_key_unwrap(
            bytes(key.private_key_wrapped), kek=kek, kid=key.kid, algorithm=key.algorithm
        )
    except InvalidTag as exc:
        raise KeyNotAuthentic(KeyProblemReason.NOT_AUTHENTIC) from exc
    if not key_material.private_key_fits(private_key, key.algorithm):
        raise KeyNotAuthentic(KeyProblemReason.WRONG_KEY_TYPE)
    if jose.jwk_thumbprint(jose.public_jwk(private_key.public_key())) != key.kid:
        raise KeyNotAuthentic(KeyProblemReason.KID_MISMATCH)
    return private_key


@dataclass
class Keyring:
    version: str | None
    loaded_at: float
    checked_at: float
    signers: dict[str, jose.Signer] = field(default_factory=dict)  # by algorithm
    verifiers: dict[str, jose.Verifier] = field(default_factory=dict)  # by kid
    # The JWKS members of the trusted keys (derived public halves), oldest first.
    jwks: tuple[dict[str, str], ...] = ()
    problems: tuple[KeyProblem, ...] = ()

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
        metrics.cache_error(operation="keyring_version_read")
        return None
    return version


def _load(version: str | None) -> Keyring:
    signers: dict[str, jose.Signer] = {}
    verifiers: dict[str, jose.Verifier] = {}
    jwks: list[dict[str, str]] = []
    problems: list[KeyProblem] = []
    keks = settings.SERVER_SECRETS.key_encryption_keys
    for key in SigningKey.objects.filter(state__in=PUBLISHED_STATES).order_by("created_at", "id"):
        try:
            private_key = signing_key_unwrap(key=key, keks=keks)
        except KeyNotAuthentic as exc:
            problems.append(KeyProblem(kid=key.kid, reason=exc.reason, trusted=False))
            continue
        public_key = private_key.public_key()
        public = jose.public_jwk(public_key)
        if key.public_jwk != public:
            problems.append(
                KeyProblem(kid=key.kid, reason=KeyProblemReason.PUBLIC_JWK_MISMATCH, trusted=True)
            )
        verifiers[key.kid] = jose.Verifier(
            kid=key.kid, algorithm=key.algorithm, public_key=public_key
        )
        jwks.append({**public, "kid": key.kid, "alg": key.algorithm, "use": "sig"})
        if key.state == KeyState.ACTIVE:
            signers[key.algorithm] = jose.Signer(
                kid=key.kid, algorithm=key.algorithm, private_key=private_key
            )
    if problems:
        _problems_report(problems)
    now = monotonic()
    return Keyring(
        version=version,
        loaded_at=now,
        checked_at=now,
        signers=signers,
        verifiers=verifiers,
        jwks=tuple(jwks),
        problems=tuple(problems),
    )


# (kid, reason) pairs this process has logged and recorded: the probe reloads
# every few seconds, and one warning per process is enough for the log.
_reported: set[tuple[str, str]] = set()


def _problems_report(problems: list[KeyProblem]) -> None:
    """Log each problem once per process; record its audit event once, ever."""
    # A service writes the event; imported here because services import this module.
    from tokens.services import signing_key_problem_record

    for problem in problems:
        if (problem.kid, problem.reason) in _reported:
            continue
        # %r: the kid column is attacker-writable text; no key material is logged.
        logger.warning(
            "keyring: signing key %r is %s: %s",
            problem.kid,
            "trusted under its derived public key" if problem.trusted else "not trusted",
            problem.reason,
        )
        try:
            signing_key_problem_record(
                kid=problem.kid, reason=problem.reason, trusted=problem.trusted
            )
        except DatabaseError:
            # The ring must still load; the next load tries again.
            logger.exception("keyring: could not record the problem of key %r", problem.kid)
            continue
        _reported.add((problem.kid, problem.reason))


def keyring_current() -> Keyring:
    """The ring for this request: a cache read at most every KEYRING_CHECK_INTERVAL seconds.

    Between checks the parsed ring is used as is. A key change is therefore
    seen by other processes within the interval (default 1 s): a revoked key
    may sign for that long, but it is gone from JWKS and introspection rejects
    its tokens at once, so nothing it signs is ever trusted.
    """
    global _ring
    ring = _ring
    if ring is not None and monotonic() - ring.checked_at < settings.KEYRING_CHECK_INTERVAL:
        return ring
    version = _cached_version()
    if ring is not None:
        if version is not None and version == ring.version:
            ring.checked_at = monotonic()
            return ring
        if version is None and monotonic() - ring.loaded_at < FALLBACK_RELOAD_SECONDS:
            return ring
    with _lock:
        if _ring is ring or _ring is None:
            _ring = _load(version)
        return _ring


def keyring_reload() -> Keyring:
    """Load the ring from the database now and use it from here on (the readiness probe).

    A row written straight into the database bumps no version, so without
    this a process would report (and audit) it only at its next key change;
    the probe reloads, so ``/readyz`` names such a row within one probe
    interval. One query and one AES-GCM decryption per published key.
    """
    global _ring
    with _lock:
        ring = _ring
        _ring = _load(ring.version if ring is not None else _cached_version())
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
            metrics.cache_error(operation="keyring_version_bump")
            cache_failure_report(message=KEYRING_NOT_TOLD)

    transaction.on_commit(bump)


def keyring_reset() -> None:
    """Forget the parsed keys of this process (tests, after a database rollback)."""
    global _ring
    _ring = None
    _reported.clear()
