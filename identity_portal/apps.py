from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class IdentityPortalConfig(AppConfig):
    default = True
    name = "identity_portal"
    verbose_name = "Machine Identity Portal"

    def ready(self) -> None:
        from identity_portal import (  # noqa: F401  (registers checks and receivers)
            cache,
            checks,
            console_audit,
        )
        from identity_portal.log import install_redaction

        install_redaction()


class ConsoleAdminConfig(admin_apps.AdminConfig):
    """Django's admin with the console's site as ``admin.site`` (roles let users in)."""

    default = False
    default_site = "identity_portal.console_site.ConsoleSite"
