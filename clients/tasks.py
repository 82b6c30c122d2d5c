"""Lifecycle tasks run by beat: thin, idempotent, each calls one service."""

from celery import shared_task
from django.utils import timezone

from clients.client_assertion import used_assertions_purge


@shared_task(name="clients.used_assertions_purge")
def purge_used_assertions() -> int:
    """Forget the replay rows of expired client assertions (they cannot be replayed any more)."""
    return used_assertions_purge(now=timezone.now())
