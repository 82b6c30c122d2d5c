"""DRF authentication for machines presenting one of our access tokens.

Used by APIs that machines call (the audit API admits machines holding
``audit:read``): the bearer JWT must be signed by a published key of ours,
carry ``typ: at+jwt``, our ``iss`` and an unexpired ``exp``, and be neither
revoked nor of a revoked key nor of a disabled machine (checked in the
database, so a revocation holds on every process at once).
"""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework import authentication, exceptions

from tokens.selectors import token_verify


@dataclass(frozen=True)
class MachinePrincipal:
    """``request.user`` for a machine: authenticated, never staff, never a console user."""

    client_id: str
    subject: str
    name: str
    scopes: frozenset[str]

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def get_username(self) -> str:
        return self.client_id

    def __str__(self) -> str:
        return f"machine {self.client_id}"


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != self.keyword.lower():
            return None  # not ours: let other authenticators try
        value = value.strip()
        if not value or " " in value:
            raise exceptions.AuthenticationFailed("Malformed bearer token.")
        verified = token_verify(token=value)
        if verified is None:
            raise exceptions.AuthenticationFailed("Invalid or expired token.")
        claims = verified.claims
        machine = verified.record.machine
        principal = MachinePrincipal(
            client_id=machine.client_id,
            subject=str(machine.subject),
            name=machine.name,
            scopes=frozenset(str(claims.get("scope", "")).split()),
        )
        return principal, claims

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="Machine Identity Portal"'
