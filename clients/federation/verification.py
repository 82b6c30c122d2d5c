"""Checking an external token (a workload's OIDC JWT) against a machine's federation trusts.

The order is fixed so that nothing the token says is believed before its
signature is checked, and nothing costly is done for a token no trust names:

1. the token's ``iss`` must equal, character for character, the issuer of one
   of the machine's trusts (authentic ones: ``clients.federation.binding``);
2. its header must pass ``clients.client_assertion``'s check: an algorithm of
   ``core.jose``'s allow-list (never ``none``, never HMAC), no ``crit``;
3. the key named by ``kid`` comes from the trust's pasted JWKS or from the
   issuer's discovery document (``core.remote_jwks``: cached, refetched on an
   unknown kid at most once a minute, fail closed when the issuer is
   unreachable), and verifies only in the one algorithm it is bound to, so an
   HS256 token keyed with the issuer's public key verifies nothing;
4. then the claims, with the checks ``private_key_jwt`` uses
   (``assertion_claims_check``): ``exp`` (required, at most
   ``MAX_EXTERNAL_TOKEN_LIFETIME`` ahead), ``nbf`` and ``iat`` (not in the
   future), ``aud`` containing the trust's audience; then the trust's exact
   ``sub`` if it names one, and its CEL condition;
5. last, the token is used once (``assertion_jti_consume``, the replay cache
   shared with ``private_key_jwt``): by its ``jti``, or, for a token without
   one (Kubernetes before 1.30), by its digest, until it expires.

Every refusal carries a short reason for the audit trail; the client hears
the same ``invalid_client`` whatever it is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from clients.client_assertion import (
    ClientAssertion,
    assertion_claims_check,
    assertion_header_check,
    assertion_jti_consume,
    assertion_signature_check,
)
from clients.federation.conditions import condition_holds
from clients.federation.selectors import CachedTrust
from core import jose, remote_jwks

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


def _audit_value(value: Any) -> str:
    if not isinstance(value, str):
        return "" if value is None else type(value).__name__
    return value[:_AUDIT_VALUE_MAX]


def claims_reason(assertion: ClientAssertion, *, trust: CachedTrust, now: float) -> str:
    """Why the (signature-checked) claims do not satisfy ``trust``; empty when they do."""
    reason = assertion_claims_check(
        assertion,
        audiences=(trust.audience,),
        now=now,
        max_lifetime=MAX_EXTERNAL_TOKEN_LIFETIME,
    )
    # A token without a jti is remembered by its digest instead (replay_jti).
    if reason == "jti_missing" and "jti" not in assertion.claims:
        reason = ""
    if reason:
        return reason
    if trust.subject and assertion.claims.get("sub") != trust.subject:
        return "subject_mismatch"
    if trust.condition and not condition_holds(trust.condition, assertion.claims):
        return "condition_false"
    return ""


def replay_jti(assertion: ClientAssertion) -> str:
    """What a token is remembered by: its jti, or the digest of the whole token without one."""
    jti = assertion.claims.get("jti")
    if isinstance(jti, str) and jti:
        return jti
    return "sha256:" + hashlib.sha256(assertion.raw.encode("ascii")).hexdigest()


def _verifiers(trust: CachedTrust, assertion: ClientAssertion) -> list[jose.Verifier]:
    kid, alg = assertion.header.get("kid"), assertion.header.get("alg")
    if trust.jwks:
        try:
            keyset = remote_jwks.keyset_from_json(trust.jwks)
        except ValueError as exc:  # cannot happen for a bound row: checked when saved
            raise remote_jwks.RemoteKeysError("pasted_jwks_unusable") from exc
        if kid is None:  # no kid: every pasted key of the header's algorithm
            return [v for (_, a), v in keyset.verifiers.items() if a == alg]
        verifier = keyset.verifier(kid=kid, alg=alg)
        if verifier is None:
            raise remote_jwks.RemoteKeysError("unknown_kid")
        return [verifier]
    return [
        remote_jwks.issuer_verifier(
            trust.issuer,
            kid=kid,
            alg=alg,
            allow_private=settings.FEDERATION_ALLOW_PRIVATE_ISSUERS,
        )
    ]


def federated_assertion_verify(
    *, assertion: ClientAssertion, trusts: tuple[CachedTrust, ...], now: float
) -> FederatedVerdict:
    """Whether ``assertion`` authenticates under one of ``trusts`` (a machine's), and why not."""
    issuer = assertion.claims.get("iss")
    details: dict[str, Any] = {
        "external_iss": _audit_value(issuer),
        "external_sub": _audit_value(assertion.claims.get("sub")),
        "external_jti": _audit_value(assertion.claims.get("jti")),
    }
    reason = assertion_header_check(assertion)
    if assertion.parsed is None:
        return FederatedVerdict(reason=reason)
    if not isinstance(issuer, str):
        return FederatedVerdict(reason="iss_missing", details=details)
    candidates = [trust for trust in trusts if trust.issuer == issuer]
    if not candidates:
        return FederatedVerdict(reason="no_trust_for_issuer", details=details)
    authentic = [trust for trust in candidates if trust.authentic]
    if not authentic:
        return FederatedVerdict(
            reason="trust_not_authentic", details={**details, "trust_id": candidates[0].uid}
        )
    if reason:
        return FederatedVerdict(reason=reason, details=details)
    for trust in authentic:
        try:
            verifiers = _verifiers(trust, assertion)
        except remote_jwks.RemoteKeysError as exc:
            reason = (
                exc.reason
                if exc.reason.startswith("unknown_kid")
                else f"issuer_keys_unavailable:{exc.reason}"
            )
            continue
        if assertion_signature_check(assertion, verifiers) is None:
            reason = "bad_signature"
            continue
        reason = claims_reason(assertion, trust=trust, now=now)
        if reason:
            continue
        trust_details = {**details, "trust_id": trust.uid}
        consumed = assertion_jti_consume(
            issuer=issuer,
            jti=replay_jti(assertion),
            expires_at=float(assertion.claims["exp"]),
            now=now,
        )
        if not consumed:
            return FederatedVerdict(reason="replayed", trust=trust, details=trust_details)
        return FederatedVerdict(reason="", trust=trust, details=trust_details)
    return FederatedVerdict(reason=reason, details={**details, "trust_id": authentic[-1].uid})
