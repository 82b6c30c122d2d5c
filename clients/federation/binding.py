"""The binding of a federation trust to the server secrets.

A trust decides who may act as a machine, so a row planted or edited by
someone holding only the database credentials must authenticate nothing.
Each row carries ``HMAC(K, "mip-trust-v1" 0x00 JSON[uid, client_id, issuer,
audience, subject, condition, jwks])`` where ``K = HMAC(pepper, "mip-federation-
trust/v1")``: a key of its own derived from a pepper (``SECRET_PEPPERS``), so
a trust binding can never pass for a secret digest. The pepper's id is kept on
the row: the newest pepper binds new trusts, every configured pepper verifies.

The JSON array frames the fields unambiguously; the machine's client_id and the
row's ``uid`` are inside, so a row copied to another machine, or one trust's
binding pasted on another row, fails.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from clients.credentials import UnknownPepper, current_pepper_id, pepper_key

_KEY_LABEL = b"mip-federation-trust/v1"
_FORMAT = b"mip-trust-v1"


def _key(pepper_id: str) -> bytes:
    return hmac.digest(pepper_key(pepper_id), _KEY_LABEL, "sha256")


def trust_binding(
    *,
    pepper_id: str,
    uid: str,
    client_id: str,
    issuer: str,
    audience: str,
    subject: str,
    condition: str,
    jwks: str,
) -> str:
    fields = [uid, client_id, issuer, audience, subject, condition, jwks]
    message = _FORMAT + b"\x00" + json.dumps(fields, separators=(",", ":")).encode("utf-8")
    return hmac.new(_key(pepper_id), message, hashlib.sha256).hexdigest()


def trust_binding_new(**fields: str) -> tuple[str, str]:
    """(pepper_id, binding) for a new trust, under the newest pepper."""
    pepper_id = current_pepper_id()
    return pepper_id, trust_binding(pepper_id=pepper_id, **fields)


def trust_binding_holds(*, pepper_id: str, binding: str, **fields: str) -> bool:
    """Whether a row's binding authenticates its fields (constant-time compare)."""
    try:
        expected = trust_binding(pepper_id=pepper_id, **fields)
    except UnknownPepper:
        return False
    return hmac.compare_digest(expected, binding)
