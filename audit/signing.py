"""The audit signing key: Ed25519, used for checkpoints and export manifests only.

The 32-byte seed comes from ``settings.SERVER_SECRETS.audit_signing_key`` and
is parsed once per process. Its public half is published as a JWKS at
``/.well-known/audit-keys.json``; the key id is its RFC 7638 thumbprint.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from audit import chain


@lru_cache(maxsize=4)
def _private_key(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def audit_private_key() -> Ed25519PrivateKey:
    return _private_key(settings.SERVER_SECRETS.audit_signing_key)


def audit_public_jwk() -> dict[str, str]:
    return chain.public_jwk(audit_private_key().public_key())


def audit_key_id() -> str:
    return audit_public_jwk()["kid"]


def audit_sign(payload: dict[str, Any]) -> str:
    return chain.sign_payload(audit_private_key(), payload)


def audit_verification_keys() -> dict[str, Any]:
    """Key id -> public key, for checking signatures made by this portal."""
    public_key = audit_private_key().public_key()
    return {audit_key_id(): public_key}
