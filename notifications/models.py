"""Webhook endpoints and the notification outbox.

The outbox: a ``Notification`` is inserted in the same transaction as the
state change that causes it (a secret expired, a machine went stale), with one
``Delivery`` per recipient; the dispatcher sends them after commit and keeps
every ``DeliveryAttempt``. A broker outage therefore delays a notification and
never loses it, and a rolled-back change sends nothing.

Nothing here has a foreign key into another app (like ``audit``): a
notification names its subject by kind and id, and a team by name (a
machine's ``owner_team``).
"""

import uuid

from django.db import models

from notifications.choices import Channel, DeliveryState, NotificationKind
from notifications.constants import URL_MAX_LENGTH


class WebhookEndpoint(models.Model):
    """Where a team's notifications are POSTed, signed with the endpoint's own secret.

    The secret is shown once and stored encrypted (AES-256-GCM under the
    server's newest ``KEY_ENCRYPTION_KEYS`` entry, ``kek_id`` naming it), with
    the endpoint's ``uid`` as associated data: the server must sign with it, so
    a digest would not do, and someone holding the database alone can neither
    read it nor move it to another endpoint.
    """

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.CharField(max_length=255, help_text="A machine's owner team.")
    url = models.URLField(max_length=URL_MAX_LENGTH)
    description = models.CharField(max_length=255, blank=True, default="")
    enabled = models.BooleanField(default=True)
    secret_wrapped = models.BinaryField(editable=False)
    kek_id = models.CharField(max_length=32, editable=False)
    secret_last_four = models.CharField(max_length=4, editable=False)
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["team", "id"]

    def __str__(self) -> str:
        return f"{self.team}: {self.url}"


class Notification(models.Model):
    """One thing an owner is told about; ``dedup_key`` makes it happen at most once.

    ``mac`` binds the row (and its deliveries' recipients) to a server secret:
    someone who can insert rows must not be able to make the portal sign and
    send a message of their choosing to a team's receiver.
    """

    kind = models.CharField(max_length=32, choices=NotificationKind.choices)
    dedup_key = models.CharField(max_length=255, unique=True)
    subject_kind = models.CharField(max_length=32, blank=True, default="")
    subject_id = models.CharField(max_length=128, blank=True, default="")
    subject_display = models.CharField(max_length=255, blank=True, default="")
    team = models.CharField(max_length=255, blank=True, default="")
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.subject_display or self.subject_id}"


class Delivery(models.Model):
    """One notification to one recipient: an email address or a webhook endpoint."""

    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="deliveries"
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    endpoint = models.ForeignKey(
        WebhookEndpoint, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )
    recipient = models.CharField(max_length=URL_MAX_LENGTH)
    mac = models.CharField(max_length=64)
    state = models.CharField(
        max_length=16, choices=DeliveryState.choices, default=DeliveryState.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    lease_until = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=255, blank=True, default="")
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "deliveries"  # the console's menu said "Deliverys"
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="delivery_due")]

    def __str__(self) -> str:
        return f"{self.channel} to {self.recipient}"


class DeliveryAttempt(models.Model):
    """One try at a delivery and what came of it, shown in the console."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts_made")
    attempted_at = models.DateTimeField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=255, blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)
    succeeded = models.BooleanField(default=False)

    class Meta:
        ordering = ["-attempted_at", "-id"]

    def __str__(self) -> str:
        return f"{self.attempted_at:%Y-%m-%d %H:%M:%S} {self.status_code or self.error}"
