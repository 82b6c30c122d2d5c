"""The offline export verifier's command line (``audit.chain.main``): exit codes and output.

An auditor scripts around this command, so its exit status (0 intact, 1 a problem
named, 2 unreadable) and the text it prints are an interface. The script in
``scripts/`` runs the same function in a fresh interpreter (tested in
``test_export.py``); here it is called in-process so every line is pinned.
"""

from __future__ import annotations

import json

import pytest

from audit import chain
from tests.audit.offline_export import (
    KEY,
    KID,
    OTHER_KEY,
    checkpoint,
    events,
    manifest,
    write_jsonl,
    write_jwks,
    write_manifest,
    write_witness,
)

NOT_COMPARED = " (compare with the published audit-keys.json)"


@pytest.fixture
def export(tmp_path):
    """Three events, checkpointed at position 3, with the manifest beside the file."""
    lines = events(3)
    path = write_jsonl(tmp_path / "audit.jsonl", lines)
    write_manifest(path, manifest(path, lines, [checkpoint(3, lines[2]["hash"])]))
    return path, lines


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = chain.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_intact_export_exits_0_and_asks_for_the_key_to_be_compared(export, capsys):
    path, _ = export

    assert run(capsys, path) == (
        0,
        f"OK 3 events, positions 1..3, signed by key {KID}{NOT_COMPARED}\n",
        "",
    )


def test_with_trusted_keys_the_key_needs_no_comparing(export, capsys, tmp_path):
    path, _ = export
    jwks = write_jwks(tmp_path / "audit-keys.json", OTHER_KEY, KEY)

    assert run(capsys, path, "--jwks", jwks) == (
        0,
        f"OK 3 events, positions 1..3, signed by key {KID}\n",
        "",
    )


def test_a_key_missing_from_the_trusted_keys_exits_1_naming_each_problem(export, capsys, tmp_path):
    path, _ = export
    jwks = write_jwks(tmp_path / "other-keys.json", OTHER_KEY)

    assert run(capsys, path, "--jwks", jwks) == (
        1,
        "FAIL manifest: signature invalid or key not trusted\n"
        "FAIL checkpoint at position 3: bad signature\n",
        "",
    )


def test_a_manifest_named_elsewhere_and_every_witness_are_read(export, capsys, tmp_path):
    path, lines = export
    moved = tmp_path / "elsewhere.json"
    path.with_name(path.name + ".manifest.json").rename(moved)
    first = write_witness(tmp_path / "a.jsonl", [checkpoint(3, lines[2]["hash"])])
    second = write_witness(tmp_path / "b.jsonl", [])

    code, out, err = run(capsys, path, "--manifest", moved, "--witness", first, "--witness", second)

    assert (code, err) == (0, "")
    assert out == (
        f"OK 3 events, positions 1..3, signed by key {KID}{NOT_COMPARED}"
        f", matches witness {first}, matches witness {second}\n"
    )


def test_an_export_contradicting_a_witness_exits_1(export, capsys, tmp_path):
    path, _ = export
    other = checkpoint(2, "e" * 64, kind="scheduled", created_at="2026-01-02T04:00:00.000000Z")
    witness = write_witness(tmp_path / "w.jsonl", [other])

    assert run(capsys, path, "--witness", witness) == (
        1,
        f"FAIL line 2: position 2: differs from a witnessed checkpoint [witness {witness}: "
        "checkpoint (scheduled, position 2, created 2026-01-02T04:00:00.000000Z)]\n",
        "",
    )


def test_a_changed_file_exits_1(export, capsys):
    path, _ = export
    path.write_bytes(path.read_bytes().replace(b'"r2"', b'"r9"'))

    assert run(capsys, path) == (
        1,
        "FAIL file: SHA-256 differs from the manifest (the file was changed)\n"
        "FAIL line 2: position 2: altered (hash mismatch)\n",
        "",
    )


def test_a_missing_manifest_exits_2_on_stderr(export, capsys, tmp_path):
    path, _ = export
    missing = tmp_path / "nowhere.json"

    assert run(capsys, path, "--manifest", missing) == (
        2,
        "",
        f"cannot verify: [Errno 2] No such file or directory: '{missing}'\n",
    )


def test_a_jwks_file_without_keys_exits_2(export, capsys, tmp_path):
    path, _ = export
    jwks = tmp_path / "keys.json"
    jwks.write_text(json.dumps({"KEYS": []}))

    assert run(capsys, path, "--jwks", jwks) == (2, "", "cannot verify: 'keys'\n")


def test_an_unreadable_witness_exits_2(export, capsys, tmp_path):
    path, _ = export
    witness = tmp_path / "w.jsonl"
    witness.write_text('{"position": 3}\n')

    assert run(capsys, path, "--witness", witness) == (
        2,
        "",
        f"cannot verify: {witness} line 1: not a witnessed checkpoint\n",
    )


def test_usage_names_every_option(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")

    with pytest.raises(SystemExit) as exited:
        chain.main(["--help"])

    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert "\n\nVerify an audit export against its manifest.\n\n" in out
    assert "--manifest MANIFEST  default: EXPORT.manifest.json" in out
    assert "--jwks JWKS          trusted keys (the portal's audit-keys.json)" in out
    assert (
        "--witness WITNESS    a witness file (JSON Lines of checkpoints kept outside the "
        "database); repeatable"
    ) in out
