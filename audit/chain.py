"""The audit chain's rules, in the one module that needs neither Django nor the database.

The sealer, ``manage.py audit_verify``, ``manage.py audit_verify_export`` and the
standalone ``scripts/verify_audit_export.py`` all use this file, so an auditor's
offline check and the server's sealing cannot disagree on a byte. It imports only
the standard library and ``cryptography``; the script loads it by path.

- Canonical JSON: sorted keys, no whitespace, UTF-8 (not ASCII-escaped),
  timestamps as ISO-8601 UTC with microseconds (``2026-01-02T03:04:05.000006Z``).
- ``hash = SHA-256(canonical JSON of the event's record || prev_hash)``, where
  ``prev_hash`` is the previous event's hash as 64 lowercase hex characters
  (ASCII) and the first event follows ``GENESIS_HASH``.
- Checkpoints and export manifests are signed with Ed25519 over their canonical
  JSON (without the ``signature`` member); the key id is the RFC 7638 thumbprint
  of the public key's OKP JWK.
- Checkpoints are chained: each signs ``prev_checkpoint``, the SHA-256 of the
  previous checkpoint's canonical signed payload with its ``signature`` member
  (``GENESIS_CHECKPOINT`` for the first), so removing, inserting or reordering a
  checkpoint breaks every later link. Checkpoints signed before the chain existed
  carry no ``prev_checkpoint`` and may only precede the chained ones.
- A witness is a JSON Lines copy of the checkpoints kept outside the database
  (one signed checkpoint per line, in order). Verification compares it with the
  database or export: every witnessed checkpoint must still be there, and the
  newest one must not be newer than what the database holds (a rollback).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import csv
import hashlib
import io
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

GENESIS_HASH = "0" * 64
# Version 2: CSV cells that a spreadsheet would run as a formula are written with a
# leading ``'`` (see ``csv_escape``); version 1 files wrote every cell as-is.
# Version 3: the manifest's checkpoint is chained (signs ``prev_checkpoint``), which a
# verifier of version 2 would take for a bad signature.
FORMAT_VERSION = 3
SUPPORTED_VERSIONS = (1, 2, 3)

# A spreadsheet treats a cell starting with one of these as a formula (or, for ``'``,
# swallows it as the "text" marker), so CSV exports prefix such cells with ``'``.
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")

# What an event's hash covers, in the order CSV exports write the columns.
RECORD_FIELDS = (
    "position",
    "occurred_at",
    "sealed_at",
    "event_type",
    "actor_kind",
    "actor_id",
    "actor_display",
    "target_kind",
    "target_id",
    "target_display",
    "outcome",
    "reason",
    "source_ip",
    "user_agent",
    "request_id",
    "details",
)
EXPORT_FIELDS = (*RECORD_FIELDS, "prev_hash", "hash")
TIMESTAMP_FIELDS = ("occurred_at", "sealed_at")

# What a checkpoint signed before checkpoints were chained covers.
CHECKPOINT_FIELDS = (
    "kind",
    "position",
    "head_hash",
    "anchor_position",
    "anchor_hash",
    "created_at",
    "key_id",
)
# What every checkpoint signs now: the same plus the digest of the one before it.
CHAINED_CHECKPOINT_FIELDS = (*CHECKPOINT_FIELDS, "prev_checkpoint")
GENESIS_CHECKPOINT = "0" * 64


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(value: str) -> bytes:
    """Strict: only the unpadded URL-safe spelling ``b64url`` writes, else ``ValueError``.

    One spelling per value (RFC 7515 section 2): a signature re-spelled with padding,
    ``+``/``/``, stray characters or other trailing bits would still verify, yet give
    its checkpoint another digest than the one the next checkpoint and the witness hold.
    """
    if not isinstance(value, str):
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc
    if b64url(data) != value:
        raise ValueError("not base64url")
    return data


def format_timestamp(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def event_record(values: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed form of an event from its stored values (datetimes become strings)."""
    record: dict[str, Any] = {}
    for name in RECORD_FIELDS:
        value = values[name]
        if name in TIMESTAMP_FIELDS and isinstance(value, datetime):
            value = format_timestamp(value)
        elif name == "source_ip" and value is not None:
            value = str(value)
        record[name] = value
    return record


def event_hash(record: Mapping[str, Any], prev_hash: str) -> str:
    body = canonical_json({name: record[name] for name in RECORD_FIELDS})
    return hashlib.sha256(body + prev_hash.encode("ascii")).hexdigest()


# --- Keys and signatures ----------------------------------------------------


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    return {**jwk, "kid": jwk_thumbprint(jwk), "use": "sig", "alg": "EdDSA"}


