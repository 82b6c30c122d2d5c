"""Client secrets: generation, keyed hashing, and when a secret is usable.

Secrets are 256 random bits generated here, never chosen by a client, so a
single HMAC-SHA256 under a server-side pepper is enough (NIST SP 800-63B
5.1.2.2): a slow password hasher would only hand attackers a denial of
service. The pepper id is stored with each digest so peppers can rotate: the
newest pepper hashes new secrets, every configured pepper verifies.

A digest binds its machine: it covers the machine's client_id as well as the
secret, so a ``clientsecret`` row moved to another machine (one UPDATE by
someone holding the database credentials but not the peppers) matches no
secret there. Two formats, named by ``ClientSecret.digest_version``:

- 2: ``HMAC(pepper, "mip-cs-v2" 0x00 client_id 0x00 secret)``, every new secret;
- 1: ``HMAC(pepper, "mip-cs-v1w" 0x00 client_id 0x00 hex(HMAC(pepper, secret)))``,
  the unbound digests of earlier releases, bound to their machine by
  migration ``clients.0002`` without knowing the secret. They verify with
  one more HMAC and need no re-digesting (the secret would be needed for that,
  and re-digesting on use would bind a row an attacker had moved to the
  machine it was moved to).

The first field keeps the formats apart: flipping a row's version does not
turn one format's input into the other's. A client_id never holds NUL (RFC 6749
VSCHAR, checked before any lookup), so the framing is unambiguous.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings

from clients.constants import (
    DIGEST_VERSION,
    MAX_SECRET_AGE,
    SECRET_DISPLAY_PREFIX_LENGTH,
    SECRET_PREFIX,
    SECRET_RANDOM_BYTES,
)


class UnknownPepper(LookupError):
    """A digest names a pepper that is no longer configured."""


class UnknownDigestVersion(LookupError):
    """A row names a digest format this release does not know: it verifies nothing."""


@dataclass(frozen=True)
class GeneratedSecret:
    """A new secret: ``raw`` goes to the caller once, the rest is stored."""

    raw: str
    digest: str
    digest_version: int
    pepper_id: str
    display_prefix: str
    last_four: str

    def __repr__(self) -> str:  # never print the raw value by accident
        return f"GeneratedSecret({self.display_prefix}…{self.last_four}, pepper={self.pepper_id})"


def current_pepper_id() -> str:
    return next(iter(settings.SERVER_SECRETS.peppers))


def pepper_key(pepper_id: str) -> bytes:
    """The pepper named ``pepper_id``; ``UnknownPepper`` if it is no longer configured."""
    try:
        return settings.SERVER_SECRETS.peppers[pepper_id]
    except KeyError as exc:
        raise UnknownPepper(pepper_id) from exc


def _hmac_hex(pepper: bytes, *fields: bytes) -> str:
    return hmac.new(pepper, b"\x00".join(fields), hashlib.sha256).hexdigest()


def secret_digest_legacy_bind(*, unbound_digest: str, client_id: str, pepper: bytes) -> str:
    """A version-1 digest from an earlier release's ``HMAC(pepper, secret)``."""
    return _hmac_hex(pepper, b"mip-cs-v1w", client_id.encode("utf-8"), unbound_digest.encode())


def secret_digest(
    *, secret: str, client_id: str, pepper_id: str, version: int = DIGEST_VERSION
) -> str:
    """The digest of ``secret`` for the machine ``client_id`` under the named pepper, hex."""
    pepper = pepper_key(pepper_id)
    if "\x00" in client_id:
        raise ValueError("a client_id never holds NUL")
    if version == 2:
        return _hmac_hex(pepper, b"mip-cs-v2", client_id.encode("utf-8"), secret.encode("utf-8"))
    if version == 1:
        unbound = hmac.new(pepper, secret.encode("utf-8"), hashlib.sha256).hexdigest()
        return secret_digest_legacy_bind(unbound_digest=unbound, client_id=client_id, pepper=pepper)
    raise UnknownDigestVersion(version)


def _canonical(value: Mapping) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def client_key_binding(*, client_id: str, public_jwk: Mapping, pepper_id: str) -> str:
    """The HMAC that binds a registered public key (its JWK, kid included) to its machine.

    ``HMAC(pepper, "mip-ck-v1" 0x00 client_id 0x00 canonical JSON of the JWK)``:
    a key row planted, edited or moved in the database fails it.
    """
    if "\x00" in client_id:
        raise ValueError("a client_id never holds NUL")
    return _hmac_hex(
        pepper_key(pepper_id), b"mip-ck-v1", client_id.encode(), _canonical(public_jwk)
    )


def jwks_uri_binding(*, client_id: str, jwks_uri: str, pepper_id: str) -> str:
    """The HMAC that binds a machine's ``jwks_uri`` to it, so only a URL we saved is fetched."""
    if "\x00" in client_id or "\x00" in jwks_uri:
        raise ValueError("no NUL in a client_id or a URL")
    return _hmac_hex(pepper_key(pepper_id), b"mip-ju-v1", client_id.encode(), jwks_uri.encode())


def binding_verify(expected: str, stored: str) -> bool:
    return hmac.compare_digest(expected.encode(), stored.encode())


def secret_generate(*, client_id: str) -> GeneratedSecret:
    """A new secret for the machine ``client_id`` (its digest binds that machine)."""
    raw = SECRET_PREFIX + secrets.token_urlsafe(SECRET_RANDOM_BYTES)
    pepper_id = current_pepper_id()
    return GeneratedSecret(
        raw=raw,
        digest=secret_digest(secret=raw, client_id=client_id, pepper_id=pepper_id),
        digest_version=DIGEST_VERSION,
        pepper_id=pepper_id,
        display_prefix=raw[:SECRET_DISPLAY_PREFIX_LENGTH],
        last_four=raw[-4:],
    )


def secret_effective_expiry(
    *, created_at: datetime, expires_at: datetime | None, max_secret_age: int | None
) -> datetime | None:
    """When a secret stops working: its own expiry or the machine's maximum age, first.

    ``max_secret_age`` is the machine's policy: None takes the default
    (``SECRET_MAX_AGE``), 0 means no maximum.
    """
    if max_secret_age is None:
        max_secret_age = settings.SECRET_MAX_AGE
    candidates = [expires_at] if expires_at is not None else []
    if max_secret_age:
        # Clamped: a row written before the services bounded the age must not
        # overflow ``timedelta`` and turn every authentication into a 500.
        candidates.append(created_at + timedelta(seconds=min(max_secret_age, MAX_SECRET_AGE)))
    return min(candidates) if candidates else None


def secret_is_usable(
    *,
    created_at: datetime,
    expires_at: datetime | None,
    revoked_at: datetime | None,
    max_secret_age: int | None,
    now: datetime,
) -> bool:
    if revoked_at is not None:
        return False
    expiry = secret_effective_expiry(
        created_at=created_at, expires_at=expires_at, max_secret_age=max_secret_age
    )
    return expiry is None or expiry > now
