"""Lifecycle tasks run by beat: thin, idempotent, each calls one service."""

from celery import shared_task

from tokens import services


@shared_task
def signing_keys_advance() -> None:
    """Activate pending keys whose publish delay is over; retire keys nobody needs."""
    services.signing_keys_advance()


@shared_task
def issued_tokens_purge() -> int:
    """Delete the records of expired tokens (their audit events stay)."""
    return services.issued_tokens_purge()
