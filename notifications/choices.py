"""The vocabulary of notifications: what happened, by which channel, how far delivery got."""

from django.db import models


class NotificationKind(models.TextChoices):
    SECRET_EXPIRING = "secret.expiring"
    SECRET_EXPIRED = "secret.expired"
    MACHINE_STALE = "machine.stale"
    KEY_ROTATED = "key.rotated"
    AUTH_FAILURES = "auth.failures"
    # Sent from the console to check an endpoint; goes to that endpoint only.
    TEST = "test"


class Channel(models.TextChoices):
    EMAIL = "email"
    WEBHOOK = "webhook"


class DeliveryState(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    # Given up: the retry period is over, or the row did not authenticate.
    FAILED = "failed"
