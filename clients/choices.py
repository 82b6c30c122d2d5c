"""Domain words of the clients app."""

from django.db import models


class StaleAction(models.TextChoices):
    """What happens to a machine unused for ``STALE_MACHINE_DAYS``."""

    REPORT = "report"
    DISABLE = "disable"
