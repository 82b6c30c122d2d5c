"""``federated_jwt``: workload identity federation as a client authentication method.

A workload presents the JWT its platform gave it (a GitHub Actions job's OIDC
token, a Kubernetes projected service-account token, ...) as an RFC 7523
``client_assertion``; a federation trust of the machine decides whether it
may act as that machine (``clients.federation``). A machine that allows only
this method has no secret at all.

It shares the form of ``private_key_jwt`` (the same ``client_assertion_type``)
and the two are told apart by the assertion itself: ``private_key_jwt`` is
the machine speaking for itself, so its ``iss`` and ``sub`` are both the
client_id (RFC 7523 section 3, items 1 and 2); a federated token's issuer is
the platform and its subject the workload, never equal.

Without a ``client_id`` the machine is the one whose trust names exactly the
token's issuer and subject (``machine_for_issuer_subject``); the token is not
trusted for that lookup, only for choosing whose trusts to check.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from django.core.cache import cache

from clients.auth_methods import AuthMethod, Credentials, Presented, Verification
from clients.auth_methods.client_secret import client_id_check
from clients.federation.selectors import machine_for_issuer_subject, machine_trusts
from clients.federation.verification import federated_token_verify
from clients.machine_cache import CACHE_ERRORS, MachineAuthEntry
from core import jose
from core.errors import InvalidClient, InvalidRequest

FEDERATED_JWT = "federated_jwt"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class FederatedCredentials(Credentials):
    token: str = field(default="", repr=False)
    parsed: jose.ParsedJWS | None = field(default=None, repr=False, compare=False)


def _assertion(presented: Presented) -> tuple[str, jose.ParsedJWS | None] | None:
    token = presented.value("client_assertion")
    if token is None or presented.value("client_assertion_type") != JWT_BEARER:
        return None
    try:
        return token, jose.jws_parse(token)
    except jose.InvalidJWS:
        return token, None


def is_federated(parsed: jose.ParsedJWS | None) -> bool:
    """A decodable assertion whose ``iss`` and ``sub`` differ: not the client about itself.

    The complement of ``private_key_jwt`` (``iss`` = ``sub`` = client_id, or an
    assertion it cannot decode), so one request is never claimed by both.
    """
    return parsed is not None and parsed.claims.get("iss") != parsed.claims.get("sub")


def _jti_use(*, key: str, expires_at: float) -> bool:
    """Record one use of a token; False when it was used before (a replay).

    One ``cache.add``: of two concurrent uses, one wins. Without the cache the
    token is refused rather than risk a replay.
    """
    timeout = max(1, math.ceil(expires_at - time.time()))
    try:
        return bool(cache.add(f"clients:federated-jti:{key}", 1, timeout))
    except CACHE_ERRORS:
        return False


class FederatedJwt(AuthMethod):
    name = FEDERATED_JWT
    label = "Workload identity federation: an external OIDC token (federated_jwt)"
    signing_algorithms = jose.ALGORITHMS

    def presents(self, presented: Presented) -> bool:
        found = _assertion(presented)
        return found is not None and is_federated(found[1])

    def parse(self, presented: Presented) -> FederatedCredentials:
        if presented.authorization is not None:
            raise InvalidRequest("use one client authentication method, not two")
        found = _assertion(presented)
        if found is None:
            raise InvalidClient("client authentication required")
        client_id = presented.value("client_id")
        if client_id is not None:
            client_id_check(client_id)
        return FederatedCredentials(
            client_id=client_id, method=self.name, token=found[0], parsed=found[1]
        )

    def client_id_for(self, credentials: FederatedCredentials) -> str | None:
        if credentials.client_id is not None:
            return credentials.client_id
        claims = credentials.parsed.claims if credentials.parsed else {}
        issuer, subject = claims.get("iss"), claims.get("sub")
        if not isinstance(issuer, str) or not isinstance(subject, str) or not subject:
            return None
        return machine_for_issuer_subject(issuer=issuer, subject=subject)

    def verify(
        self,
        *,
        credentials: FederatedCredentials,
        entry: MachineAuthEntry | None,
        context,
        now: float,
    ) -> Verification:
        if entry is None:
            return Verification(reason="unknown_client")
        verdict = federated_token_verify(
            token=credentials.token,
            trusts=machine_trusts(client_id=entry.machine.client_id),
            now=now,
            jti_use=_jti_use,
        )
        return Verification(reason=verdict.reason, details=verdict.details)
