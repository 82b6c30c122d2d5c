"""Audit exports, manifests, checkpoints and witnesses built with ``audit.chain`` alone.

The offline verifier's tests need exports in exact shapes (a checkpoint at a
given position, a witness made before or after it, a manifest in an older
format) without a database: these builders write what ``audit.services``
writes, from the same chain rules, with fixed keys and times so that every
message a test expects is known in advance.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import chain

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
JWK = chain.public_jwk(KEY.public_key())
KID = JWK["kid"]
CREATED_AT = "2026-01-02T05:00:00.000000Z"


def kid_of(key: Ed25519PrivateKey) -> str:
    return chain.public_jwk(key.public_key())["kid"]


def event(position: int, **values: Any) -> dict[str, Any]:
    """The hashed record of event ``position`` (a token issued to machine m-1)."""
    return {
        "position": position,
        "occurred_at": f"2026-01-02T03:04:{position:02d}.000006Z",
        "sealed_at": f"2026-01-02T03:05:{position:02d}.000000Z",
        "event_type": "token.issued",
        "actor_kind": "machine",
        "actor_id": "m-1",
        "actor_display": "machine m-1",
        "target_kind": "machine",
        "target_id": "m-1",
        "target_display": "machine m-1",
        "outcome": "success",
        "reason": "",
        "source_ip": "192.0.2.7",
        "user_agent": "agent/1.0 ü",
        "request_id": f"r{position}",
        "details": {"jti": f"jti-{position}", "n": position},
        **values,
    }


def chained(records: list[dict[str, Any]], prev_hash: str = chain.GENESIS_HASH) -> list[dict]:
    """The export lines of ``records``: each with ``prev_hash`` and ``hash`` as sealed."""
    lines = []
    for record in records:
        digest = chain.event_hash(record, prev_hash)
        lines.append({**record, "prev_hash": prev_hash, "hash": digest})
        prev_hash = digest
    return lines


def events(count: int, *, first: int = 1, prev_hash: str = chain.GENESIS_HASH) -> list[dict]:
    return chained([event(n) for n in range(first, first + count)], prev_hash)


def checkpoint(
    position: int,
    head_hash: str,
    *,
    kind: str = "export",
    anchor: tuple[int, str] = (0, chain.GENESIS_HASH),
    created_at: str = CREATED_AT,
    prev: str | None = chain.GENESIS_CHECKPOINT,
    key: Ed25519PrivateKey = KEY,
) -> dict[str, Any]:
    """A signed checkpoint; ``prev=None`` signs one of before checkpoints were chained."""
    payload = {
        "kind": kind,
        "position": position,
        "head_hash": head_hash,
        "anchor_position": anchor[0],
        "anchor_hash": anchor[1],
        "created_at": created_at,
        "key_id": kid_of(key),
    }
    if prev is not None:
        payload["prev_checkpoint"] = prev
    return {**payload, "signature": chain.sign_payload(key, payload)}


def following(previous: dict[str, Any], position: int, head_hash: str, **kwargs) -> dict:
    """A checkpoint chained onto ``previous``."""
    return checkpoint(position, head_hash, prev=chain.checkpoint_digest(previous), **kwargs)


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(chain.canonical_json(line) + b"\n" for line in lines))
    return path


def write_csv(path: Path, lines: list[dict[str, Any]], *, escaped: bool = True) -> Path:
    """As ``audit.services`` writes it: CRLF rows, formula-like cells escaped (version 2+)."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(chain.EXPORT_FIELDS)
        for line in lines:
            cells = [line[name] for name in chain.EXPORT_FIELDS]
            cells[chain.EXPORT_FIELDS.index("source_ip")] = line["source_ip"] or ""
            cells[chain.EXPORT_FIELDS.index("details")] = chain.canonical_json(
                line["details"]
            ).decode("utf-8")
            if escaped:
                cells = [chain.csv_escape(c) if isinstance(c, str) else c for c in cells]
            writer.writerow(cells)
    return path


def manifest(
    path: Path,
    lines: list[dict[str, Any]],
    checkpoints: list[dict[str, Any]],
    *,
    fmt: str = "jsonl",
    anchor: tuple[int, str] = (0, chain.GENESIS_HASH),
    contiguous: bool = True,
    version: int = chain.FORMAT_VERSION,
    key: Ed25519PrivateKey = KEY,
    **values: Any,
) -> dict[str, Any]:
    """The signed manifest of the export at ``path``; ``values`` override members before signing."""
    public_jwk = chain.public_jwk(key.public_key())
    body: dict[str, Any] = {
        "version": version,
        "format": fmt,
        "created_at": CREATED_AT,
        "file_name": path.name,
        "file_sha256": chain.file_sha256(path),
        "filters": {},
        "contiguous": contiguous,
        "count": len(lines),
        "first_position": lines[0]["position"] if lines else None,
        "last_position": lines[-1]["position"] if lines else None,
        "anchor_position": anchor[0],
        "anchor_hash": anchor[1],
        "checkpoints": checkpoints,
        "key_id": public_jwk["kid"],
        "public_key": public_jwk,
        **values,
    }
    return {**body, "signature": chain.sign_payload(key, chain.manifest_payload(body))}


def write_manifest(path: Path, body: dict[str, Any]) -> Path:
    """Next to the export, where the verifier looks by default."""
    target = path.with_name(path.name + ".manifest.json")
    target.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target


def write_witness(path: Path, checkpoints: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(entry) + "\n" for entry in checkpoints), encoding="utf-8")
    return path


def write_jwks(path: Path, *keys: Ed25519PrivateKey) -> Path:
    path.write_text(json.dumps({"keys": [chain.public_jwk(k.public_key()) for k in keys]}))
    return path
