"""Thin periodic tasks: each calls one service (scheduled in settings.CELERY_BEAT_SCHEDULE).

The sealer and the checkpoint writer serialise themselves (the chain lock), so
they are only recorded; the prune takes the job's lease.
"""

from celery import shared_task

from audit.services import audit_checkpoint_create, audit_prune, audit_seal_pending
from jobs.services import PERIODIC_TASK_OPTIONS, job_execute

SEAL = "audit.seal_pending"
CHECKPOINT = "audit.checkpoint"
PRUNE = "audit.prune"


@shared_task(name=SEAL, **PERIODIC_TASK_OPTIONS)
def audit_seal_pending_task() -> int | None:
    return job_execute(name=SEAL, call=audit_seal_pending, exclusive=False)


@shared_task(name=CHECKPOINT, **PERIODIC_TASK_OPTIONS)
def audit_checkpoint_task() -> int | None:
    return job_execute(
        name=CHECKPOINT, call=lambda: audit_checkpoint_create().position, exclusive=False
    )


@shared_task(name=PRUNE, **PERIODIC_TASK_OPTIONS)
def audit_prune_task() -> int | None:
    return job_execute(name=PRUNE, call=lambda: audit_prune().deleted)
