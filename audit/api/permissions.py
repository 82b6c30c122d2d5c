"""Who may read the audit trail through the API.

``audit`` imports no other app, so it cannot know the bearer-token class: it
accepts any authentication whose ``request.auth`` is a verified claims dict
with ``audit:read`` in its space-separated ``scope`` and ``AUDIT_API_AUDIENCE``
in its ``aud`` (RFC 9068 section 4: a token minted for another resource server
must not open this one), and session users who are auditors or security admins.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.permissions import BasePermission

from core.bearer import claims_grant
from core.roles import can_read_audit

AUDIT_READ_SCOPE = "audit:read"


class CanReadAudit(BasePermission):
    message = (
        "Reading the audit trail needs the auditor role, or a token with the audit:read "
        "scope issued for the audit API's audience."
    )

    def has_permission(self, request, view) -> bool:
        claims = request.auth
        if isinstance(claims, dict):
            return claims_grant(
                claims, scope=AUDIT_READ_SCOPE, audience=settings.AUDIT_API_AUDIENCE
            )
        user = request.user
        return user is not None and can_read_audit(user)
