"""Reads of the periodic jobs' records (the console and the metrics use these)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from jobs.constants import OVERDUE_INTERVALS
from jobs.models import JobRun


def job_schedule() -> dict[str, int]:
    """Task name -> beat interval in seconds, from ``CELERY_BEAT_SCHEDULE``."""
    schedule: dict[str, int] = {}
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        every = entry.get("schedule")
        if isinstance(every, int | float):
            schedule[entry["task"]] = int(every)
    return schedule


def job_interval(name: str) -> int:
    return job_schedule().get(name, 0)


@dataclass(frozen=True)
class JobStatus:
    """A job as the console shows it: its schedule, its last run and whether it is overdue."""

    name: str
    interval_seconds: int
    last_started_at: datetime | None
    last_finished_at: datetime | None
    last_duration_ms: int | None
    last_outcome: str
    last_error: str
    runs: int
    failures: int
    overdue: bool


def job_is_overdue(*, interval: int, last_started_at: datetime | None, now: datetime) -> bool:
    """Not run for ``OVERDUE_INTERVALS`` of its intervals (a job never run counts from now)."""
    if not interval or last_started_at is None:
        return False
    return last_started_at < now - timedelta(seconds=OVERDUE_INTERVALS * interval)


def job_status_list(*, now: datetime | None = None) -> list[JobStatus]:
    """Every scheduled job (also one that never ran) and every recorded one, by name."""
    now = now or timezone.now()
    schedule = job_schedule()
    rows = {row.name: row for row in JobRun.objects.all()}
    statuses = []
    for name in sorted(set(schedule) | set(rows)):
        row = rows.get(name)
        interval = schedule.get(name, row.interval_seconds if row else 0)
        last_started = row.last_started_at if row else None
        statuses.append(
            JobStatus(
                name=name,
                interval_seconds=interval,
                last_started_at=last_started,
                last_finished_at=row.last_finished_at if row else None,
                last_duration_ms=row.last_duration_ms if row else None,
                last_outcome=row.last_outcome if row else "",
                last_error=row.last_error if row else "",
                runs=row.runs if row else 0,
                failures=row.failures if row else 0,
                overdue=job_is_overdue(interval=interval, last_started_at=last_started, now=now),
            )
        )
    return statuses
