"""Thin periodic task: send the due deliveries of the outbox."""

from celery import shared_task

from jobs.services import PERIODIC_TASK_OPTIONS, job_execute
from notifications.services import notifications_dispatch

DISPATCH = "notifications.dispatch"


@shared_task(name=DISPATCH, **PERIODIC_TASK_OPTIONS)
def notifications_dispatch_task() -> dict | None:
    # Not exclusive: each delivery is claimed under a row lock and a lease, so a
    # kick and the beat run may overlap without sending anything twice.
    return job_execute(
        name=DISPATCH, call=lambda: notifications_dispatch().as_dict(), exclusive=False
    )
