"""What the project itself keeps: the last run of each periodic job."""

from django.db import models


class JobOutcome(models.TextChoices):
    SUCCESS = "success"
    FAILURE = "failure"


class JobRun(models.Model):
    """The last run of one periodic job of the beat schedule, one row per job.

    Written by the worker after every run (``identity_portal.jobs``), read at
    scrape time by ``/metrics`` on any web node: the worker that ran the job is
    another process, often on another host, so the record lives where every node
    can read it. Operational state, not a change anyone made: it grants nothing
    and is not audited (the sealer alone runs every few seconds). A database
    writer can fake a row; what it hides (a stalled sealer, an old checkpoint) the
    audit gauges, read from the chain itself, still show.
    """

    name = models.CharField(max_length=64, unique=True)
    task = models.CharField(max_length=128)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    outcome = models.CharField(max_length=16, choices=JobOutcome.choices)
    last_success_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name}: {self.outcome} at {self.finished_at:%Y-%m-%d %H:%M:%S}"

    @property
    def duration(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()
