"""Client secrets: generation, keyed hashing, and when a secret is usable.

Secrets are 256 random bits generated here, never chosen by a client, so a
single HMAC-SHA256 under a server-side pepper is enough (NIST SP 800-63B
5.1.2.2): a slow password hasher would only hand attackers a denial of
service. The pepper id is stored with each digest so peppers can rotate: the
newest pepper hashes new secrets, every configured pepper verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings

from clients.constants import (
    MAX_SECRET_AGE,
    SECRET_DISPLAY_PREFIX_LENGTH,
    SECRET_PREFIX,
    SECRET_RANDOM_BYTES,
)


class UnknownPepper(LookupError):
    """A digest names a pepper that is no longer configured."""


@dataclass(frozen=True)
class GeneratedSecret:
    """A new secret: ``raw`` goes to the caller once, the rest is stored."""

    raw: str
    digest: str
    pepper_id: str
    display_prefix: str
    last_four: str

    def __repr__(self) -> str:  # never print the raw value by accident
        return f"GeneratedSecret({self.display_prefix}…{self.last_four}, pepper={self.pepper_id})"


def current_pepper_id() -> str:
    return next(iter(settings.SERVER_SECRETS.peppers))


def secret_digest(*, secret: str, pepper_id: str) -> str:
    """HMAC-SHA256 of the secret under the named pepper, hex."""
    try:
        pepper = settings.SERVER_SECRETS.peppers[pepper_id]
    except KeyError as exc:
        raise UnknownPepper(pepper_id) from exc
    return hmac.new(pepper, secret.encode("utf-8"), hashlib.sha256).hexdigest()


def secret_generate() -> GeneratedSecret:
    raw = SECRET_PREFIX + secrets.token_urlsafe(SECRET_RANDOM_BYTES)
    pepper_id = current_pepper_id()
    return GeneratedSecret(
        raw=raw,
        digest=secret_digest(secret=raw, pepper_id=pepper_id),
        pepper_id=pepper_id,
        display_prefix=raw[:SECRET_DISPLAY_PREFIX_LENGTH],
        last_four=raw[-4:],
    )


def secret_effective_expiry(
    *, created_at: datetime, expires_at: datetime | None, max_secret_age: int | None
) -> datetime | None:
    """When a secret stops working: its own expiry or the machine's maximum age, first."""
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
