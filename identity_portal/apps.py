from django.apps import AppConfig


class IdentityPortalConfig(AppConfig):
    name = "identity_portal"
    verbose_name = "Machine Identity Portal"

    def ready(self) -> None:
        from identity_portal import (  # noqa: F401  (registers checks and receivers)
            cache,
            checks,
            console_audit,
            jobs,
        )
        from identity_portal.log import install_redaction

        install_redaction()
