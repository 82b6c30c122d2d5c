"""Writes to the audit trail.

``audit_record`` is called inside the transaction of the change it records,
so neither commits without the other. It is a plain INSERT with no lock and
no read of the chain head: the token endpoint writes concurrently, and the
sealer orders committed events afterwards.

The sealer, checkpoints and pruning all take the chain lock (a transaction-level
advisory lock on PostgreSQL; SQLite's IMMEDIATE transactions already serialise
writers), so exactly one of them moves the chain head at a time and it never forks.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tempfile
import time
import zipfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit import chain
from audit.choices import ActorKind, CheckpointKind, EventType, Outcome
from audit.context import Actor, RequestContext, Target
from audit.models import (
    AuditCheckpoint,
    AuditEvent,
    AuditHourlyCount,
    AuditHourlyMachineCount,
    AuditSeal,
)
from audit.selectors import (
    AuditFilters,
    audit_chain_anchor,
    audit_chain_head,
    audit_checkpoint_last,
    audit_events_filter,
    audit_events_sealed,
    audit_events_stream,
    audit_sealed_horizon,
)
from audit.signing import audit_key_id, audit_public_jwk, audit_sign
from audit.witness import audit_witness_publish

logger = logging.getLogger(__name__)

# An event's own columns that its hashed record covers (the rest come from its seal).
EVENT_RECORD_COLUMNS = tuple(
    name for name in chain.RECORD_FIELDS if name not in ("position", "sealed_at")
)

# How long a sealer run waits for open transactions that may still commit events
# below the newest id (the token path's are done in milliseconds).
SEAL_WAIT_SECONDS = 5.0

# pg_advisory_xact_lock key of the chain head ("audit" in ASCII).
CHAIN_LOCK_KEY = 0x6175646974

# Keys that must never appear in an event's details, at any depth.
FORBIDDEN_DETAIL_KEYS = frozenset(
    {
        "secret",
        "client_secret",
        "password",
        "token",
        "access_token",
        "id_token",
        "refresh_token",
        "private_key",
        "key_material",
    }
)


_CONTAINERS = (dict, list, tuple)


def _check_details(value: Any) -> None:
    # Descends only into containers: a leaf costs an isinstance, not a call (every
    # token's event has about ten).
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key).lower() in FORBIDDEN_DETAIL_KEYS:
                raise ValueError(f"audit details must not carry {key!r}")
            if isinstance(item, _CONTAINERS):
                _check_details(item)
    elif isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, _CONTAINERS):
                _check_details(item)


def audit_event_fields(
    *,
    event_type: str,
    actor: Actor,
    target: Target | None = None,
    outcome: str = Outcome.SUCCESS,
    reason: str = "",
    details: dict[str, Any] | None = None,
    context: RequestContext | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """An event's checked column values, by attribute name.

    For callers that insert the event with other rows in one statement and
    need no model instance (the token endpoint: building one costs more CPU
    than the insert); ``audit_record`` builds its instance from the same values.
    """
    details = details or {}
    _check_details(details)

    target = target or Target(kind="")
    context = context or RequestContext()
    return {
        "occurred_at": occurred_at or timezone.now(),
        "event_type": event_type,
        "actor_kind": actor.kind,
        "actor_id": actor.id,
        "actor_display": actor.display[:255],
        "target_kind": target.kind,
        "target_id": target.id,
        "target_display": target.display[:255],
        "outcome": outcome,
        "reason": reason,
        "source_ip": context.source_ip,
        # PostgreSQL refuses NUL in text: a hostile User-Agent must not become a 500.
        "user_agent": context.user_agent[:512].replace("\x00", "\ufffd"),
        "request_id": context.request_id,
        "details": details,
    }


def audit_record(**kwargs: Any) -> AuditEvent:
    """Insert one event (same keywords as ``audit_event_fields``)."""
    event = AuditEvent(**audit_event_fields(**kwargs))
    event.save(force_insert=True)
    return event


# --- Sealing ----------------------------------------------------------------


def _chain_lock() -> None:
    """Serialise everything that moves the chain head (call inside a transaction)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_KEY])


