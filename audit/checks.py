"""System checks of the audit settings: a witness that cannot work is refused at start-up."""

from django.conf import settings
from django.core import checks

from audit.witness import witness_parse


@checks.register()
def audit_witness_configuration(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Every ``AUDIT_WITNESS`` entry must parse: a typo would silently witness nothing."""
    errors: list[checks.CheckMessage] = []
    for value in settings.AUDIT_WITNESS:
        try:
            witness_parse(value)
        except ValueError as exc:
            errors.append(checks.Error(str(exc), id="audit.E001"))
    if settings.PRODUCTION and not settings.AUDIT_WITNESS:
        errors.append(
            checks.Warning(
                "AUDIT_WITNESS is empty: checkpoints are kept only in the database, so a "
                "database holder can roll the audit trail back unnoticed.",
                id="audit.W001",
            )
        )
    return errors
