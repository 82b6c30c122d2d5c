"""The console's admin site: a role, not Django's staff flag, is what lets a user in.

Installed as the project's default admin site (``identity_portal.apps.ConsoleAdminConfig``),
so every ``admin.site.register`` of every app lands here.
"""

from __future__ import annotations

from django.contrib.admin import AdminSite

from core.roles import may_enter_console


class ConsoleSite(AdminSite):
    site_header = "Machine Identity Portal"
    site_title = "Machine Identity Portal"
    index_title = "Console"

    def has_permission(self, request) -> bool:
        """Superusers, security admins and auditors; nobody else, staff or not."""
        return may_enter_console(request.user)