# RFC 7638 section 3.2: the members that identify a key, per key type.
THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}


def jwk_thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638: SHA-256 of the required members, sorted, without whitespace.

    The audit key's id. A self-contained copy of ``core.jose.jwk_thumbprint`` (this
    module loads with only the standard library); a test holds the two equal.
    """
    required = {name: jwk[name] for name in THUMBPRINT_MEMBERS[jwk["kty"]]}
    return b64url(hashlib.sha256(canonical_json(required)).digest())


def public_key_from_jwk(jwk: Mapping[str, str]) -> Ed25519PublicKey:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError("audit keys are Ed25519 OKP keys")
    return Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))


def sign_payload(private_key: Ed25519PrivateKey, payload: Mapping[str, Any]) -> str:
    return b64url(private_key.sign(canonical_json(dict(payload))))


def signature_valid(
    public_key: Ed25519PublicKey, payload: Mapping[str, Any], signature: str
) -> bool:
    try:
        public_key.verify(b64url_decode(signature), canonical_json(dict(payload)))
    except (InvalidSignature, ValueError):
        return False
    return True


def checkpoint_payload(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The signed members; an unchained (older) checkpoint signed without ``prev_checkpoint``."""
    chained = bool(checkpoint.get("prev_checkpoint"))
    payload = {
        name: checkpoint[name]
        for name in (CHAINED_CHECKPOINT_FIELDS if chained else CHECKPOINT_FIELDS)
    }
    if isinstance(payload["created_at"], datetime):
        payload["created_at"] = format_timestamp(payload["created_at"])
    return payload


