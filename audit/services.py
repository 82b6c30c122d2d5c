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
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit import chain
from audit.choices import CheckpointKind, EventType, Outcome
from audit.context import Actor, RequestContext, Target
from audit.models import AuditCheckpoint, AuditEvent
from audit.selectors import (
    AuditFilters,
    audit_chain_anchor,
    audit_chain_head,
    audit_checkpoint_last,
    audit_events_filter,
    audit_events_stream,
)
from audit.signing import audit_key_id, audit_public_jwk, audit_sign
from audit.witness import audit_witness_publish

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


def _check_details(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key).lower() in FORBIDDEN_DETAIL_KEYS:
                raise ValueError(f"audit details must not carry {key!r}")
            _check_details(item)
    elif isinstance(value, list | tuple):
        for item in value:
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


@transaction.atomic
def _seal_batch(*, batch_size: int, after_id: int) -> tuple[int, int]:
    _chain_lock()
    rows = list(
        AuditEvent.objects.filter(position__isnull=True, id__gt=after_id)
        .order_by("id")
        .values("id", *chain.RECORD_FIELDS)[:batch_size]
    )
    if not rows:
        return 0, after_id
    position, prev_hash = audit_chain_head()
    sealed_at = timezone.now()
    stored_sealed_at = connection.ops.adapt_datetimefield_value(sealed_at)
    updates = []
    for row in rows:
        position += 1
        row.update(position=position, sealed_at=sealed_at)
        digest = chain.event_hash(chain.event_record(row), prev_hash)
        updates.append((row["id"], position, prev_hash, digest))
        prev_hash = digest
    with connection.cursor() as cursor:
        # The only UPDATE the trigger allows: empty seal fields filled once.
        if connection.vendor == "postgresql":
            ids, positions, prev_hashes, hashes = (list(c) for c in zip(*updates, strict=True))
            cursor.execute(
                "UPDATE audit_auditevent AS e SET position = v.position, prev_hash = v.prev_hash, "
                "hash = v.hash, sealed_at = %s "
                "FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[]) "
                "AS v(id, position, prev_hash, hash) WHERE e.id = v.id AND e.position IS NULL",
                [stored_sealed_at, ids, positions, prev_hashes, hashes],
            )
        else:
            cursor.executemany(
                "UPDATE audit_auditevent SET position = %s, prev_hash = %s, hash = %s, "
                "sealed_at = %s WHERE id = %s AND position IS NULL",
                [(p, prev, h, stored_sealed_at, i) for i, p, prev, h in updates],
            )
        if cursor.rowcount != len(rows):
            # Someone sealed these rows outside the lock: roll back rather than fork.
            raise RuntimeError("audit sealing raced with another sealer; nothing was sealed")
    return len(rows), rows[-1]["id"]


def audit_seal_pending(*, batch_size: int | None = None, max_batches: int | None = None) -> int:
    """Give every committed unsealed event the next chain position; return how many.

    Events are taken in id order among those committed now; one whose
    transaction commits later is sealed by a later run. Each batch is its own
    short transaction, so the lock is never held for long. Within one run the
    batches move forward by id (rows just sealed leave dead entries in the
    unsealed index until vacuum); the next run starts again from the lowest id.
    """
    batch_size = batch_size or settings.AUDIT_SEAL_BATCH_SIZE
    total = batches = last_id = 0
    while max_batches is None or batches < max_batches:
        sealed, last_id = _seal_batch(batch_size=batch_size, after_id=last_id)
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


def _checkpoint_insert(
    *, kind: str, position: int, head_hash: str, anchor_position: int, anchor_hash: str
) -> AuditCheckpoint:
    """Sign and insert the next checkpoint, chained to the last one (call under the chain lock).

    Once the transaction commits, the checkpoint (and any a witness missed) is
    copied to the witnesses outside the database; a failing witness never undoes
    or blocks the checkpoint.
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
    checkpoint.save(force_insert=True)
    values = checkpoint_values(checkpoint)
    transaction.on_commit(lambda: audit_witness_publish(checkpoint=values), robust=True)
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


@dataclass(frozen=True)
class PruneResult:
    deleted: int
    anchor_position: int


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
        AuditEvent.objects.filter(position__isnull=False, occurred_at__gte=cutoff)
        .order_by("position")
        .values_list("position", flat=True)
        .first()
    )
    up_to = head_position if keep_from is None else keep_from - 1
    anchor_hash = AuditEvent.objects.filter(position=up_to).values_list("hash", flat=True).first()
    if up_to <= old_anchor or anchor_hash is None:
        return PruneResult(deleted=0, anchor_position=old_anchor)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The trigger lets DELETE of sealed events through only with this
            # transaction-local flag, which ends with this transaction.
            cursor.execute("SET LOCAL audit.prune = 'on'")
        cursor.execute(
            "DELETE FROM audit_auditevent WHERE position IS NOT NULL AND position <= %s", [up_to]
        )
        deleted = cursor.rowcount
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL audit.prune = 'off'")
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
    _checkpoint_insert(
        kind=CheckpointKind.PRUNE,
        position=head_position,
        head_hash=head_hash,
        anchor_position=up_to,
        anchor_hash=anchor_hash,
    )
    return PruneResult(deleted=deleted, anchor_position=up_to)


# --- Export -------------------------------------------------------------------

EXPORT_FORMATS = ("jsonl", "csv")


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
    checkpoint = audit_checkpoint_create(kind=CheckpointKind.EXPORT)
    rows = audit_events_stream(
        events=audit_events_filter(filters=filters),
        after=checkpoint.anchor_position,
        up_to=checkpoint.position,
        chunk_size=chunk_size or settings.AUDIT_EXPORT_CHUNK_SIZE,
    )
    with out_path.open("wb") as handle:
        write = _write_csv if fmt == "csv" else _write_jsonl
        count, first, last = write(handle, rows)
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
