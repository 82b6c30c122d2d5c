"""``federated_jwt``: workload identity federation as a client authentication method.

A workload presents the JWT its platform gave it (a GitHub Actions job's OIDC
token, a Kubernetes projected service-account token, ...) as an RFC 7523
``client_assertion``; a federation trust of the machine decides whether it
may act as that machine (``clients.federation``). A machine that allows only
this method has no secret at all.

It shares the form of ``private_key_jwt`` (the same ``client_assertion_type``,
read once by ``clients.client_assertion``) and the two are told apart by the
assertion itself: ``private_key_jwt`` is the machine speaking for itself, so
its ``iss`` and ``sub`` are both the client_id (RFC 7523 section 3, items 1
and 2), and it also takes the assertions nobody can decode; a federated
token's issuer is the platform and its subject the workload, never equal.

Without a ``client_id`` the machine is the one whose trust names exactly the
token's issuer and subject (``machine_for_issuer_subject``); the token is not
trusted for that lookup, only for choosing whose trusts to check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clients.auth_methods import (
    ASSERTION_PARAMETERS,
    AuthMethod,
    Credentials,
    Presented,
    Verification,
)
from clients.auth_methods.client_secret import client_id_check
from clients.client_assertion import ClientAssertion
from clients.federation.selectors import (
    machine_for_issuer_subject,
    machine_trusts,
    trusts_cache_key,
)
from clients.federation.verification import federated_assertion_verify
from clients.machine_cache import MachineAuthEntry, machine_generation_key
from core import jose
from core.errors import InvalidRequest

FEDERATED_JWT = "federated_jwt"


@dataclass(frozen=True)
class FederatedCredentials(Credentials):
    assertion: ClientAssertion | None = field(default=None, repr=False, compare=False)


def is_federated(assertion: ClientAssertion) -> bool:
    """A decodable assertion that is not the client speaking for itself.

    The exact complement of ``private_key_jwt``'s ``presents``: that method
    takes an undecodable assertion, one whose ``iss`` equals its ``sub``, and
    one naming the form's ``client_id`` as ``iss`` or ``sub``; every other is a
    workload's token from its platform. So one request is never claimed by both.
    """
    if assertion.parsed is None:
        return False
    issuer, subject = assertion.claims.get("iss"), assertion.claims.get("sub")
    if issuer == subject:
        return False
    return assertion.client_id is None or assertion.client_id not in (issuer, subject)


class FederatedJwt(AuthMethod):
    name = FEDERATED_JWT
    label = "Workload identity federation: an external OIDC token (federated_jwt)"
    carried_in = ASSERTION_PARAMETERS
    signing_algorithms = jose.ALGORITHMS

    def presents(self, presented: Presented) -> bool:
        assertion = presented.assertion
        return assertion is not None and is_federated(assertion)

    def parse(self, presented: Presented) -> FederatedCredentials:
        if presented.authorization is not None:
            raise InvalidRequest("use one client authentication method, not two")
        assertion = presented.assertion
        if assertion.client_id is not None:
            client_id_check(assertion.client_id)
        return FederatedCredentials(
            client_id=assertion.client_id, method=self.name, assertion=assertion
        )

    def client_id_for(self, credentials: FederatedCredentials) -> str | None:
        if credentials.client_id is not None:
            return credentials.client_id
        issuer = credentials.assertion.claim_str("iss")
        subject = credentials.assertion.claim_str("sub")
        if not issuer or not subject:
            return None
        return machine_for_issuer_subject(issuer=issuer, subject=subject)

    def cache_keys(self, client_id: str) -> tuple[str, ...]:
        # The machine's trusts come back with its entry: one cache round trip, not two.
        return (trusts_cache_key(client_id),)

    def verify(
        self,
        *,
        credentials: FederatedCredentials,
        entry: MachineAuthEntry | None,
        context,
        now: float,
        prefetched: Mapping[str, Any],
    ) -> Verification:
        if entry is None:
            return Verification(reason="unknown_client")
        client_id = entry.machine.client_id
        verdict = federated_assertion_verify(
            assertion=credentials.assertion,
            trusts=machine_trusts(
                client_id=client_id,
                cached=prefetched.get(trusts_cache_key(client_id)),
                generation=prefetched.get(machine_generation_key(client_id)),
                read_at=now,
            ),
            now=now,
        )
        return Verification(reason=verdict.reason, details=verdict.details)