def _committed_below() -> int | None:
    """PostgreSQL: the highest event id below which every event is committed or gone.

    Ids are drawn when a row is inserted, but transactions commit in any order:
    an event with a lower id can become visible after a higher one was sealed.
    So the sealer reads the highest visible id with its snapshot, then waits for
    the transactions of this database that were running at that snapshot. Every
    event at or below that id was drawn by a transaction that had its xid already
    (the id column's default takes the xid before ``nextval``, migration 0009),
    so once those are done nothing below it can still appear. None when one of
    them is still running after ``SEAL_WAIT_SECONDS``: this run seals nothing
    new, the next one tries again. Only sessions whose ``backend_xid`` this role
    may see are waited for: the runtime role sees its own, which are the ones
    that write events.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(max(id), 0), pg_current_snapshot()::text FROM audit_auditevent"
        )
        top, snapshot = cursor.fetchone()
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT array_agg(x::text) FROM pg_snapshot_xip(%s::pg_snapshot) AS x "
            "WHERE xid(x) IN (SELECT backend_xid FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_xid IS NOT NULL)",
            [snapshot],
        )
        running = cursor.fetchone()[0] or []
        deadline = time.monotonic() + SEAL_WAIT_SECONDS
        while running:
            cursor.execute(
                "SELECT array_agg(x) FROM unnest(%s::text[]) AS x "
                "WHERE pg_xact_status(x::xid8) = 'in progress'",
                [running],
            )
            running = cursor.fetchone()[0] or []
            if not running:
                break
            if time.monotonic() >= deadline:
                logger.warning(
                    "audit sealing waits for %d open transaction(s); nothing new sealed",
                    len(running),
                )
                return None
            time.sleep(0.005)
    return top


@transaction.atomic
def _seal_batch(*, batch_size: int, up_to: int | None) -> int:
    _chain_lock()
    events = AuditEvent.objects.filter(id__gt=audit_sealed_horizon())
    if up_to is not None:
        events = events.filter(id__lte=up_to)
    rows = list(events.order_by("id").values("id", *EVENT_RECORD_COLUMNS)[:batch_size])
    if not rows:
        return 0
    position, prev_hash = audit_chain_head()
    sealed_at = timezone.now()
    seals = []
    for row in rows:
        position += 1
        row.update(position=position, sealed_at=sealed_at)
        digest = chain.event_hash(chain.event_record(row), prev_hash)
        seals.append(
            AuditSeal(
                position=position,
                event_id=row["id"],
                prev_hash=prev_hash,
                hash=digest,
                sealed_at=sealed_at,
            )
        )
        prev_hash = digest
    if connection.vendor == "postgresql":
        # One INSERT from arrays (one short statement, whatever the batch size); the
        # trigger checks the rows extend the head.
        columns = list(
            zip(*((s.position, s.event_id, s.prev_hash, s.hash) for s in seals), strict=True)
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO audit_auditseal (position, event_id, prev_hash, hash, sealed_at) "
                "SELECT p, e, ph, h, %s FROM unnest(%s::bigint[], %s::bigint[], %s::text[], "
                "%s::text[]) AS v(p, e, ph, h)",
                [connection.ops.adapt_datetimefield_value(sealed_at), *map(list, columns)],
            )
    else:
        AuditSeal.objects.bulk_create(seals)
    _hourly_counts_add(rows)
    return len(rows)


# The events the dashboard counts per machine: a machine's own requests.
_MACHINE_COUNTED = (
    EventType.TOKEN_ISSUED,
    EventType.TOKEN_DENIED,
    EventType.TOKEN_REVOKED,
    EventType.TOKEN_INTROSPECTED,
)


def _event_machine(row: dict[str, Any]) -> str:
    if row["actor_kind"] == ActorKind.MACHINE:
        return row["actor_id"]
    return row["target_id"] if row["target_kind"] == "machine" else ""


def _upsert_counts(table: str, key_columns: tuple[str, ...], counts: Counter) -> None:
    """Add ``counts`` to ``table``'s rows, creating the missing ones: one statement.

    ``INSERT ... ON CONFLICT DO UPDATE`` (PostgreSQL and SQLite 3.24+): concurrent
    sealers are serialised by the chain lock anyway, and a row is never read back
    into Python to be incremented.
    """
    if not counts:
        return
    columns = (*key_columns, "count")
    placeholders = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(counts))
    params = [
        connection.ops.adapt_datetimefield_value(value) if isinstance(value, datetime) else value
        for key, count in counts.items()
        for value in (*key, count)
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES {placeholders} "  # noqa: S608 (names are ours)
            f"ON CONFLICT ({', '.join(key_columns)}) DO UPDATE "
            f"SET count = {table}.count + excluded.count",
            params,
        )


def _hourly_counts_add(rows: list[dict[str, Any]]) -> None:
    """Count a sealed batch into the dashboard's hourly tables, in the sealing transaction."""
    totals: Counter = Counter()
    machines: Counter = Counter()
    for row in rows:
        hour = row["occurred_at"].replace(minute=0, second=0, microsecond=0)
        totals[(hour, row["event_type"], row["outcome"], row["reason"][:64])] += 1
        if row["event_type"] in _MACHINE_COUNTED:
            machine = _event_machine(row)
            if machine:
                machines[(hour, machine[:128], row["outcome"])] += 1
    _upsert_counts(
        AuditHourlyCount._meta.db_table, ("hour", "event_type", "outcome", "reason"), totals
    )
    _upsert_counts(AuditHourlyMachineCount._meta.db_table, ("hour", "machine", "outcome"), machines)


