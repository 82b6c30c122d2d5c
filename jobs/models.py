"""The record of each periodic job's last run (the console and the metrics read it)."""

from django.db import models

from jobs.choices import JobOutcome


class JobRun(models.Model):
    """One row per periodic job: its lease and its last run.

    ``lease_until`` is the lock of jobs that must not run twice at once: a run
    takes it with one conditional UPDATE (no cache, no broker needed) and gives
    it back when done; a run killed half-way holds it until it lapses. Beat's
    interval is kept with the row so that a reader can tell a job that stopped
    running (three intervals without a run) without knowing the schedule.
    """

    name = models.CharField(max_length=128, unique=True)
    interval_seconds = models.PositiveIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    last_outcome = models.CharField(
        max_length=16, choices=JobOutcome.choices, blank=True, default=""
    )
    last_error = models.CharField(max_length=255, blank=True, default="")
    last_result = models.JSONField(null=True, blank=True)
    runs = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
