"""Thin periodic tasks: each calls one service (scheduled in settings.CELERY_BEAT_SCHEDULE)."""

from celery import shared_task

from audit.services import audit_checkpoint_create, audit_prune, audit_seal_pending


@shared_task(name="audit.seal_pending")
def audit_seal_pending_task() -> int:
    return audit_seal_pending()


@shared_task(name="audit.checkpoint")
def audit_checkpoint_task() -> int:
    return audit_checkpoint_create().position


@shared_task(name="audit.prune")
def audit_prune_task() -> int:
    return audit_prune().deleted