def checkpoint_valid(checkpoint: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> bool:
    key = keys.get(checkpoint["key_id"])
    return key is not None and signature_valid(
        key, checkpoint_payload(checkpoint), checkpoint["signature"]
    )


def checkpoint_signed(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The signed payload with its signature: the form witnesses and manifests carry."""
    return {**checkpoint_payload(checkpoint), "signature": checkpoint["signature"]}


def checkpoint_digest(checkpoint: Mapping[str, Any]) -> str:
    """What the next checkpoint names as ``prev_checkpoint``."""
    return hashlib.sha256(canonical_json(checkpoint_signed(checkpoint))).hexdigest()


def describe_checkpoint(checkpoint: Mapping[str, Any]) -> str:
    """How a report names a checkpoint: its row id when known, kind, position and time."""
    payload = checkpoint_payload(checkpoint)
    row = f" id {checkpoint['id']}" if checkpoint.get("id") is not None else ""
    return (
        f"checkpoint{row} ({payload['kind']}, position {payload['position']}, "
        f"created {payload['created_at']})"
    )


# --- Walking a chain ----------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """The first thing found wrong; ``position`` is the chain position it names."""

    position: int | None
    message: str
    line: int | None = None
    # The checkpoint the problem is about, as ``describe_checkpoint`` names it.
    checkpoint: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        at = f"position {self.position}: " if self.position is not None else ""
        about = f" [{self.checkpoint}]" if self.checkpoint else ""
        return f"{where}{at}{self.message}{about}"


class CheckpointChain:
    """Checks checkpoints fed in the order they were written, and collects what they sign.

    Each must carry a valid signature by a trusted key, link to the one before it,
    be signed by a key no older than its predecessor's (keys are given newest
    first: a retired key that leaks cannot sign past its successor), and never move
    the head or the prune anchor back. Every head and anchor is a signed claim
    "position P has hash H"; two claims that disagree are a problem here, and the
    event walk checks the rest against ``claims``.
    """

    def __init__(self, keys: Mapping[str, Ed25519PublicKey], *, source: str = "") -> None:
        self.keys = keys
        self.source = source
        self.rank = {key_id: rank for rank, key_id in enumerate(keys)}
        self.digest = GENESIS_CHECKPOINT
        self.chained = False
        self.key_rank: int | None = None
        self.position = 0
        self.anchor_position, self.anchor_hash = 0, GENESIS_HASH
        self.claims: dict[int, tuple[str, str]] = {}
        self.digests: set[str] = set()
        self.newest: Mapping[str, Any] | None = None
        self.count = 0

    def feed(self, checkpoint: Mapping[str, Any], *, line: int | None = None) -> Problem | None:
        name = self.source + describe_checkpoint(checkpoint)
        position = checkpoint["position"]

        def problem(message: str, at: int | None = position) -> Problem:
            return Problem(at, message, line, name)

        if not checkpoint_valid(checkpoint, self.keys):
            return problem("a checkpoint here has an invalid signature or an untrusted key")
        payload = checkpoint_payload(checkpoint)
        prev = checkpoint.get("prev_checkpoint") or ""
        if prev:
            if prev != self.digest:
                return problem(
                    "a checkpoint here does not follow the one before it "
                    "(a checkpoint was removed, inserted or reordered)"
                )
            self.chained = True
        elif self.chained:
            return problem("an unchained checkpoint follows chained ones")
        rank = self.rank[payload["key_id"]]
        if self.key_rank is not None and rank > self.key_rank:
            return problem(f"signed by key {payload['key_id']} after a newer key took over")
        if position < self.position:
            return problem(f"a checkpoint here moves the head back from position {self.position}")
        anchor = (payload["anchor_position"], payload["anchor_hash"])
        if anchor[0] < self.anchor_position or (
            anchor[0] == self.anchor_position and anchor[1] != self.anchor_hash
        ):
            return problem("the prune anchor moved back or changed", anchor[0])
        for at, digest in ((position, payload["head_hash"]), anchor):
            if at <= 0:
                continue
            known, where = self.claims.setdefault(at, (digest, name))
            if known != digest:
                return problem(f"checkpoints disagree here (also {where})", at)
        self.digest = checkpoint_digest(checkpoint)
        self.digests.add(self.digest)
        self.key_rank, self.position = rank, position
        self.anchor_position, self.anchor_hash = anchor
        self.newest = checkpoint
        self.count += 1
        return None


def witness_entries(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The checkpoints of a witness file with their line numbers (blank lines skipped)."""
    entries = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            entry = json.loads(line)
            if not isinstance(entry, dict) or not {*CHECKPOINT_FIELDS, "signature"} <= set(entry):
                raise ValueError(f"{path} line {number}: not a witnessed checkpoint")
            entries.append((number, entry))
    return entries


def witness_chain(
    entries: Iterable[tuple[int, Mapping[str, Any]]],
    keys: Mapping[str, Ed25519PublicKey],
    *,
    name: str = "witness",
) -> tuple[CheckpointChain, Problem | None]:
    """The witness's own chain (a copy that was itself edited is reported, not trusted)."""
    witnessed = CheckpointChain(keys, source=f"{name}: ")
    for number, entry in entries:
        problem = witnessed.feed(entry, line=number)
        if problem is not None:
            return witnessed, problem
    return witnessed, None


def witness_compare(
    held: CheckpointChain,
    entries: list[tuple[int, Mapping[str, Any]]],
    keys: Mapping[str, Ed25519PublicKey],
    *,
    name: str = "witness",
) -> Problem | None:
    """The first witnessed checkpoint the database no longer holds, or None.

    Checkpoints are never deleted, so each one in the witness must be in the
    database's chain, byte for byte (matched by digest). A witness whose newest
    checkpoint is newer than the database's newest means the database was
    rolled back to an older copy; any other missing one was deleted or rewritten.
    """
    witnessed, problem = witness_chain(entries, keys, name=name)
    if problem is not None:
        return problem
    if not entries:
        return None
    last_line, last = entries[-1]
    newest_held = held.newest
    # Rolled back: the database's chain stops inside the witness's (or, when it was
    # continued since, its newest checkpoint is older than the witness's newest).
    if checkpoint_digest(last) not in held.digests and (
        newest_held is None
        or checkpoint_digest(newest_held) in witnessed.digests
        or checkpoint_payload(newest_held)["created_at"] < checkpoint_payload(last)["created_at"]
    ):
        held_name = describe_checkpoint(newest_held) if newest_held else "no checkpoint at all"
        return Problem(
            last["position"],
            f"rolled back: the database's newest is {held_name}, older than the witness's newest",
            None,
            f"{name} line {last_line}: {describe_checkpoint(last)}",
        )
    for number, entry in entries:
        if checkpoint_digest(entry) not in held.digests:
            return Problem(
                entry["position"],
                "a witnessed checkpoint is missing from the database (deleted or rewritten)",
                None,
                f"{name} line {number}: {describe_checkpoint(entry)}",
            )
    return None


class ChainWalker:
    """Checks events fed in position order against the chain rules.

    ``contiguous`` walks expect every position after the anchor (the database,
    an unfiltered export); a filtered export only links neighbours whose
    positions follow each other, and the signed manifest vouches for the rest.
    """

    def __init__(self, *, anchor_position: int, anchor_hash: str, contiguous: bool) -> None:
        self.position = anchor_position
        self.hash = anchor_hash
        self.contiguous = contiguous

    def feed(
        self, record: Mapping[str, Any], prev_hash: str, stored_hash: str, *, line=None
    ) -> Problem | None:
        position = record["position"]
        if not isinstance(position, int) or position <= self.position:
            return Problem(position, f"out of order (follows position {self.position})", line)
        if position != self.position + 1 and self.contiguous:
            return Problem(self.position + 1, "missing (the chain jumps here)", line)
        if position == self.position + 1 and prev_hash != self.hash:
            return Problem(position, "does not link to the previous event", line)
        if event_hash(record, prev_hash) != stored_hash:
            return Problem(position, "altered (hash mismatch)", line)
        self.position, self.hash = position, stored_hash
        return None


# --- Offline export verification ---------------------------------------------


def csv_escape(value: str) -> str:
    """The cell as written to a CSV export: anonymous callers choose user agents and
    client ids, and a cell like ``=HYPERLINK(...)`` must stay text when an auditor
    opens the export in a spreadsheet. Reversible by ``csv_unescape``."""
    return "'" + value if value.startswith(CSV_FORMULA_STARTS) else value


def csv_unescape(cell: str) -> str:
    """The hashed value of a version-2 CSV cell: exactly one leading ``'`` comes off.

    Only ``csv_escape``'s output is accepted, so each value has one spelling in the
    file; a cell in any other shape is refused rather than guessed at.
    """
    if cell.startswith("'"):
        value = cell[1:]
        if value.startswith(CSV_FORMULA_STARTS):
            return value
        raise ValueError("a quote-prefixed cell that was not escaped by the export")
    if cell.startswith(CSV_FORMULA_STARTS):
        raise ValueError("a formula-like cell that the export would have escaped")
    return cell


def _csv_records(handle: io.TextIOBase, *, escaped: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(handle)
    header = next(reader, None)
    if tuple(header or ()) != EXPORT_FIELDS:
        raise ValueError("not an audit CSV export (unexpected header)")
    for number, row in enumerate(reader, start=2):
        if len(row) != len(EXPORT_FIELDS):
            raise ValueError(f"line {number}: expected {len(EXPORT_FIELDS)} columns")
        if escaped:
            try:
                row = [csv_unescape(cell) for cell in row]
            except ValueError as exc:
                raise ValueError(f"line {number}: {exc}") from None
        values: dict[str, Any] = dict(zip(EXPORT_FIELDS, row, strict=True))
        values["position"] = int(values["position"])
        values["source_ip"] = values["source_ip"] or None
        values["details"] = json.loads(values["details"])
        yield number, values


def _jsonl_records(handle: io.TextIOBase) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(handle, start=1):
        values = json.loads(line)
        if not isinstance(values, dict) or set(values) != set(EXPORT_FIELDS):
            raise ValueError(f"line {number}: not an audit event")
        yield number, values


def export_records(
    path: Path, fmt: str, *, version: int = FORMAT_VERSION
) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        if fmt == "csv":
            yield from _csv_records(handle, escaped=version >= 2)
        else:
            yield from _jsonl_records(handle)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_payload(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in manifest.items() if name != "signature"}


def _witness_export_problems(
    manifest: Mapping[str, Any],
    witness: list[tuple[int, Mapping[str, Any]]],
    keys: Mapping[str, Ed25519PublicKey],
    name: str,
) -> tuple[list[str], dict[int, tuple[str, str]]]:
    """What a witness says about an export: problems, and the claims its lines must meet.

    The export's own checkpoint was signed when it was made; every checkpoint the
    witness holds from before then must be at or behind its head (else the export
    came from a database rolled back to an older copy), and every witnessed head or
    anchor at a position the export covers must be the hash the export has there.
    """
    witnessed, problem = witness_chain(witness, keys, name=name)
    if problem is not None:
        return [str(problem)], {}
    problems: list[str] = []
    for own in manifest["checkpoints"]:
        own_payload = checkpoint_payload(own)
        for number, entry in witness:
            payload = checkpoint_payload(entry)
            if (
                payload["created_at"] <= own_payload["created_at"]
                and payload["position"] > own_payload["position"]
            ):
                problems.append(
                    f"position {own_payload['position']}: rolled back: the export's checkpoint "
                    f"is behind {name} line {number}: {describe_checkpoint(entry)}"
                )
                break
        for at, digest in (
            (own_payload["position"], own_payload["head_hash"]),
            (own_payload["anchor_position"], own_payload["anchor_hash"]),
        ):
            known = witnessed.claims.get(at)
            if at > 0 and known is not None and known[0] != digest:
                problems.append(f"position {at}: differs from a witnessed checkpoint [{known[1]}]")
    return problems, witnessed.claims


def verify_export(
    export_path: Path,
    manifest: Mapping[str, Any],
    *,
    trusted_keys: Iterable[Mapping[str, str]] | None = None,
    witnesses: Mapping[str, list[tuple[int, Mapping[str, Any]]]] | None = None,
) -> list[str]:
    """Every problem found in an export and its manifest; an empty list means intact.

    Without ``trusted_keys`` the manifest's own public key is used: that proves the
    file matches its manifest, and the printed key id must then be compared with the
    portal's published ``/.well-known/audit-keys.json`` (which also lists the retired
    keys older checkpoints were signed with). ``witnesses`` (name -> entries) are
    copies of the checkpoints kept outside the database.
    """
    problems: list[str] = []
    version = manifest.get("version")
    if version not in SUPPORTED_VERSIONS:
        return [f"manifest: format version {version!r} is not supported by this verifier"]
    jwks = list(trusted_keys) if trusted_keys is not None else [manifest["public_key"]]
    keys = {jwk_thumbprint(jwk): public_key_from_jwk(jwk) for jwk in jwks}
    signer = keys.get(manifest.get("key_id", ""))
    if signer is None or not signature_valid(
        signer, manifest_payload(manifest), manifest.get("signature", "")
    ):
        problems.append("manifest: signature invalid or key not trusted")
    if file_sha256(export_path) != manifest["file_sha256"]:
        problems.append("file: SHA-256 differs from the manifest (the file was changed)")
    checkpoints = {}
    for checkpoint in manifest["checkpoints"]:
        if not checkpoint_valid(checkpoint, keys):
            problems.append(f"checkpoint at position {checkpoint['position']}: bad signature")
        checkpoints[checkpoint["position"]] = checkpoint["head_hash"]
    witnessed: dict[int, tuple[str, str]] = {}
    for name, entries in (witnesses or {}).items():
        found, claims = _witness_export_problems(manifest, entries, keys, name)
        problems += found
        for at, claim in claims.items():
            witnessed.setdefault(at, claim)

    walker = ChainWalker(
        anchor_position=manifest["anchor_position"],
        anchor_hash=manifest["anchor_hash"],
        contiguous=manifest["contiguous"],
    )
    count, first, last = 0, None, None
    try:
        for number, values in export_records(export_path, manifest["format"], version=version):
            record = event_record(values)
            problem = walker.feed(record, values["prev_hash"], values["hash"], line=number)
            if problem is not None:
                problems.append(str(problem))
                break
            expected = checkpoints.get(record["position"])
            if expected is not None and expected != values["hash"]:
                problems.append(f"line {number}: position {record['position']}: not checkpointed")
                break
            claim = witnessed.get(record["position"])
            if claim is not None and claim[0] != values["hash"]:
                problems.append(
                    f"line {number}: position {record['position']}: "
                    f"differs from a witnessed checkpoint [{claim[1]}]"
                )
                break
            count += 1
            first = record["position"] if first is None else first
            last = record["position"]
    except (ValueError, KeyError, TypeError) as exc:
        problems.append(f"unreadable: {exc}")
        return problems
    if not any(p.startswith("line") for p in problems):
        if count != manifest["count"]:
            problems.append(f"count: {count} lines, the manifest says {manifest['count']}")
        elif (first, last) != (manifest["first_position"], manifest["last_position"]):
            problems.append("range: first or last position differs from the manifest")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify an audit export against its manifest.")
    parser.add_argument("export", type=Path)
    parser.add_argument("--manifest", type=Path, help="default: EXPORT.manifest.json")
    parser.add_argument("--jwks", type=Path, help="trusted keys (the portal's audit-keys.json)")
    parser.add_argument(
        "--witness",
        type=Path,
        action="append",
        default=[],
        help="a witness file (JSON Lines of checkpoints kept outside the database); repeatable",
    )
    args = parser.parse_args(argv)
    manifest_path = args.manifest or args.export.with_name(args.export.name + ".manifest.json")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        trusted = json.loads(args.jwks.read_text(encoding="utf-8"))["keys"] if args.jwks else None
        witnesses = {f"witness {path}": witness_entries(path) for path in args.witness}
        problems = verify_export(args.export, manifest, trusted_keys=trusted, witnesses=witnesses)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"cannot verify: {exc}\n")
        return 2
    if problems:
        for problem in problems:
            sys.stdout.write(f"FAIL {problem}\n")
        return 1
    sys.stdout.write(
        f"OK {manifest['count']} events, positions {manifest['first_position']}.."
        f"{manifest['last_position']}, signed by key {manifest['key_id']}"
        f"{'' if args.jwks else ' (compare with the published audit-keys.json)'}"
        f"{''.join(f', matches {name}' for name in witnesses)}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
