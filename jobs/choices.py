"""The outcomes a periodic job's run can have."""

from django.db import models


class JobOutcome(models.TextChoices):
    SUCCESS = "success"
    FAILURE = "failure"
