"""Witnesses: copies of every audit checkpoint kept outside the database.

An attacker who holds the database (even as superuser) can delete the newest
events and checkpoints, re-insert older checkpoints whose signatures still
verify, and let the sealer sign a forged continuation. What they cannot do is
reach the copies kept elsewhere: ``audit_verify`` and the offline verifier
compare the database (or an export) with them. ``AUDIT_WITNESS`` names them:

- ``file:PATH``: an append-only JSON Lines file, one signed checkpoint per line
  (the embedded tier's default, under ``VAR_DIR``); what ``audit_verify`` reads.
- ``log``: one line per checkpoint on the ``audit.witness`` logger, whose message
  is that same JSON, for a log pipeline that the database's holder cannot rewrite.
- ``https://URL``: each checkpoint POSTed as JSON (it is signed), with a timeout.

Writes happen after the checkpoint's transaction commits and never raise: a
witness that fails is logged and caught up on the next checkpoint, since each
run sends every checkpoint the witness does not have yet (file and URL), in order.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from audit import chain
from audit.selectors import audit_checkpoints_after

# The log witness: checkpoint lines only, so a pipeline can route this logger alone.
witness_log = logging.getLogger("audit.witness")
logger = logging.getLogger("audit")

# At most this many checkpoints are sent to one witness per run (a long outage
# catches up over several runs instead of one long stall).
CATCH_UP_BATCH = 500


@dataclass(frozen=True)
class Witness:
    kind: str  # "file", "log" or "https"
    target: str = ""

    def __str__(self) -> str:
        return {"log": "log", "file": f"file:{self.target}"}.get(self.kind, self.target)


def witness_parse(value: str) -> Witness:
    """One ``AUDIT_WITNESS`` entry; anything else is refused rather than ignored."""
    if value == "log":
        return Witness(kind="log")
    if value.startswith("file:") and len(value) > len("file:"):
        return Witness(kind="file", target=value.removeprefix("file:"))
    if value.startswith("https://"):
        return Witness(kind="https", target=value)
    raise ValueError(f"AUDIT_WITNESS entry {value!r} is not file:PATH, log or https://URL")


def audit_witnesses() -> list[Witness]:
    return [witness_parse(value) for value in settings.AUDIT_WITNESS]


def witness_entry(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint as a witness holds it: the signed payload, signature, and row id.

    The row id is not signed; it only names the checkpoint in reports and tells a
    witness where to resume.
    """
    return {"id": checkpoint["id"], **chain.checkpoint_signed(checkpoint)}


# --- Writing ----------------------------------------------------------------------


def _last_line(handle) -> dict[str, Any] | None:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    block = min(size, 65536)
    handle.seek(size - block)
    lines = [line for line in handle.read(block).splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


def _extend(
    last: Mapping[str, Any] | None, rows: Iterable[Mapping[str, Any]], witness: Witness
) -> list[dict[str, Any]]:
    """The rows that extend the witnessed chain, in order, stopping at the first that does not.

    A row that does not link to what the witness holds means the database's
    checkpoints were rewritten behind it: that is never copied (the witness keeps the
    true history) and is logged for the operator; ``audit_verify`` names it.
    """
    expected = chain.checkpoint_digest(last) if last else chain.GENESIS_CHECKPOINT
    entries = []
    for row in rows:
        if row["prev_checkpoint"] and row["prev_checkpoint"] != expected:
            logger.error(
                "audit checkpoint %s does not extend what witness %s holds: not copied; "
                "run manage.py audit_verify",
                row["id"],
                witness,
            )
            break
        entries.append(witness_entry(row))
        expected = chain.checkpoint_digest(row)
    return entries


def _write_file(witness: Witness) -> int:
    path = Path(witness.target)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Append-only: O_APPEND writes, an exclusive lock across read-last-then-append so
    # two processes checkpointing at once cannot interleave or duplicate lines.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "r+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        last = _last_line(handle)
        rows = audit_checkpoints_after(after_id=last["id"] if last else 0, limit=CATCH_UP_BATCH)
        entries = _extend(last, rows, witness)
        if entries:
            handle.write(b"".join(chain.canonical_json(entry) + b"\n" for entry in entries))
            handle.flush()
            os.fsync(handle.fileno())
    return len(entries)


def _state_path(witness: Witness) -> Path:
    name = hashlib.sha256(witness.target.encode("utf-8")).hexdigest()[:16]
    return Path(settings.VAR_DIR) / f"audit-witness-{name}.json"


def _write_https(witness: Witness) -> int:
    """POST what the URL has not acknowledged yet; the last acknowledged one is kept in VAR_DIR."""
    state_path = _state_path(witness)
    last = json.loads(state_path.read_text()) if state_path.exists() else None
    rows = audit_checkpoints_after(after_id=last["id"] if last else 0, limit=CATCH_UP_BATCH)
    sent = 0
    for entry in _extend(last, rows, witness):
        request = urllib.request.Request(  # noqa: S310 (witness_parse admits https:// only)
            witness.target,
            data=chain.canonical_json(entry),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(  # noqa: S310 (https:// only, see witness_parse)
            request, timeout=settings.AUDIT_WITNESS_TIMEOUT
        ) as response:
            response.read()
        state_path.write_text(json.dumps(entry))
        sent += 1
    return sent


def audit_witness_publish(*, checkpoint: Mapping[str, Any]) -> None:
    """Copy a committed checkpoint (and any a witness missed) to every configured witness.

    Runs after the checkpoint's transaction commits. Never raises: a failing
    witness is logged and retried with the next checkpoint.
    """
    for witness in audit_witnesses():
        try:
            if witness.kind == "log":
                witness_log.info("%s", chain.canonical_json(witness_entry(checkpoint)).decode())
            elif witness.kind == "file":
                _write_file(witness)
            else:
                _write_https(witness)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            logger.error("audit witness %s failed, retried next checkpoint: %s", witness, exc)


# --- Reading (verification) -------------------------------------------------------


def witness_files_read(
    paths: Iterable[Path] | None = None,
) -> tuple[dict[str, list[tuple[int, dict[str, Any]]]], list[str]]:
    """The witness files to compare with: those given, or every configured ``file:`` witness.

    Returns name -> entries, and notes (a configured witness file that does not
    exist yet is noted, not an error: no checkpoint has been written to it).
    Raises ``OSError``/``ValueError`` for a file that was named but cannot be read.
    """
    notes: list[str] = []
    if paths is None:
        paths = []
        for witness in audit_witnesses():
            if witness.kind != "file":
                continue
            if not Path(witness.target).exists():
                notes.append(f"witness file {witness.target} does not exist yet")
                continue
            paths.append(Path(witness.target))
    return {f"witness {path}": chain.witness_entries(path) for path in paths}, notes
