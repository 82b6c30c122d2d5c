"""Reads of the audit trail: filters, keyset streaming, and chain verification.

Everything here reads sealed events in position order with keyset batches
(``position > last``), so a million events never sit in memory and a
concurrent sealer only ever appends past what has been read. An event's
chain fields live in its ``AuditSeal`` row; ``audit_events_sealed`` joins
them back under the names the chain and the exports use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import F, Max, Min, Q, QuerySet, Sum

from audit import chain
from audit.choices import ActorKind, CheckpointKind
from audit.models import (
    AuditCheckpoint,
    AuditEvent,
    AuditHourlyCount,
    AuditHourlyMachineCount,
    AuditSeal,
)
from audit.signing import audit_public_jwks, audit_verification_keys

# Stored columns read to rebuild an event's record (RECORD_FIELDS) plus its seal.
EVENT_COLUMNS = (*chain.RECORD_FIELDS, "prev_hash", "hash")
CHECKPOINT_COLUMNS = ("id", *chain.CHAINED_CHECKPOINT_FIELDS, "signature")


@dataclass(frozen=True)
class AuditFilters:
    """The filters shared by exports and the API (time range is [since, until))."""

    since: datetime | None = None
    until: datetime | None = None
    event_types: tuple[str, ...] = ()
    actor: str = ""
    machine: str = ""
    outcome: str = ""
    source_ip: str = ""

    def is_empty(self) -> bool:
        return self == AuditFilters()

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": chain.format_timestamp(self.since) if self.since else None,
            "until": chain.format_timestamp(self.until) if self.until else None,
            "event_types": list(self.event_types),
            "actor": self.actor,
            "machine": self.machine,
            "outcome": self.outcome,
            # Only when used, so manifests of exports without it read as before.
            **({"source_ip": self.source_ip} if self.source_ip else {}),
        }


def audit_events_sealed() -> QuerySet[AuditEvent]:
    """Sealed events, each with ``position``, ``prev_hash``, ``hash`` and ``sealed_at``."""
    return AuditEvent.objects.filter(seal__isnull=False).annotate(
        position=F("seal__position"),
        prev_hash=F("seal__prev_hash"),
        hash=F("seal__hash"),
        sealed_at=F("seal__sealed_at"),
    )


def audit_events_filter(*, filters: AuditFilters) -> QuerySet[AuditEvent]:
    """Sealed events matching ``filters``. ``actor`` is ``kind:id`` or a bare id."""
    events = audit_events_sealed()
    if filters.since is not None:
        events = events.filter(occurred_at__gte=filters.since)
    if filters.until is not None:
        events = events.filter(occurred_at__lt=filters.until)
    if filters.event_types:
        events = events.filter(event_type__in=filters.event_types)
    if filters.actor:
        kind, sep, actor_id = filters.actor.partition(":")
        if sep and kind in ActorKind.values:
            events = events.filter(actor_kind=kind, actor_id=actor_id)
        else:
            events = events.filter(actor_id=filters.actor)
    if filters.machine:
        events = events.filter(
            Q(actor_kind=ActorKind.MACHINE, actor_id=filters.machine)
            | Q(target_kind="machine", target_id=filters.machine)
        )
    if filters.outcome:
        events = events.filter(outcome=filters.outcome)
    if filters.source_ip:
        events = events.filter(source_ip=filters.source_ip)
    return events


def audit_events_stream(
    *, events: QuerySet[AuditEvent], after: int = 0, up_to: int | None = None, chunk_size: int
) -> Iterator[dict[str, Any]]:
    """Stored values of sealed events in position order, in windows of ``chunk_size`` positions.

    Each query covers one window of positions (``after < position <= after + chunk``):
    its cost and memory stay bounded by the window whatever the planner thinks of
    the table (a keyset ``LIMIT`` query degrades to scan-and-sort on stale
    statistics), and filtered exports simply get fewer rows per window.
    """
    if up_to is None:
        up_to = audit_chain_head()[0]
    low = after
    while low < up_to:
        high = min(low + chunk_size, up_to)
        window = events.filter(position__gt=low, position__lte=high).order_by("position")
        yield from window.values(*EVENT_COLUMNS)
        low = high


# --- Checkpoints ----------------------------------------------------------------


def audit_checkpoints_after(*, after_id: int, limit: int) -> list[dict[str, Any]]:
    """Checkpoint rows written after row ``after_id``, oldest first (what a witness lacks)."""
    return list(
        AuditCheckpoint.objects.filter(id__gt=after_id)
        .order_by("id")
        .values(*CHECKPOINT_COLUMNS)[:limit]
    )


def audit_checkpoint_last() -> dict[str, Any] | None:
    """The newest checkpoint whose signature verifies: the next one chains onto it.

    A row that does not verify (an attacker's insert) is stepped over, so it never
    becomes part of what we sign; ``audit_verify`` reports it.
    """
    keys = audit_verification_keys()
    for row in AuditCheckpoint.objects.order_by("-id").values(*CHECKPOINT_COLUMNS).iterator():
        if chain.checkpoint_valid(row, keys):
            return row
    return None


# --- The chain's ends, from the seal table ----------------------------------


def audit_chain_head() -> tuple[int, str]:
    """The newest sealed position and its hash, or the genesis.

    From the seal table alone: a prune keeps the seal row of the last position
    it removed, so the head survives a prune of everything, and no checkpoint
    row (which anyone with INSERT could add, unsigned) can re-base the sealer.
    """
    head = AuditSeal.objects.order_by("-position").values_list("position", "hash").first()
    return head or (0, chain.GENESIS_HASH)


def audit_sealed_horizon() -> int:
    """The highest sealed event id: every committed event at or below it is sealed.

    The sealer keeps this true (``audit.services.audit_seal_pending``), so
    finding what to seal is an index range scan above it.
    """
    return AuditSeal.objects.aggregate(top=Max("event_id"))["top"] or 0


def audit_chain_anchor() -> tuple[int, str]:
    """Where the chain starts: the last pruned position and its hash, or the genesis.

    From the seal table, like the head: a prune keeps the seal row of the last
    position it removed (its event gone), so the lowest seal row says where the
    chain starts. The runtime role can neither change nor delete seal rows,
    whereas it can INSERT a checkpoint row, signed or not, naming any anchor.
    """
    first = (
        AuditSeal.objects.order_by("position")
        .values_list("position", "prev_hash", "hash", "event_id")
        .first()
    )
    if first is None:
        return 0, chain.GENESIS_HASH
    position, prev_hash, digest, event_id = first
    if event_id is not None and AuditEvent.objects.filter(pk=event_id).exists():
        return position - 1, prev_hash
    return position, digest


@dataclass(frozen=True)
class AuditBacklog:
    """How far sealing is behind, from a few index lookups (no count of the table)."""

    unsealed: int  # ids from the oldest unsealed event to the newest (rolled-back ids count)
    oldest_unsealed_at: datetime | None
    head_position: int


def audit_backlog() -> AuditBacklog:
    """What ``/metrics`` reports at every scrape: bounded work whatever the table's size.

    The span of ids from the oldest event above the sealed horizon to the newest,
    rather than ``audit_unsealed_count``: ids of inserts that rolled back within the
    span are counted too, so this is at most a little above the exact count, and 0
    exactly when nothing waits.
    """
    horizon = audit_sealed_horizon()
    oldest = (
        AuditEvent.objects.filter(id__gt=horizon)
        .order_by("id")
        .values_list("id", "occurred_at")
        .first()
    )
    if oldest is None:
        return AuditBacklog(
            unsealed=0, oldest_unsealed_at=None, head_position=audit_chain_head()[0]
        )
    top = AuditEvent.objects.aggregate(top=Max("id"))["top"] or oldest[0]
    return AuditBacklog(
        unsealed=top - oldest[0] + 1,
        oldest_unsealed_at=oldest[1],
        head_position=audit_chain_head()[0],
    )


# How many of the newest checkpoint rows ``audit_checkpoint_signed_last_at`` looks at.
SIGNED_CHECKPOINT_LOOKBACK = 16


def audit_checkpoint_signed_last_at() -> datetime | None:
    """When the newest checkpoint whose signature verifies was written.

    Among the newest ``SIGNED_CHECKPOINT_LOOKBACK`` rows only, so the work is
    bounded: anyone with INSERT can add unsigned rows, and a run of them that
    long hides every signed checkpoint (None), which reads as "too old", as it
    should.
    """
    keys = audit_verification_keys()
    rows = AuditCheckpoint.objects.order_by("-id").values(*CHECKPOINT_COLUMNS)
    for row in rows[:SIGNED_CHECKPOINT_LOOKBACK]:
        if chain.checkpoint_valid(row, keys):
            return row["created_at"]
    return None


def audit_unsealed_count() -> int:
    """Committed events waiting for the sealer (above the sealed horizon)."""
    return AuditEvent.objects.filter(id__gt=audit_sealed_horizon()).count()


@dataclass
class VerifyReport:
    checked: int = 0
    head_position: int = 0
    anchor_position: int = 0
    checkpoints: int = 0
    unsealed: int = 0
    # Witness name -> how many checkpoints it holds (all found in the database).
    witnessed: dict[str, int] = field(default_factory=dict)
    problem: chain.Problem | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None


def audit_chain_verify(
    *,
    chunk_size: int = 5000,
    witnesses: dict[str, list[tuple[int, dict[str, Any]]]] | None = None,
) -> VerifyReport:
    """Walk the checkpoints, compare the witnesses, then walk the events; stop at the first break.

    Checkpoints come first (signature under one of our keys, link to the previous
    checkpoint, no disagreement between what they sign): a chain recomputed after
    tampering is self-consistent, but it no longer matches heads signed before.
    The witnesses (copies outside the database) then catch what a database holder
    can do to the checkpoints themselves: delete the newest, re-insert older ones,
    restore an old backup. Last, every sealed event is checked against its
    neighbour and against every signed head and anchor at its position.
    """
    report = VerifyReport(unsealed=audit_unsealed_count())
    keys = audit_verification_keys()
    held = chain.CheckpointChain(keys)
    rows = AuditCheckpoint.objects.order_by("id").values(*CHECKPOINT_COLUMNS)
    for checkpoint in rows.iterator(chunk_size=chunk_size):
        anchored_at = held.anchor_position
        report.problem = held.feed(checkpoint)
        if (
            report.problem is None
            and checkpoint["anchor_position"] > anchored_at
            and checkpoint["kind"] != CheckpointKind.PRUNE
        ):
            # Only a prune moves the anchor, and it signs its own checkpoint: the
            # anchor of the others is read from the seal table, where a superuser who
            # deleted the oldest events would otherwise have it signed as a prune.
            report.problem = chain.Problem(
                checkpoint["anchor_position"],
                "the prune anchor moved without a prune checkpoint",
                checkpoint=chain.describe_checkpoint(checkpoint),
            )
        if report.problem is not None:
            report.checkpoints = held.count
            return report
    report.checkpoints = held.count
    anchor_position, anchor_hash = held.anchor_position, held.anchor_hash
    report.anchor_position = anchor_position

    for name, entries in (witnesses or {}).items():
        report.problem = chain.witness_compare(held, entries, keys, name=name)
        if report.problem is not None:
            return report
        report.witnessed[name] = len(entries)

    stray = (
        audit_events_sealed()
        .filter(position__lte=anchor_position)
        .aggregate(first=Min("position"))
        .get("first")
    )
    if stray is not None:
        report.problem = chain.Problem(stray, "event present at or below the prune anchor")
        return report
    walker = chain.ChainWalker(
        anchor_position=anchor_position, anchor_hash=anchor_hash, contiguous=True
    )
    events = audit_events_sealed()
    for values in audit_events_stream(events=events, after=anchor_position, chunk_size=chunk_size):
        problem = walker.feed(chain.event_record(values), values["prev_hash"], values["hash"])
        claim = held.claims.get(walker.position)
        if problem is None and claim is not None and claim[0] != walker.hash:
            problem = chain.Problem(
                walker.position,
                "differs from its signed checkpoint (rewritten at or before)",
                checkpoint=claim[1],
            )
        if problem is not None:
            report.problem = problem
            return report
        report.checked += 1
    report.head_position = walker.position
    newest_signed = max((p for p in held.claims if p > anchor_position), default=anchor_position)
    if newest_signed > walker.position:
        report.problem = chain.Problem(
            walker.position + 1,
            f"missing (a checkpoint signed position {newest_signed})",
            checkpoint=held.claims[newest_signed][1],
        )
        return report
    seal_anchor = audit_chain_anchor()
    if seal_anchor != (anchor_position, anchor_hash):
        # What the sealer, checkpoints and exports start from must be what was signed.
        report.problem = chain.Problem(
            seal_anchor[0],
            f"the seal table's anchor is not the signed prune anchor (position {anchor_position})",
        )
        return report
    skipped = (
        AuditEvent.objects.filter(seal__isnull=True, id__lt=audit_sealed_horizon())
        .values_list("id", flat=True)
        .first()
    )
    if skipped is not None:
        # The sealer seals every committed event below its horizon: a row here was
        # inserted behind its back (an explicit id), outside the chain.
        report.problem = chain.Problem(
            None, f"event id {skipped} is below the sealed head but not sealed"
        )
    return report


def audit_keys_published() -> list[dict[str, Any]]:
    """Every configured audit key's public JWK, newest first, with its status and period."""
    periods = {
        row["key_id"]: row
        for row in AuditCheckpoint.objects.order_by()
        .values("key_id")
        .annotate(first=Min("created_at"), last=Max("created_at"))
    }
    keys = []
    for rank, jwk in enumerate(audit_public_jwks()):
        period = periods.get(jwk["kid"], {})
        first, last = period.get("first"), period.get("last")
        keys.append(
            {
                **jwk,
                "status": "current" if rank == 0 else "retired",
                "not_before": chain.format_timestamp(first) if first else None,
                "not_after": chain.format_timestamp(last) if last and rank > 0 else None,
            }
        )
    return keys


# --- The console's dashboard: from the hourly counts, never the event table ----


def audit_counts_by_hour(
    *, since: datetime, until: datetime, event_types: tuple[str, ...]
) -> dict[tuple[datetime, str, str], int]:
    """``(hour, event_type, outcome) -> count`` of sealed events in ``[since, until)``.

    Reads ``AuditHourlyCount`` (a few rows per hour), so a 30-day chart reads
    hundreds of rows whatever the size of the trail.
    """
    rows = (
        AuditHourlyCount.objects.filter(hour__gte=since, hour__lt=until, event_type__in=event_types)
        .values("hour", "event_type", "outcome")
        .annotate(total=Sum("count"))
        .order_by()
    )
    return {(row["hour"], row["event_type"], row["outcome"]): row["total"] for row in rows}


def audit_top_machines(*, since: datetime, limit: int = 5) -> list[dict[str, Any]]:
    """The machines with the most token events since ``since``, with their failures."""
    rows = (
        AuditHourlyMachineCount.objects.filter(hour__gte=since)
        .values("machine")
        .annotate(
            total=Sum("count"),
            failures=Sum("count", filter=Q(outcome="failure")),
        )
        .order_by("-total", "machine")[:limit]
    )
    return [{**row, "failures": row["failures"] or 0} for row in rows]


def audit_top_failure_reasons(*, since: datetime, limit: int = 5) -> list[dict[str, Any]]:
    """The commonest failure reasons since ``since``, each with its event type."""
    return list(
        AuditHourlyCount.objects.filter(hour__gte=since, outcome="failure")
        .values("event_type", "reason")
        .annotate(total=Sum("count"))
        .order_by("-total", "event_type", "reason")[:limit]
    )


@dataclass(frozen=True)
class ChainState:
    """What the dashboard says about the chain, from its newest checkpoint (cheap)."""

    checkpoint: dict[str, Any] | None
    signature_valid: bool
    links_to_previous: bool
    head_matches: bool
    head_position: int
    unsealed: int

    @property
    def verifies(self) -> bool:
        return (
            self.checkpoint is not None
            and self.signature_valid
            and self.links_to_previous
            and self.head_matches
        )


def audit_chain_state() -> ChainState:
    """The newest checkpoint, checked in three lookups instead of a walk of the chain.

    Its signature must verify under one of our audit keys, it must name the
    digest of the checkpoint before it, and the seal at the position it signed
    must still carry the hash it signed. ``audit_verify`` walks everything; this
    is what a page load can afford, and it notices a rewritten recent history.
    """
    newest_two = list(AuditCheckpoint.objects.order_by("-id").values(*CHECKPOINT_COLUMNS)[:2])
    head_position = audit_chain_head()[0]
    unsealed = audit_unsealed_count()
    if not newest_two:
        return ChainState(None, False, False, False, head_position, unsealed)
    newest = newest_two[0]
    keys = audit_verification_keys()
    signature_valid = chain.checkpoint_valid(newest, keys)
    if len(newest_two) == 2:
        links = newest["prev_checkpoint"] == chain.checkpoint_digest(newest_two[1])
    else:
        links = True  # the first checkpoint has none before it
    if newest["position"] == 0:
        head_matches = True
    else:
        sealed_hash = (
            AuditSeal.objects.filter(position=newest["position"])
            .values_list("hash", flat=True)
            .first()
        )
        head_matches = sealed_hash == newest["head_hash"]
    return ChainState(newest, signature_valid, links, head_matches, head_position, unsealed)


# --- The console's audit log: keyset pages newest first ------------------------


@dataclass(frozen=True)
class AuditLogQuery:
    """The audit log's filters: the export's (``AuditFilters``) plus a search."""

    filters: AuditFilters = AuditFilters()
    search: str = ""

    def reads_unindexed(self) -> bool:
        """A search or an address: every row in range is read, no index narrows it."""
        return bool(self.search or self.filters.source_ip)


# How many events (in the time range, from the cursor) a search or an address filter
# reads for one page at most: ~0.15 s at 10M events (make bench-console), whatever the
# range. A page that reaches the bound says how far it read and links onwards.
AUDIT_LOG_SCAN_LIMIT = 100_000


@dataclass(frozen=True)
class AuditLogPage:
    """One page of the audit log and where the next one starts.

    ``scanned_to`` is set when the page stopped at the scan bound rather than
    after ``size`` matches: the events from the cursor down to that moment were
    read, and ``cursor`` continues below them (there may be no further match).
    """

    events: list[AuditEvent]
    cursor: tuple[datetime, int] | None
    scanned_to: datetime | None = None


def _newest_first(events: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
    return events.order_by("-occurred_at", "-id")


def _below(events: QuerySet[AuditEvent], key: tuple[datetime, int]) -> QuerySet[AuditEvent]:
    at, event_id = key
    # The plain bound first: the OR alone is not an index range, and PostgreSQL
    # would walk from the newest row down to the cursor on every page.
    return events.filter(occurred_at__lte=at).filter(
        Q(occurred_at__lt=at) | Q(occurred_at=at, id__lt=event_id)
    )


def _at_or_above(events: QuerySet[AuditEvent], key: tuple[datetime, int]) -> QuerySet[AuditEvent]:
    at, event_id = key
    return events.filter(occurred_at__gte=at).filter(
        Q(occurred_at__gt=at) | Q(occurred_at=at, id__gte=event_id)
    )


def _log_filter(events: QuerySet[AuditEvent], query: AuditLogQuery) -> QuerySet[AuditEvent]:
    """Every filter but the machine's (``audit_log_page`` reads its two sides apart)."""
    filters = query.filters
    if filters.since is not None:
        events = events.filter(occurred_at__gte=filters.since)
    if filters.until is not None:
        events = events.filter(occurred_at__lt=filters.until)
    if filters.event_types:
        events = events.filter(event_type__in=filters.event_types)
    if filters.actor:
        kind, sep, actor_id = filters.actor.partition(":")
        if sep and kind in ActorKind.values:
            events = events.filter(actor_kind=kind, actor_id=actor_id)
        else:
            events = events.filter(actor_id=filters.actor)
    if filters.outcome:
        events = events.filter(outcome=filters.outcome)
    if filters.source_ip:
        events = events.filter(source_ip=filters.source_ip)
    if query.search:
        term = query.search
        events = events.filter(
            Q(actor_display__icontains=term)
            | Q(target_display__icontains=term)
            | Q(target_id=term)
            | Q(actor_id=term)
            | Q(reason=term)
            | Q(request_id=term)
        )
    return events


def _scan_bound(
    *, query: AuditLogQuery, before: tuple[datetime, int] | None, scan_limit: int
) -> tuple[datetime, int] | None:
    """The oldest of the ``scan_limit`` newest events in range below the cursor.

    None when no older event is left beyond them (the page reads them all).
    Only the time range and the cursor: an index range on ``occurred_at``, so
    finding the bound costs the same whatever else is asked.
    """
    in_range = AuditEvent.objects.all()
    if query.filters.since is not None:
        in_range = in_range.filter(occurred_at__gte=query.filters.since)
    if query.filters.until is not None:
        in_range = in_range.filter(occurred_at__lt=query.filters.until)
    if before is not None:
        in_range = _below(in_range, before)
    keys = _newest_first(in_range).values_list("occurred_at", "id")
    last_and_next = list(keys[scan_limit - 1 : scan_limit + 1])
    return last_and_next[0] if len(last_and_next) == 2 else None


def audit_log_page(
    *,
    query: AuditLogQuery,
    before: tuple[datetime, int] | None,
    size: int,
    scan_limit: int = AUDIT_LOG_SCAN_LIMIT,
) -> AuditLogPage:
    """One page of events, newest first, and the cursor of the next page (or None).

    Keyset pagination on ``(occurred_at, id)``: each page is an index range scan
    from the cursor, as fast on page 1,000 as on page 1, and a row committed
    meanwhile never shifts a page. Unsealed events are shown too (the log is
    where one sees them), each with its seal when it has one.

    A search or an address filter reads at most ``scan_limit`` events per page
    (no index finds them): a page that stops there has ``scanned_to``, and its
    cursor continues below the events read. A machine is "its requests or
    changes made to it": the two sides are read apart, each newest first along
    its own index, and merged, as PostgreSQL would otherwise walk the whole
    trail for a machine without a match (make bench-console: 7.8 s).
    """
    events = _log_filter(AuditEvent.objects.all(), query)
    bound = None
    if query.reads_unindexed():
        bound = _scan_bound(query=query, before=before, scan_limit=scan_limit)
        if bound is not None:
            events = _at_or_above(events, bound)
    if before is not None:
        events = _below(events, before)
    machine = query.filters.machine
    if machine:
        sides = (
            events.filter(actor_kind=ActorKind.MACHINE, actor_id=machine),
            events.filter(target_kind="machine", target_id=machine),
        )
        keys = sorted(
            {
                key
                for side in sides
                for key in _newest_first(side).values_list("occurred_at", "id")[: size + 1]
            },
            reverse=True,
        )[: size + 1]
        events = AuditEvent.objects.filter(id__in=[event_id for _, event_id in keys])
    rows = list(_newest_first(events.select_related("seal"))[: size + 1])
    if len(rows) > size:
        rows = rows[:size]
        return AuditLogPage(events=rows, cursor=(rows[-1].occurred_at, rows[-1].id))
    if bound is not None:
        return AuditLogPage(events=rows, cursor=bound, scanned_to=bound[0])
    return AuditLogPage(events=rows, cursor=None)


def audit_events_of_machine(*, client_id: str, limit: int = 20) -> list[AuditEvent]:
    """A machine's newest events (its requests, and changes made to it)."""
    query = AuditLogQuery(filters=AuditFilters(machine=client_id))
    return audit_log_page(query=query, before=None, size=limit).events


def audit_machine_counts(*, client_id: str, since: datetime) -> dict[str, int]:
    """A machine's token events since ``since`` by outcome (from the hourly counts)."""
    rows = (
        AuditHourlyMachineCount.objects.filter(machine=client_id, hour__gte=since)
        .values("outcome")
        .annotate(total=Sum("count"))
        .order_by()
    )
    counts = {"success": 0, "failure": 0}
    counts.update({row["outcome"]: row["total"] for row in rows})
    return counts
