"""Lifecycle tasks of the project itself."""

from celery import shared_task

from identity_portal.services import worker_heartbeat_record
from jobs.services import PERIODIC_TASK_OPTIONS, job_execute

WORKER_HEARTBEAT = "identity_portal.tasks.worker_heartbeat"


@shared_task(name=WORKER_HEARTBEAT, **PERIODIC_TASK_OPTIONS)
def worker_heartbeat() -> None:
    # Recorded like every scheduled job, so /metrics and the console see it run; it
    # only writes one cache key, so it needs no lease.
    job_execute(name=WORKER_HEARTBEAT, call=worker_heartbeat_record, exclusive=False)
