"""The cryptography of notifications: endpoint secrets at rest, outbox MACs, signatures.

- An endpoint's signing secret is AES-256-GCM encrypted under the newest
  ``KEY_ENCRYPTION_KEYS`` entry (all configured ones decrypt), the endpoint's
  uid as associated data, as ``tokens.key_material`` wraps signing keys.
- A delivery row carries an HMAC-SHA256, under a key derived from
  ``SECRET_KEY``, of what it would send and to whom; the dispatcher sends only
  rows whose MAC verifies, so a row inserted or edited by someone holding the
  database alone is never signed and sent.
- A webhook body is signed as ``t=<unix seconds>,v1=<hex>`` with
  ``HMAC-SHA256(secret, "<t>." || body)``: the timestamp lets receivers refuse
  replays of an old delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

from notifications.constants import (
    OUTBOX_MAC_LABEL,
    SIGNATURE_VERSION,
    WEBHOOK_SECRET_AAD_LABEL,
    WEBHOOK_SECRET_BYTES,
    WEBHOOK_SECRET_PREFIX,
)

_NONCE_BYTES = 12


class SecretNotAuthentic(ValueError):
    """The stored secret does not decrypt under any configured KEK for this endpoint."""


def webhook_secret_generate() -> str:
    return WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(WEBHOOK_SECRET_BYTES)


def _aad(uid: str) -> bytes:
    return WEBHOOK_SECRET_AAD_LABEL + b"\x00" + uid.encode("ascii")


def webhook_secret_wrap(secret: str, *, uid: str) -> tuple[bytes, str]:
    """``(nonce || ciphertext, kek_id)`` under the newest key-encryption key."""
    kek_id, kek = next(iter(settings.SERVER_SECRETS.key_encryption_keys.items()))
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(nonce, secret.encode("ascii"), _aad(uid)), kek_id


def webhook_secret_unwrap(wrapped: bytes, *, kek_id: str, uid: str) -> str:
    kek = settings.SERVER_SECRETS.key_encryption_keys.get(kek_id)
    wrapped = bytes(wrapped)
    if kek is None or len(wrapped) <= _NONCE_BYTES:
        raise SecretNotAuthentic("no such key-encryption key or no ciphertext")
    try:
        plain = AESGCM(kek).decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], _aad(uid))
    except InvalidTag:
        raise SecretNotAuthentic("does not decrypt") from None
    return plain.decode("ascii")


def _mac_key() -> bytes:
    return hmac.new(settings.SECRET_KEY.encode("utf-8"), OUTBOX_MAC_LABEL, hashlib.sha256).digest()


def delivery_mac(
    *, dedup_key: str, kind: str, payload: dict[str, Any], channel: str, recipient: str
) -> str:
    """What a delivery will send and to whom, bound to the server (hex)."""
    document = json.dumps(
        [dedup_key, kind, payload, channel, recipient], sort_keys=True, separators=(",", ":")
    )
    return hmac.new(_mac_key(), document.encode("utf-8"), hashlib.sha256).hexdigest()


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Portal-Signature`` header value of ``body`` sent at ``timestamp``."""
    signed = str(timestamp).encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("ascii"), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},{SIGNATURE_VERSION}={digest}"


def webhook_signature_verify(*, secret: str, header: str, body: bytes) -> int | None:
    """The header's timestamp if it signs ``body`` under ``secret`` (receivers do this)."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return None
    expected = webhook_signature(secret=secret, timestamp=timestamp, body=body)
    return timestamp if hmac.compare_digest(expected, header) else None