def audit_seal_pending(*, batch_size: int | None = None, max_batches: int | None = None) -> int:
    """Give every committed unsealed event the next chain position; return how many.

    Each event is written once, when it is recorded; sealing appends one
    ``AuditSeal`` row per event and touches no event row. What to seal is found
    as the events above the sealed horizon (the highest sealed event id), in id
    order, up to the highest id below which every transaction has finished
    (``_committed_below``), so an event that commits after a higher id never
    falls behind the horizon unsealed. Each batch is its own short transaction
    under the chain lock, so the lock is never held for long.
    """
    batch_size = batch_size or settings.AUDIT_SEAL_BATCH_SIZE
    up_to = None
    if connection.vendor == "postgresql":
        # SQLite runs one write transaction at a time: ids arrive in commit order.
        up_to = _committed_below()
        if up_to is None:
            return 0
    total = batches = 0
    while max_batches is None or batches < max_batches:
        sealed = _seal_batch(batch_size=batch_size, up_to=up_to)
        total += sealed
        batches += 1
        if sealed < batch_size:
            break
    return total


# --- Checkpoints --------------------------------------------------------------


def checkpoint_values(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    """A checkpoint's stored values, as ``chain`` and the witnesses read them."""
    return {
        name: getattr(checkpoint, name)
        for name in ("id", *chain.CHAINED_CHECKPOINT_FIELDS, "signature")
    }


def _checkpoint_build(
    *, kind: str, position: int, head_hash: str, anchor_position: int, anchor_hash: str
) -> AuditCheckpoint:
    """A signed checkpoint chained to the last one, not saved yet (call under the chain lock).

    The one place checkpoints are made: ``_checkpoint_insert`` saves it; a prune
    hands it to the database's prune function, which writes it in the same
    transaction as the deletion.
    """
    last = audit_checkpoint_last()
    checkpoint = AuditCheckpoint(
        created_at=timezone.now(),
        kind=kind,
        position=position,
        head_hash=head_hash,
        anchor_position=anchor_position,
        anchor_hash=anchor_hash,
        key_id=audit_key_id(),
        prev_checkpoint=chain.checkpoint_digest(last) if last else chain.GENESIS_CHECKPOINT,
    )
    checkpoint.signature = audit_sign(chain.checkpoint_payload(checkpoint_values(checkpoint)))
    return checkpoint


def _checkpoint_witness_on_commit(checkpoint: AuditCheckpoint) -> None:
    """Once the transaction commits, copy the checkpoint (and any a witness missed) to
    the witnesses outside the database; a failing witness never undoes or blocks it."""
    values = checkpoint_values(checkpoint)
    transaction.on_commit(lambda: audit_witness_publish(checkpoint=values), robust=True)


def _checkpoint_insert(
    *, kind: str, position: int, head_hash: str, anchor_position: int, anchor_hash: str
) -> AuditCheckpoint:
    checkpoint = _checkpoint_build(
        kind=kind,
        position=position,
        head_hash=head_hash,
        anchor_position=anchor_position,
        anchor_hash=anchor_hash,
    )
    checkpoint.save(force_insert=True)
    _checkpoint_witness_on_commit(checkpoint)
    return checkpoint


@transaction.atomic
def audit_checkpoint_create(*, kind: str = CheckpointKind.SCHEDULED) -> AuditCheckpoint:
    """Sign the current chain head, also when nothing happened since the last one."""
    _chain_lock()
    position, head_hash = audit_chain_head()
    anchor_position, anchor_hash = audit_chain_anchor()
    return _checkpoint_insert(
        kind=kind,
        position=position,
        head_hash=head_hash,
        anchor_position=anchor_position,
        anchor_hash=anchor_hash,
    )


# --- Retention ----------------------------------------------------------------


class AuditPruneRefused(Exception):
    """The database refused the prune (the retention floor, most likely); nothing changed."""


@dataclass(frozen=True)
class PruneResult:
    deleted: int
    anchor_position: int


def _checkpoint_columns(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    """The checkpoint's columns as JSON for the prune function (every column but the id)."""
    values = {}
    for field in AuditCheckpoint._meta.concrete_fields:
        if field.primary_key:
            continue
        value = getattr(checkpoint, field.attname)
        values[field.column] = value.isoformat() if isinstance(value, datetime) else value
    return values


def _prune_prefix(*, up_to: int, checkpoint: AuditCheckpoint) -> int:
    """Delete the events sealed at positions up to ``up_to`` and write the prune checkpoint.

    On PostgreSQL the runtime role can do neither itself: ``audit_prune_prefix``
    (SECURITY DEFINER, owned by the migration role) checks that the positions
    are a sealed prefix older than the retention floor only the migration role
    sets, that the checkpoint anchors exactly there at the current head, then
    deletes and inserts it. The seal row of ``up_to`` stays as the anchor.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            try:
                cursor.execute(
                    "SELECT audit_prune_prefix(%s, %s::jsonb)",
                    [up_to, json.dumps(_checkpoint_columns(checkpoint))],
                )
            except DatabaseError as exc:
                diag = getattr(exc.__cause__, "diag", None)
                raise AuditPruneRefused(getattr(diag, "message_primary", None) or str(exc)) from exc
            deleted = cursor.fetchone()[0]
        # The function inserted the row: learn its id for the witnesses.
        checkpoint.id = (
            AuditCheckpoint.objects.filter(signature=checkpoint.signature)
            .values_list("id", flat=True)
            .get()
        )
        return deleted
    # The embedded tier: one trust domain, nothing below the ORM to ask.
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM audit_auditevent WHERE id IN "
            "(SELECT event_id FROM audit_auditseal WHERE position <= %s)",
            [up_to],
        )
        deleted = cursor.rowcount
        cursor.execute("DELETE FROM audit_auditseal WHERE position < %s", [up_to])
    checkpoint.save(force_insert=True)
    return deleted


@transaction.atomic
def audit_prune(
    *, actor: Actor | None = None, retention_days: int | None = None, now: datetime | None = None
) -> PruneResult:
    """Delete the oldest sealed events past retention, as a prefix of the chain.

    Only positions below the first sealed event that is still within retention
    go, so what remains is a contiguous chain; the prune checkpoint records the
    last deleted position and its hash as the anchor verification starts from.
    """
    days = settings.AUDIT_RETENTION_DAYS if retention_days is None else retention_days
    if days <= 0:
        return PruneResult(deleted=0, anchor_position=audit_chain_anchor()[0])
    cutoff = (now or timezone.now()) - timedelta(days=days)
    _chain_lock()
    head_position, head_hash = audit_chain_head()
    old_anchor, _ = audit_chain_anchor()
    keep_from = (
        audit_events_sealed()
        .filter(occurred_at__gte=cutoff)
        .order_by("position")
        .values_list("position", flat=True)
        .first()
    )
    up_to = head_position if keep_from is None else keep_from - 1
    anchor_hash = AuditSeal.objects.filter(position=up_to).values_list("hash", flat=True).first()
    if up_to <= old_anchor or anchor_hash is None:
        return PruneResult(deleted=0, anchor_position=old_anchor)
    checkpoint = _checkpoint_build(
        kind=CheckpointKind.PRUNE,
        position=head_position,
        head_hash=head_hash,
        anchor_position=up_to,
        anchor_hash=anchor_hash,
    )
    deleted = _prune_prefix(up_to=up_to, checkpoint=checkpoint)
    _checkpoint_witness_on_commit(checkpoint)
    audit_record(
        event_type=EventType.AUDIT_PRUNED,
        actor=actor or Actor.system("retention"),
        target=Target(kind="audit_trail"),
        details={
            "deleted": deleted,
            "up_to_position": up_to,
            "cutoff": chain.format_timestamp(cutoff),
            "retention_days": days,
        },
    )
    return PruneResult(deleted=deleted, anchor_position=up_to)


# --- Export -------------------------------------------------------------------

EXPORT_FORMATS = ("jsonl", "csv")
# Exports that start again when a prune lands between their checkpoint and their snapshot.
EXPORT_ATTEMPTS = 3


@contextmanager
def _export_snapshot():
    """One read-only REPEATABLE READ transaction for the whole export (PostgreSQL).

    The file is read in many windows; each would otherwise see the database as
    it is then, and a prune committed half-way would remove lines the signed
    manifest already promised. With one snapshot the export sees the chain as
    it was at its first read: nothing deleted after that can go missing. Inside
    an open transaction (tests) the outer one decides. SQLite: no transaction,
    since an IMMEDIATE one would hold every writer for the export (the embedded
    tier prunes from the same host, once a day).
    """
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def manifest_path_for(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".manifest.json")


def _write_jsonl(handle, rows) -> tuple[int, int | None, int | None]:
    count, first, last = 0, None, None
    for values in rows:
        record = chain.event_record(values)
        line = {**record, "prev_hash": values["prev_hash"], "hash": values["hash"]}
        handle.write(chain.canonical_json(line) + b"\n")
        count, first, last = count + 1, first or record["position"], record["position"]
    return count, first, last


def _write_csv(handle, rows) -> tuple[int, int | None, int | None]:
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="", write_through=True)
    # CRLF rows (RFC 4180): Python's writer quotes a cell only for the characters of
    # its line terminator, so with "\n" alone a bare "\r" in a value split the row.
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(chain.EXPORT_FIELDS)
    count, first, last = 0, None, None
    for values in rows:
        record = chain.event_record(values)
        record["source_ip"] = record["source_ip"] or ""
        record["details"] = chain.canonical_json(record["details"]).decode("utf-8")
        cells = [*record.values(), values["prev_hash"], values["hash"]]
        writer.writerow([chain.csv_escape(c) if isinstance(c, str) else c for c in cells])
        count, first, last = count + 1, first or record["position"], record["position"]
    text.detach()
    return count, first, last


def audit_export(
    *,
    fmt: str,
    filters: AuditFilters,
    out_path: Path,
    actor: Actor,
    context: RequestContext | None = None,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Write sealed events matching ``filters`` to ``out_path`` plus a signed manifest.

    The export first signs a checkpoint at the current head and exports up to
    it, so the manifest carries a signed head covering every line and the
    anchor the lines chain from. Rows stream in keyset batches (bounded
    memory); the ``audit.exported`` event is written once the file is complete.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}")
    for _attempt in range(EXPORT_ATTEMPTS):
        checkpoint = audit_checkpoint_create(kind=CheckpointKind.EXPORT)
        with _export_snapshot():
            if audit_chain_anchor() != (checkpoint.anchor_position, checkpoint.anchor_hash):
                continue  # a prune moved the anchor after the checkpoint: sign a new one
            rows = audit_events_stream(
                events=audit_events_filter(filters=filters),
                after=checkpoint.anchor_position,
                up_to=checkpoint.position,
                chunk_size=chunk_size or settings.AUDIT_EXPORT_CHUNK_SIZE,
            )
            with out_path.open("wb") as handle:
                write = _write_csv if fmt == "csv" else _write_jsonl
                count, first, last = write(handle, rows)
            break
    else:
        raise RuntimeError("retention pruning kept moving the audit chain's anchor; export again")
    public_jwk = audit_public_jwk()
    manifest: dict[str, Any] = {
        "version": chain.FORMAT_VERSION,
        "format": fmt,
        "created_at": chain.format_timestamp(timezone.now()),
        "file_name": out_path.name,
        "file_sha256": chain.file_sha256(out_path),
        "filters": filters.as_dict(),
        "contiguous": filters.is_empty(),
        "count": count,
        "first_position": first,
        "last_position": last,
        "anchor_position": checkpoint.anchor_position,
        "anchor_hash": checkpoint.anchor_hash,
        "checkpoints": [chain.checkpoint_signed(checkpoint_values(checkpoint))],
        "key_id": public_jwk["kid"],
        "public_key": public_jwk,
    }
    manifest["signature"] = audit_sign(chain.manifest_payload(manifest))
    manifest_path_for(out_path).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    with transaction.atomic():
        audit_record(
            event_type=EventType.AUDIT_EXPORTED,
            actor=actor,
            target=Target(
                kind="audit_export", id=manifest["file_sha256"][:16], display=out_path.name
            ),
            details={
                "format": fmt,
                "filters": manifest["filters"],
                "count": count,
                "first_position": first,
                "last_position": last,
                "file_sha256": manifest["file_sha256"],
            },
            context=context,
        )
    return manifest


def audit_export_bundle(
    *, fmt: str, filters: AuditFilters, actor: Actor, context: RequestContext | None
) -> tuple[BinaryIO, str]:
    """An export and its signed manifest in one zip: an open file and its download name.

    What the API and the console's Export button answer. The zip is written to a
    temporary folder that is removed at once; the open handle outlives it (POSIX),
    so the zip streams from disk and disappears when the response closes it.
    """
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    with tempfile.TemporaryDirectory(prefix="audit-export-") as folder:
        out = Path(folder) / f"audit-{stamp}.{fmt}"
        audit_export(fmt=fmt, filters=filters, out_path=out, actor=actor, context=context)
        bundle = Path(folder) / "bundle.zip"
        with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.write(out, out.name)
            archive.write(manifest_path_for(out), manifest_path_for(out).name)
        handle = bundle.open("rb")
    return handle, f"audit-{stamp}.zip"
