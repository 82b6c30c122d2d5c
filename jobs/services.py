"""Running a periodic job: its lease, and the record of its last run.

Every periodic task calls ``job_execute``: two beat processes started by
mistake, or a run that overlaps the next, must not do the work twice, so a
job that is not already guarded by row locks of its own takes the lease of
its ``JobRun`` row (one conditional UPDATE) and gives it back when done. Every
run, skipped or not, is recorded with its duration and outcome, which the
console and the metrics read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import F, Q
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.choices import JobOutcome
from jobs.constants import DEFAULT_LEASE_SECONDS, TRANSIENT_MAX_RETRIES
from jobs.models import JobRun
from jobs.selectors import job_interval


def _row(name: str) -> None:
    if JobRun.objects.filter(name=name).exists():
        return
    try:
        with transaction.atomic():
            JobRun.objects.create(name=name, interval_seconds=job_interval(name))
    except IntegrityError:
        pass  # created by a concurrent first run


def _lease_take(name: str, *, lease: int) -> bool:
    now = timezone.now()
    taken = (
        JobRun.objects.filter(name=name)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now))
        .update(lease_until=now + timedelta(seconds=lease))
    )
    return taken == 1


def _finish(name: str, *, started, outcome: str, result: Any, error: str, release: bool) -> None:
    finished = timezone.now()
    values: dict[str, Any] = {
        "interval_seconds": job_interval(name),
        "last_started_at": started,
        "last_finished_at": finished,
        "last_duration_ms": max(0, int((finished - started).total_seconds() * 1000)),
        "last_outcome": outcome,
        "last_error": error[:255],
        "last_result": result,
        "runs": F("runs") + 1,
    }
    if outcome == JobOutcome.FAILURE:
        values["failures"] = F("failures") + 1
    if release:
        values["lease_until"] = None
    JobRun.objects.filter(name=name).update(**values)


def job_execute(
    *,
    name: str,
    call: Callable[[], Any],
    exclusive: bool = True,
    lease: int = DEFAULT_LEASE_SECONDS,
) -> Any:
    """Run ``call`` as the job ``name``; returns its result, or None when skipped.

    ``exclusive`` jobs run only while holding the lease; jobs whose service
    already serialises itself with row locks (the sealer, key advance) pass
    False and are only recorded. ``call``'s result must be JSON. An exception
    is recorded as the outcome (its type only: a message may carry data) and
    raised again, so the task's retry policy decides what happens next.
    """
    _row(name)
    started = timezone.now()
    if exclusive and not _lease_take(name, lease=lease):
        # Another run holds the lease: this one is no run at all (its record stays the
        # other run's).
        return None
    try:
        result = call()
    except BaseException as exc:
        _finish(
            name,
            started=started,
            outcome=JobOutcome.FAILURE,
            result=None,
            error=type(exc).__name__,
            release=exclusive,
        )
        raise
    _finish(
        name,
        started=started,
        outcome=JobOutcome.SUCCESS,
        result=result,
        error="",
        release=exclusive,
    )
    return result


# What a periodic task retries (with exponential backoff): the database or Redis away
# for a moment. Anything else is a bug or bad data, and retrying it only repeats it.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    RedisConnectionError,
    RedisTimeoutError,
)

PERIODIC_TASK_OPTIONS: dict[str, Any] = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 5,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": TRANSIENT_MAX_RETRIES,
    "ignore_result": True,
}
