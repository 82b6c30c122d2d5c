"""Reads of the outbox (the console shows them)."""

from __future__ import annotations

from django.db.models import QuerySet

from notifications.models import Delivery, WebhookEndpoint


def webhook_endpoint_list() -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.order_by("team", "id")


def delivery_list() -> QuerySet[Delivery]:
    return Delivery.objects.select_related("notification", "endpoint").order_by("-id")
