"""Who may read the audit trail through the API.

``audit`` imports no other app, so it cannot know the bearer-token class: it
accepts any authentication whose ``request.auth`` is a verified claims dict
with ``audit:read`` in its space-separated ``scope``, and session users who
are auditors or security admins.
"""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from audit.roles import can_read_audit

AUDIT_READ_SCOPE = "audit:read"


class CanReadAudit(BasePermission):
    message = "Reading the audit trail needs the auditor role or the audit:read scope."

    def has_permission(self, request, view) -> bool:
        claims = request.auth
        if isinstance(claims, dict):
            scope = claims.get("scope")
            return isinstance(scope, str) and AUDIT_READ_SCOPE in scope.split()
        user = request.user
        return user is not None and can_read_audit(user)
