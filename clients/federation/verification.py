"""Checking an external token (a workload's OIDC JWT) against a machine's federation trusts.

The order is fixed so that nothing the token says is believed before its
signature is checked, and nothing costly is done for a token no trust names:

1. the token's ``iss`` must equal, character for character, the issuer of one
   of the machine's trusts (authentic ones: ``clients.federation.binding``);
2. its ``alg`` must be on ``core.jose``'s allow-list (never ``none``, never
   HMAC) and equal to the algorithm the key named by ``kid`` is bound to, so
   an HS256 token keyed with the issuer's public key verifies nothing;
3. the key comes from the trust's pasted JWKS or from the issuer's discovery
   document (``core.remote_jwks``: cached, refetched on an unknown kid at most
   once a minute, fail closed when the issuer is unreachable);
4. then the claims: ``exp`` (required, not past, at most
   ``MAX_EXTERNAL_TOKEN_LIFETIME`` ahead), ``nbf`` and ``iat`` (not in the
   future), ``aud`` containing the trust's audience, the trust's exact
   ``sub`` if it names one, and its CEL condition;
5. last, the token is used once: its ``jti`` (or, for a token without one,
   its digest) is recorded until it expires, and a second presentation is
   refused (``replay``).

Every refusal carries a short reason for the audit trail; the client hears
the same ``invalid_client`` whatever it is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from clients.federation.conditions import condition_holds
from clients.federation.selectors import CachedTrust
from core import jose, remote_jwks

# Seconds of clock difference allowed with the issuer.
CLOCK_LEEWAY = 60
# A token valid for longer than this ahead is refused: its jti would have to be
# remembered that long. Kubernetes projected tokens default to one hour, GitHub's to minutes.
MAX_EXTERNAL_TOKEN_LIFETIME = 24 * 3600
# Longest claim value copied into the audit trail.
_AUDIT_VALUE_MAX = 255


@dataclass(frozen=True)
class FederatedVerdict:
    """``reason`` empty on success; ``trust`` the trust that admitted the token.

    ``details`` go into the audit event (token.issued or token.denied): the
    external token's ``iss``, ``sub`` and ``jti`` and the trust's id, never the token.
    """

    reason: str
    trust: CachedTrust | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    jti_key: str = ""
    expires_at: float = 0.0


def _audit_value(value: Any) -> str:
    if not isinstance(value, str):
        return "" if value is None else type(value).__name__
    return value[:_AUDIT_VALUE_MAX]


def _number(value: Any) -> float | None:
    # bool is an int in Python, not a NumericDate (RFC 7519 section 2).
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _audiences(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return []


def claims_reason(claims: Mapping[str, Any], *, trust: CachedTrust, now: float) -> str:
    """Why the (signature-checked) claims do not satisfy ``trust``; empty when they do."""
    exp = _number(claims.get("exp"))
    if exp is None:
        return "exp_missing"
    if now >= exp + CLOCK_LEEWAY:
        return "expired"
    if exp - now > MAX_EXTERNAL_TOKEN_LIFETIME:
        return "exp_too_far"
    if "nbf" in claims:
        nbf = _number(claims["nbf"])
        if nbf is None or nbf > now + CLOCK_LEEWAY:
            return "not_yet_valid"
    if "iat" in claims:
        iat = _number(claims["iat"])
        if iat is None or iat > now + CLOCK_LEEWAY or iat > exp:
            return "iat_invalid"
    if trust.audience not in _audiences(claims.get("aud")):
        return "wrong_audience"
    if trust.subject and claims.get("sub") != trust.subject:
        return "subject_mismatch"
    if trust.condition and not condition_holds(trust.condition, claims):
        return "condition_false"
    return ""


def _verifier_for(trust: CachedTrust, parsed: jose.ParsedJWS) -> jose.Verifier:
    kid, alg = parsed.header.get("kid"), parsed.header.get("alg")
    if trust.jwks:
        try:
            verifier = remote_jwks.keyset_from_json(trust.jwks).verifier(kid=kid, alg=alg)
        except ValueError as exc:  # cannot happen for a bound row: checked when saved
            raise remote_jwks.RemoteKeysError("pasted_jwks_unusable") from exc
        if verifier is None:
            raise remote_jwks.RemoteKeysError("unknown_kid")
        return verifier
    return remote_jwks.issuer_verifier(
        trust.issuer,
        kid=kid,
        alg=alg,
        allow_private=settings.FEDERATION_ALLOW_PRIVATE_ISSUERS,
    )


def replay_key(*, issuer: str, jti: Any, token: str) -> str:
    """What a token is remembered by: its issuer and jti, or its digest without a jti."""
    has_jti = isinstance(jti, str) and jti
    material = f"jti\x00{issuer}\x00{jti}" if has_jti else "sha256\x00" + token
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def federated_token_verify(
    *,
    token: str,
    trusts: tuple[CachedTrust, ...],
    now: float,
    jti_use: Callable[..., bool],
) -> FederatedVerdict:
    """Whether ``token`` authenticates under one of ``trusts`` (a machine's), and why not.

    ``jti_use(key=..., expires_at=...)`` records a token's use and says
    whether it was the first (the shared replay cache).
    """
    try:
        parsed = jose.jws_parse(token)
    except jose.InvalidJWS:
        return FederatedVerdict(reason="malformed_assertion")
    claims = parsed.claims
    issuer = claims.get("iss")
    details: dict[str, Any] = {
        "external_iss": _audit_value(issuer),
        "external_sub": _audit_value(claims.get("sub")),
        "external_jti": _audit_value(claims.get("jti")),
    }
    if not isinstance(issuer, str):
        return FederatedVerdict(reason="iss_missing", details=details)
    candidates = [trust for trust in trusts if trust.issuer == issuer]
    if not candidates:
        return FederatedVerdict(reason="no_trust_for_issuer", details=details)
    authentic = [trust for trust in candidates if trust.authentic]
    if not authentic:
        return FederatedVerdict(
            reason="trust_not_authentic",
            details={**details, "trust_id": candidates[0].uid},
        )
    if parsed.header.get("alg") not in jose.ALGORITHMS:
        return FederatedVerdict(reason="alg_not_allowed", details=details)
    reason = ""
    for trust in authentic:
        trust_details = {**details, "trust_id": trust.uid}
        try:
            jose.jws_verify(parsed, {parsed.header.get("kid"): _verifier_for(trust, parsed)})
        except remote_jwks.RemoteKeysError as exc:
            reason = (
                exc.reason
                if exc.reason.startswith("unknown_kid")
                else f"issuer_keys_unavailable:{exc.reason}"
            )
            continue
        except jose.InvalidJWS:
            reason = "bad_signature"
            continue
        reason = claims_reason(claims, trust=trust, now=now)
        if reason:
            continue
        expires_at = float(claims["exp"]) + CLOCK_LEEWAY
        key = replay_key(issuer=issuer, jti=claims.get("jti"), token=token)
        if not jti_use(key=key, expires_at=expires_at):
            return FederatedVerdict(reason="replay", trust=trust, details=trust_details)
        return FederatedVerdict(
            reason="", trust=trust, details=trust_details, jti_key=key, expires_at=expires_at
        )
    return FederatedVerdict(reason=reason, details={**details, "trust_id": authentic[-1].uid})
