"""The periodic jobs of the beat schedule, and the record of each one's last run.

Every task named in ``CELERY_BEAT_SCHEDULE`` is recorded when it ends (Celery's
``task_prerun``/``task_postrun`` signals, the library's own seam), so a job an
app adds to the schedule is recorded with no code of its own: its start, end,
outcome and last success land in its ``JobRun`` row, which ``/metrics`` exports
with the job's interval and the console may show. A run started by hand (a
management command) is not a run of the schedule and is not recorded.

Recording never fails the task: with the database away the run is logged and
the row is simply not updated (the job then looks late, which it is in effect).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery.signals import task_postrun, task_prerun
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from identity_portal.models import JobOutcome, JobRun

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScheduledJob:
    name: str  # the schedule entry's name: the job's label
    task: str
    interval: float | None  # seconds; None for a crontab-like schedule


def _seconds(schedule) -> float | None:
    if isinstance(schedule, int | float):
        return float(schedule)
    if isinstance(schedule, timedelta):
        return schedule.total_seconds()
    run_every = getattr(schedule, "run_every", None)  # celery.schedules.schedule
    return run_every.total_seconds() if isinstance(run_every, timedelta) else None


def scheduled_jobs() -> list[ScheduledJob]:
    """The beat schedule's jobs, by name."""
    return [
        ScheduledJob(name=name, task=entry["task"], interval=_seconds(entry.get("schedule")))
        for name, entry in sorted(settings.CELERY_BEAT_SCHEDULE.items())
    ]


def _job_for_task(task_name: str) -> ScheduledJob | None:
    for job in scheduled_jobs():
        if job.task == task_name:
            return job
    return None


def job_run_record(*, name: str, task: str, started_at: datetime, outcome: str) -> None:
    """Upsert the job's row: one statement, whatever ran before."""
    finished_at = timezone.now()
    row = JobRun(
        name=name,
        task=task,
        started_at=started_at,
        finished_at=finished_at,
        outcome=outcome,
        last_success_at=finished_at if outcome == JobOutcome.SUCCESS else None,
    )
    update = ["task", "started_at", "finished_at", "outcome"]
    if outcome == JobOutcome.SUCCESS:
        update.append("last_success_at")
    JobRun.objects.bulk_create(
        [row], update_conflicts=True, unique_fields=["name"], update_fields=update
    )


def job_runs() -> dict[str, JobRun]:
    """The recorded runs by job name (a handful of rows)."""
    return {run.name: run for run in JobRun.objects.all()}


_local = threading.local()


def _started() -> dict[str, datetime]:
    """Start times of the tasks running on this thread, by task id."""
    started = getattr(_local, "started", None)
    if started is None:
        started = _local.started = {}
    return started


@task_prerun.connect(dispatch_uid="identity_portal.jobs.started")
def _task_started(task_id=None, task=None, **kwargs) -> None:
    _started()[task_id] = timezone.now()


@task_postrun.connect(dispatch_uid="identity_portal.jobs.finished")
def _task_finished(task_id=None, task=None, state=None, **kwargs) -> None:
    started_at = _started().pop(task_id, None)
    job = _job_for_task(getattr(task, "name", ""))
    if job is None or started_at is None:
        return
    outcome = JobOutcome.SUCCESS if state == "SUCCESS" else JobOutcome.FAILURE
    try:
        job_run_record(name=job.name, task=job.task, started_at=started_at, outcome=outcome)
    except DatabaseError:
        logger.warning("job %s: its run could not be recorded", job.name, exc_info=True)
