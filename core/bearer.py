"""What each resource server of ours checks in a verified access token's claims.

The audit API and ``/metrics`` admit machines by a scope issued for their own
audience (RFC 9068 section 4: a token minted for another resource server must
not open this one). The signature, expiry and revocation are checked before
(``tokens.selectors.token_verify``); this is the authorisation that follows.
"""

from __future__ import annotations

from typing import Any


def claims_grant(claims: dict[str, Any], *, scope: str, audience: str) -> bool:
    """True when ``scope`` is in the space-separated ``scope`` and ``audience`` in ``aud``.

    ``aud`` is one string or a list of strings (RFC 7519 section 4.1.3); any
    other shape grants nothing.
    """
    granted = claims.get("scope")
    if not isinstance(granted, str) or scope not in granted.split():
        return False
    aud = claims.get("aud")
    if isinstance(aud, str):
        return aud == audience
    if isinstance(aud, list):
        return any(isinstance(item, str) and item == audience for item in aud)
    return False
