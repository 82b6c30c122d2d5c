"""The audit trail: one row per token issued and per change made."""

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from audit.choices import ActorKind, CheckpointKind, EventType, Outcome


class AuditEventQuerySet(models.QuerySet):
    # The ORM refuses bulk changes; the PostgreSQL trigger refuses them below it.
    def update(self, **kwargs):
        raise ValidationError("Audit events are append-only.")

    def delete(self):
        raise ValidationError("Audit events are append-only.")


class AuditEvent(models.Model):
    """An immutable record of something that happened.

    Writers insert concurrently, inside the transaction of the change they
    record, and the row is never written again: the sealer records its chain
    position in an ``AuditSeal`` row of its own, so each event costs one
    insert (one entry per index) and the table is insert-only. Events carry
    kinds, ids and display names rather than foreign keys, so the record
    outlives what it describes and ``audit`` depends on no other app.
    """

    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    event_type = models.CharField(max_length=64, choices=EventType.choices)

    actor_kind = models.CharField(max_length=16, choices=ActorKind.choices)
    actor_id = models.CharField(max_length=128, blank=True, default="")
    actor_display = models.CharField(max_length=255, blank=True, default="")

    target_kind = models.CharField(max_length=32, blank=True, default="")
    target_id = models.CharField(max_length=128, blank=True, default="")
    target_display = models.CharField(max_length=255, blank=True, default="")

    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCESS)
    reason = models.CharField(max_length=64, blank=True, default="")

    source_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True, default="")
    request_id = models.CharField(max_length=128, blank=True, default="")
    details = models.JSONField(default=dict, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        # Declared here rather than with db_index=True: on PostgreSQL the latter
        # also builds a LIKE-pattern index per text column, which no query uses
        # and every token's insert would maintain.
        indexes = [
            models.Index(fields=["event_type"], name="audit_event_type_idx"),
            # A target's or an actor's events newest first (the audit log's machine and
            # actor filters, a machine's page): with the time in the key the page is an
            # ordered range, never a walk of the whole trail for a quiet machine.
            models.Index(fields=["target_id", "occurred_at"], name="audit_target_time_idx"),
            models.Index(
                fields=["actor_kind", "actor_id", "occurred_at"], name="audit_actor_time_idx"
            ),
            # The audit log's "failures" pages, newest first: only failures are
            # indexed (a few percent of rows), so a token issued pays nothing for it.
            models.Index(
                fields=["occurred_at"],
                condition=models.Q(outcome="failure"),
                name="audit_failure_time_idx",
            ),
            # One machine's or actor's failures: without these PostgreSQL walks every
            # failure of the trail looking for a machine that has none (7.8 s at 10M).
            # Failures only, like the one above: an issued token maintains neither.
            models.Index(
                fields=["target_id", "occurred_at"],
                condition=models.Q(outcome="failure"),
                name="audit_failure_target_idx",
            ),
            models.Index(
                fields=["actor_kind", "actor_id", "occurred_at"],
                condition=models.Q(outcome="failure"),
                name="audit_failure_actor_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.actor_kind}:{self.actor_id} -> {self.target_id}"

    def save(self, *args, **kwargs):
        # Insert only: sealing writes an AuditSeal row, never this one.
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValidationError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("Audit events are append-only.")


class AuditSealQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise ValidationError("Audit seals are insert-only.")

    def delete(self):
        raise ValidationError("Audit seals are insert-only.")


class AuditSeal(models.Model):
    """One event's place in the hash chain, written once by the sealer.

    ``hash = SHA-256(canonical record || prev_hash)``, where the record is the
    event's columns plus ``position`` and ``sealed_at`` from this row
    (``chain.RECORD_FIELDS``). Rows are only ever appended at the head: on
    PostgreSQL a trigger refuses one whose position or ``prev_hash`` does not
    extend the newest row, and every UPDATE or DELETE (pruning goes through a
    function the migration role owns, which keeps the row of the last pruned
    position as the anchor the chain continues from, its event gone).

    No foreign key: the anchor row outlives its event, and a constraint would
    add a lookup to every seal for nothing the trigger does not check already.
    """

    position = models.BigIntegerField(primary_key=True)
    event = models.OneToOneField(
        AuditEvent,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="seal",
        null=True,
    )
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    sealed_at = models.DateTimeField()

    objects = AuditSealQuerySet.as_manager()

    class Meta:
        ordering = ["position"]

    def __str__(self) -> str:
        return f"seal {self.position} of event {self.event_id}"

    def save(self, *args, **kwargs):
        if not kwargs.get("force_insert"):
            raise ValidationError("Audit seals are insert-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("Audit seals are insert-only.")


class AuditCheckpointQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise ValidationError("Audit checkpoints are insert-only.")

    def delete(self):
        raise ValidationError("Audit checkpoints are insert-only.")


class AuditCheckpoint(models.Model):
    """A signed statement "the chain had this head at this time".

    Written on a schedule even when nothing happened, so deleting the newest
    events (or everything) cannot go unnoticed: the next verification finds a
    signed head that no longer exists. A prune checkpoint also carries the
    anchor (last pruned position and its hash) that verification starts from
    once older events are gone. Insert-only, like the events.
    """

    created_at = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=16, choices=CheckpointKind.choices)
    position = models.BigIntegerField(db_index=True)
    head_hash = models.CharField(max_length=64)
    anchor_position = models.BigIntegerField(default=0, db_index=True)
    anchor_hash = models.CharField(max_length=64)
    key_id = models.CharField(max_length=64)
    signature = models.CharField(max_length=128)
    # SHA-256 of the previous checkpoint's signed payload and signature (signed
    # here): deleting, inserting or reordering checkpoints breaks the next link.
    # Empty only on checkpoints signed before the chain existed.
    prev_checkpoint = models.CharField(max_length=64, blank=True, default="", db_default="")

    objects = AuditCheckpointQuerySet.as_manager()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} checkpoint at position {self.position}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValidationError("Audit checkpoints are insert-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("Audit checkpoints are insert-only.")


class AuditHourlyCount(models.Model):
    """Sealed events counted per hour, type, outcome and reason: the dashboard's charts.

    The sealer adds each batch's counts in the transaction that seals it, so
    every event is counted exactly once and the dashboard never counts the
    event table (ten million rows) on a page load. Display only: a database
    writer can change these numbers, never the chain they summarise.
    """

    hour = models.DateTimeField()
    event_type = models.CharField(max_length=64)
    outcome = models.CharField(max_length=16)
    reason = models.CharField(max_length=64, blank=True, default="")
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hour", "event_type", "outcome", "reason"], name="audit_hourly_count_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h {self.event_type} {self.outcome}: {self.count}"


class AuditHourlyMachineCount(models.Model):
    """Token events (issued, denied, ...) counted per hour, machine and outcome.

    Apart from ``AuditHourlyCount`` so the charts read a few rows per hour
    however many machines there are; "top machines" reads one day of this.
    """

    hour = models.DateTimeField()
    machine = models.CharField(max_length=128)
    outcome = models.CharField(max_length=16)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hour", "machine", "outcome"], name="audit_hourly_machine_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h {self.machine} {self.outcome}: {self.count}"
