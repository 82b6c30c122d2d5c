"""Thin periodic tasks of the credential lifecycle (scheduled in settings.CELERY_BEAT_SCHEDULE)."""

from celery import shared_task
from django.utils import timezone

from clients.client_assertion import used_assertions_purge
from clients.lifecycle import lifecycle_kick, machines_stale_sweep, secrets_expire
from jobs.services import PERIODIC_TASK_OPTIONS, job_execute

SECRETS_EXPIRE = "clients.secrets_expire"
MACHINES_STALE = "clients.machines_stale"


def _expire() -> dict:
    result = secrets_expire()
    if result.warned or result.expired:
        lifecycle_kick()
    return result.as_dict()


def _stale() -> dict:
    result = machines_stale_sweep()
    if result.reported or result.disabled:
        lifecycle_kick()
    return result.as_dict()


@shared_task(name=SECRETS_EXPIRE, **PERIODIC_TASK_OPTIONS)
def secrets_expire_task() -> dict | None:
    return job_execute(name=SECRETS_EXPIRE, call=_expire)


@shared_task(name=MACHINES_STALE, **PERIODIC_TASK_OPTIONS)
def machines_stale_task() -> dict | None:
    return job_execute(name=MACHINES_STALE, call=_stale)


USED_ASSERTIONS_PURGE = "clients.used_assertions_purge"


@shared_task(name=USED_ASSERTIONS_PURGE, **PERIODIC_TASK_OPTIONS)
def purge_used_assertions() -> int | None:
    """Forget the replay rows of expired client assertions (they cannot be replayed any more)."""
    return job_execute(
        name=USED_ASSERTIONS_PURGE, call=lambda: used_assertions_purge(now=timezone.now())
    )
