"""Role-gated console pages: the one place the console's permissions are decided.

Gated on the roles (``core.roles``), not on Django model permissions, which a
staff user could be granted by hand and which would bypass the roles.
"""

from __future__ import annotations

from core.roles import can_read_audit, is_security_admin


class RoleGatedAdminMixin:
    """Security admins change (when ``security_admins_change``); auditors only look.

    Nobody else sees the page. Deleting is refused unless a subclass says
    otherwise: history is changed through services, never by a delete button.
    Mixed into ``admin.ModelAdmin`` (or one of its subclasses) by every app.
    """

    security_admins_change = True

    def has_module_permission(self, request) -> bool:
        return can_read_audit(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return can_read_audit(request.user)

    def has_add_permission(self, request) -> bool:
        return self.security_admins_change and is_security_admin(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        return self.security_admins_change and is_security_admin(request.user)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_security_admin_permission(self, request) -> bool:
        """For admin actions declared with ``permissions=["security_admin"]``."""
        return is_security_admin(request.user)
