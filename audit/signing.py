"""The audit signing keys: Ed25519, used for checkpoints and export manifests only.

The 32-byte seeds come from ``settings.SERVER_SECRETS.audit_signing_keys``, newest
first (``AUDIT_SIGNING_KEYS``, or the single ``AUDIT_SIGNING_KEY``), and are parsed
once per process. The newest signs; every key in the list verifies, so a rotation
never turns yesterday's checkpoints and exports into failures. Their public halves
are published at ``/.well-known/audit-keys.json``; a key id is the RFC 7638
thumbprint of the public key. Keys are never read from the database: an attacker
who writes to it must not be able to add a key that the verifier trusts.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings

from audit import chain


@lru_cache(maxsize=16)
def _private_key(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def _ring() -> list[Ed25519PrivateKey]:
    return [_private_key(seed) for seed in settings.SERVER_SECRETS.audit_signing_keys]


def audit_private_key() -> Ed25519PrivateKey:
    return _ring()[0]


def audit_public_jwk() -> dict[str, str]:
    return chain.public_jwk(audit_private_key().public_key())


def audit_public_jwks() -> list[dict[str, str]]:
    """Every configured key's public JWK, newest (the signing one) first."""
    return [chain.public_jwk(key.public_key()) for key in _ring()]


def audit_key_id() -> str:
    return audit_public_jwk()["kid"]


def audit_sign(payload: dict[str, Any]) -> str:
    return chain.sign_payload(audit_private_key(), payload)


def audit_verification_keys() -> dict[str, Ed25519PublicKey]:
    """Key id -> public key of every configured key, newest first (the order is the age)."""
    return {jwk["kid"]: chain.public_key_from_jwk(jwk) for jwk in audit_public_jwks()}
