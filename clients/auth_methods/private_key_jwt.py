"""``private_key_jwt`` (RFC 7523 section 2.2, OpenID Connect Core section 9).

The machine keeps a private key and signs a short assertion; we keep only its
public key: up to two registered JWKs (``ClientKey`` rows, each bound to the
server's pepper so a key planted in the database verifies nothing), or a
``jwks_uri`` the machine publishes (fetched by ``core.remote_jwks``: HTTPS,
size and time limits, no private addresses, refetched on an unknown ``kid``
at most once a minute).

The assertion must carry ``iss`` = ``sub`` = the client_id, an ``aud`` naming
the token endpoint or the issuer (or what the endpoint asks instead,
``Presented.assertion_audiences``: the self-rotation endpoint's own URL), an
``exp`` at most five minutes ahead, and a ``jti`` used once until it expires;
its algorithm must be one of ``core.jose.ALGORITHMS`` and the key's own.
Every failure is one reason for the audit trail and the same
``invalid_client`` for the client.

Which assertions are ours: those whose ``iss`` equals their ``sub`` (a
machine speaking for itself), those whose ``iss`` or ``sub`` is the form's
``client_id``, and those that cannot be decoded at all. An assertion from
another issuer about a workload (``iss`` != ``sub``, neither the client_id)
belongs to ``federated_jwt``.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from clients.auth_methods import (
    ASSERTION_PARAMETERS,
    AuthMethod,
    Credentials,
    Presented,
    Verification,
)
from clients.client_assertion import (
    ClientAssertion,
    assertion_audiences,
    assertion_claims_check,
    assertion_header_check,
    assertion_jti_consume,
    assertion_signature_check,
)
from clients.constants import ASSERTION_MAX_LIFETIME
from core import jose, remote_jwks

PRIVATE_KEY_JWT = "private_key_jwt"


@dataclass(frozen=True)
class AssertionCredentials(Credentials):
    assertion: ClientAssertion
    # What ``aud`` must name here; None: the token endpoint's rule (the endpoint or the issuer).
    audiences: frozenset[str] | None = None


def _kid_for_audit(assertion: ClientAssertion) -> dict[str, str]:
    kid = assertion.header.get("kid")
    return {"kid": kid[:128]} if isinstance(kid, str) else {}


class PrivateKeyJWT(AuthMethod):
    name = PRIVATE_KEY_JWT
    label = "Signed assertion with the machine's own key (private_key_jwt)"
    carried_in = ASSERTION_PARAMETERS
    signing_algorithms = jose.ALGORITHMS

    def presents(self, presented: Presented) -> bool:
        assertion = presented.assertion
        if assertion is None:
            return False
        if assertion.parsed is None:
            return True
        iss, sub = assertion.claims.get("iss"), assertion.claims.get("sub")
        return iss == sub or (assertion.client_id is not None and assertion.client_id in (iss, sub))

    def parse(self, presented: Presented) -> AssertionCredentials:
        assertion = presented.assertion
        # The machine is the form's client_id when given (the assertion must then agree),
        # else the assertion's issuer.
        client_id = assertion.client_id or assertion.claim_str("iss")
        if client_id is not None and (len(client_id) > 255 or not client_id.isprintable()):
            client_id = None
        return AssertionCredentials(
            client_id=client_id,
            method=self.name,
            assertion=assertion,
            audiences=presented.assertion_audiences,
        )

    def verify(self, *, credentials, entry, context, now, prefetched) -> Verification:
        assertion: ClientAssertion = credentials.assertion
        details = _kid_for_audit(assertion)
        reason = assertion_header_check(assertion)
        if reason:
            return Verification(reason=reason, details=details)
        if entry is None:
            return Verification(reason="unknown_client", details=details)
        client_id = entry.machine.client_id
        if assertion.claims.get("iss") != client_id or assertion.claims.get("sub") != client_id:
            return Verification(reason="iss_sub_mismatch", details=details)
        if assertion.client_id is not None and assertion.client_id != client_id:
            return Verification(reason="client_id_mismatch", details=details)
        verifier, reason = self._verifier(entry, assertion)
        if verifier is None:
            return Verification(reason=reason, details=details)
        details = {"kid": verifier.kid}
        reason = assertion_claims_check(
            assertion,
            audiences=(
                assertion_audiences() if credentials.audiences is None else credentials.audiences
            ),
            now=now,
            max_lifetime=ASSERTION_MAX_LIFETIME,
        )
        if reason:
            return Verification(reason=reason, details=details)
        jti = assertion.claims["jti"]
        if not assertion_jti_consume(
            issuer=client_id, jti=jti, expires_at=float(assertion.claims["exp"]), now=now
        ):
            return Verification(reason="replayed", details=details)
        return Verification(
            details={"auth_method": self.name, "client_key": verifier.kid}, key_kid=verifier.kid
        )

    def _verifier(self, entry, assertion: ClientAssertion) -> tuple[jose.Verifier | None, str]:
        """The key that verifies the signature, and the reason when none does."""
        kid, alg = assertion.header.get("kid"), assertion.header.get("alg")
        registered = entry.keys
        if registered:
            candidates = [
                verifier
                for verifier in registered
                if verifier.algorithm == alg and (kid is None or verifier.kid == kid)
            ]
            if not candidates:
                return None, "unknown_key"
            verifier = assertion_signature_check(assertion, candidates)
            return verifier, "" if verifier else "bad_signature"
        if entry.jwks_uri:
            try:
                candidate = remote_jwks.jwks_uri_verifier(
                    entry.jwks_uri,
                    kid=kid,
                    alg=alg,
                    allow_private=settings.JWKS_URI_ALLOW_PRIVATE,
                )
            except remote_jwks.RemoteKeysError as exc:
                return None, f"jwks_uri_{exc.reason}"
            verifier = assertion_signature_check(assertion, [candidate])
            return verifier, "" if verifier else "bad_signature"
        return None, "no_registered_key"
