"""Lifecycle tasks of the project itself."""

from celery import shared_task

from identity_portal.services import worker_heartbeat_record


@shared_task(ignore_result=True)
def worker_heartbeat() -> None:
    worker_heartbeat_record()
