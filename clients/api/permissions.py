"""Who may call the management API, and what a calling machine may hand out.

A machine needs an access token of ours issued for ``MANAGEMENT_API_AUDIENCE``
(RFC 9068 section 4: a token minted for another resource server must not open
this one) carrying the view's scope: ``machines:read`` (or ``machines:write``)
to read, ``machines:write`` to change machines, scopes and audiences,
``keys:write`` for signing keys. A console user needs a role: auditors read,
security admins change.

A machine never gets more power through the API than its token holds: it may
give another machine only scopes its token carries, and it may change only
machines whose scopes its token carries too (else rotating the secret of a
more powerful machine would hand it that machine's rights).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission

from core.roles import can_read_audit, is_security_admin

MACHINES_READ = "machines:read"
MACHINES_WRITE = "machines:write"
KEYS_WRITE = "keys:write"
MANAGEMENT_SCOPES = (MACHINES_READ, MACHINES_WRITE, KEYS_WRITE)


def _addressed_to_management(aud) -> bool:
    expected = settings.MANAGEMENT_API_AUDIENCE
    if isinstance(aud, str):
        return aud == expected
    if isinstance(aud, list):
        return any(isinstance(item, str) and item == expected for item in aud)
    return False


def _token_scopes(claims: dict) -> set[str]:
    scope = claims.get("scope")
    return set(scope.split()) if isinstance(scope, str) else set()


class ManagementAccess(BasePermission):
    """Reads need ``read_scopes`` (any of), writes ``write_scope``; users need a role."""

    read_scopes: tuple[str, ...] = (MACHINES_READ, MACHINES_WRITE)
    write_scope: str = MACHINES_WRITE
    message = (
        "This needs a console role, or an access token issued for the management API's "
        "audience with the management scope this operation names."
    )

    def has_permission(self, request, view) -> bool:
        read_scopes = getattr(view, "read_scopes", self.read_scopes)
        write_scope = getattr(view, "write_scope", self.write_scope)
        claims = request.auth
        if isinstance(claims, dict):
            if not _addressed_to_management(claims.get("aud")):
                return False
            scopes = _token_scopes(claims)
            if request.method in SAFE_METHODS:
                return bool(scopes & set(read_scopes)) or write_scope in scopes
            return write_scope in scopes
        user = request.user
        if user is None:
            return False
        if request.method in SAFE_METHODS:
            return can_read_audit(user)
        return is_security_admin(user)


def scopes_grantable_check(caller, scopes: Iterable[str], *, field: str = "scopes") -> None:
    """A machine may hand out only scopes its own token carries (users: their role decides)."""
    if not caller.is_machine:
        return
    lacking = sorted(set(scopes) - caller.scopes)
    if lacking:
        raise PermissionDenied(
            f"{field}: a machine may grant only scopes its own token carries; "
            f"lacking {', '.join(lacking)}."
        )


def machine_manageable_check(caller, machine) -> None:
    """A machine may change only machines no more powerful than its own token."""
    if not caller.is_machine:
        return
    held = {scope.name for scope in machine.allowed_scopes.all()}
    lacking = sorted(held - caller.scopes)
    if lacking:
        raise PermissionDenied(
            "A machine may change only machines whose scopes its own token carries; "
            f"this one also holds {', '.join(lacking)}."
        )
