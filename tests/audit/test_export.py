"""Exports with signed manifests, checked offline by the command and the standalone script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from audit import chain
from audit.choices import EventType, Outcome
from audit.context import Actor
from audit.models import AuditEvent, AuditSeal
from audit.selectors import AuditFilters
from audit.services import audit_export, audit_seal_pending, manifest_path_for
from tests.audit.conftest import record_token_event

SCRIPT = Path(settings.BASE_DIR) / "scripts" / "verify_audit_export.py"


@pytest.fixture
def sealed(make_events):
    make_events(4, machine="m-1")
    make_events(2, machine="m-2", outcome=Outcome.FAILURE)
    audit_seal_pending()


def _export(tmp_path: Path, fmt: str, filters: AuditFilters | None = None) -> Path:
    out = tmp_path / f"audit.{fmt}"
    audit_export(fmt=fmt, filters=filters or AuditFilters(), out_path=out, actor=Actor.cli("test"))
    return out


def _offline(out: Path, *extra: str) -> subprocess.CompletedProcess:
    # -I: isolated mode, no site-packages of the project's path, no DJANGO_* needed.
    return subprocess.run(
        [sys.executable, "-I", str(SCRIPT), str(out), *extra],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_and_manifest_verify_offline(sealed, tmp_path, fmt):
    out = _export(tmp_path, fmt)

    manifest = json.loads(manifest_path_for(out).read_text())
    assert (manifest["count"], manifest["first_position"], manifest["last_position"]) == (6, 1, 6)
    assert manifest["file_sha256"] == chain.file_sha256(out)
    assert manifest["contiguous"] is True
    assert manifest["key_id"] == manifest["public_key"]["kid"]
    assert manifest["checkpoints"][0]["position"] == 6
    assert chain.verify_export(out, manifest) == []
    result = _offline(out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK 6 events, positions 1..6")


def test_jsonl_lines_are_the_hashed_records(sealed, tmp_path):
    out = _export(tmp_path, "jsonl")

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    stored = AuditSeal.objects.get(position=1)
    assert lines[0]["hash"] == stored.hash
    assert lines[0]["details"] == {
        "jti": "jti-0",
        "scope": "read write",
        "aud": ["https://api.test"],
        "n": 0,
    }
    assert lines[0]["user_agent"] == "agent/1.0 ü"
    assert [line["position"] for line in lines] == [1, 2, 3, 4, 5, 6]


def test_export_is_an_audited_event(sealed, tmp_path):
    out = _export(tmp_path, "csv")

    event = AuditEvent.objects.get(event_type=EventType.AUDIT_EXPORTED)
    manifest = json.loads(manifest_path_for(out).read_text())
    assert (event.actor_kind, event.actor_display) == ("cli", "test")
    assert event.details["count"] == 6
    assert event.details["file_sha256"] == manifest["file_sha256"]


def test_filtered_export_keeps_only_matching_events_and_verifies(sealed, tmp_path):
    out = _export(
        tmp_path, "jsonl", AuditFilters(machine="m-2", event_types=(EventType.TOKEN_DENIED,))
    )

    manifest = json.loads(manifest_path_for(out).read_text())
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["position"] for line in lines] == [5, 6]
    assert {line["outcome"] for line in lines} == {"failure"}
    assert manifest["contiguous"] is False
    assert manifest["filters"]["machine"] == "m-2"
    assert chain.verify_export(out, manifest) == []


def test_one_byte_change_is_caught(sealed, tmp_path):
    out = _export(tmp_path, "jsonl")
    data = bytearray(out.read_bytes())
    at = data.index(b"jti-2")
    data[at + 4] = ord("9")
    out.write_bytes(bytes(data))

    result = _offline(out)

    assert result.returncode == 1
    assert "FAIL file: SHA-256 differs" in result.stdout
    assert "FAIL line 3: position 3: altered (hash mismatch)" in result.stdout


def test_deleted_line_is_caught(sealed, tmp_path):
    out = _export(tmp_path, "jsonl")
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2] + lines[3:]))

    result = _offline(out)

    assert result.returncode == 1
    assert "FAIL line 3: position 3: missing (the chain jumps here)" in result.stdout


def test_swapped_pair_is_caught_in_csv(sealed, tmp_path):
    out = _export(tmp_path, "csv")
    lines = out.read_text().splitlines(keepends=True)
    lines[2], lines[3] = lines[3], lines[2]  # header is line 1: swap positions 2 and 3
    out.write_text("".join(lines))

    result = _offline(out)

    assert result.returncode == 1
    assert "FAIL line 3: position 2: missing (the chain jumps here)" in result.stdout


def test_deleted_line_of_a_filtered_export_is_caught_by_the_count(sealed, tmp_path):
    out = _export(tmp_path, "jsonl", AuditFilters(machine="m-1"))
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:1] + lines[2:]))
    manifest = json.loads(manifest_path_for(out).read_text())

    problems = chain.verify_export(out, manifest)

    assert problems == [
        "file: SHA-256 differs from the manifest (the file was changed)",
        "count: 3 lines, the manifest says 4",
    ]


def test_edited_manifest_fails_its_signature(sealed, tmp_path):
    out = _export(tmp_path, "jsonl")
    manifest_file = manifest_path_for(out)
    manifest = json.loads(manifest_file.read_text())
    manifest["count"] = 5
    manifest_file.write_text(json.dumps(manifest))

    result = _offline(out)

    assert result.returncode == 1
    assert "FAIL manifest: signature invalid or key not trusted" in result.stdout


def test_key_not_in_the_trusted_jwks_is_refused(sealed, tmp_path, client):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = _export(tmp_path, "jsonl")
    published = tmp_path / "audit-keys.json"
    published.write_bytes(client.get("/.well-known/audit-keys.json").content)
    other = tmp_path / "other-keys.json"
    other.write_text(
        json.dumps({"keys": [chain.public_jwk(Ed25519PrivateKey.generate().public_key())]})
    )

    assert _offline(out, "--jwks", str(published)).returncode == 0
    refused = _offline(out, "--jwks", str(other))
    assert refused.returncode == 1
    assert "key not trusted" in refused.stdout


def test_export_and_verify_export_commands(sealed, tmp_path, capsys):
    out = tmp_path / "cli.csv"

    call_command("audit_export", "--format", "csv", "--out", str(out), "--outcome", "failure")
    call_command("audit_verify_export", str(out))

    output = capsys.readouterr().out
    assert f"exported 2 events to {out}" in output
    assert "OK 2 events, positions 5..6" in output


def test_export_command_refuses_bad_filters(sealed, tmp_path):
    from django.core.management import CommandError

    out = tmp_path / "bad.csv"
    with pytest.raises(CommandError, match="bad filters"):
        call_command("audit_export", "--format", "csv", "--out", str(out), "--since", "yesterday")
    assert not out.exists()
    assert not AuditEvent.objects.filter(event_type=EventType.AUDIT_EXPORTED).exists()


def test_unsealed_events_are_not_exported(sealed, tmp_path):
    record_token_event(99)

    out = _export(tmp_path, "jsonl")

    assert len(out.read_text().splitlines()) == 6


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_awkward_values_survive_the_round_trip(db, tmp_path, fmt):
    from audit.context import RequestContext, Target
    from audit.services import audit_record

    audit_record(
        event_type=EventType.MACHINE_UPDATED,
        actor=Actor(kind="user", id="7", display='Zoë "the admin", ops'),
        target=Target(kind="machine", id="m,1", display="line\nbreak"),
        details={"changed": {"name": ["a", "b\u2028c"]}, "ratio": 0.5, "none": None},
        context=RequestContext(source_ip="2001:db8::1", user_agent="curl/8 ; ,\"'"),
    )
    record_token_event(1)
    audit_seal_pending()

    out = _export(tmp_path, fmt)

    manifest = json.loads(manifest_path_for(out).read_text())
    assert manifest["count"] == 2
    assert chain.verify_export(out, manifest) == []


def _formula_event() -> None:
    from audit.context import RequestContext, Target
    from audit.services import audit_record

    audit_record(
        event_type=EventType.TOKEN_DENIED,
        actor=Actor(kind="machine", id="", display='=HYPERLINK("http://evil")'),
        target=Target(kind="machine", id="", display="@SUM(1+1)"),
        outcome=Outcome.FAILURE,
        reason="-2+3",
        details={"n": 1},
        context=RequestContext(source_ip="192.0.2.7", user_agent="=cmd|' /C calc'!A0"),
    )
    audit_record(
        event_type=EventType.TOKEN_DENIED,
        actor=Actor(kind="machine", id="'quoted", display="+1"),
        target=Target(kind="machine", id="\tx", display="\rcr"),
        outcome=Outcome.FAILURE,
        reason="plain 'not at the start'",
        details={"n": 2},
    )
    audit_seal_pending()


def _csv_rows(out: Path) -> list[dict[str, str]]:
    import csv

    with out.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_formula_cells_are_escaped_in_csv_and_still_verify(db, tmp_path):
    _formula_event()

    out = _export(tmp_path, "csv")

    first, second = _csv_rows(out)
    assert first["user_agent"] == "'=cmd|' /C calc'!A0"
    assert first["actor_display"] == '\'=HYPERLINK("http://evil")'
    assert first["target_display"] == "'@SUM(1+1)"
    assert first["reason"] == "'-2+3"
    assert first["event_type"] == "token.denied"
    assert (second["actor_id"], second["actor_display"]) == ("''quoted", "'+1")
    assert (second["target_id"], second["target_display"]) == ("'\tx", "'\rcr")
    assert second["reason"] == "plain 'not at the start'"
    manifest = json.loads(manifest_path_for(out).read_text())
    assert manifest["version"] == 3
    assert chain.verify_export(out, manifest) == []
    result = _offline(out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK 2 events, positions 1..2")


def test_jsonl_keeps_formula_values_as_they_are(db, tmp_path):
    _formula_event()

    out = _export(tmp_path, "jsonl")

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["user_agent"] == "=cmd|' /C calc'!A0"
    assert lines[1]["actor_id"] == "'quoted"
    assert chain.verify_export(out, json.loads(manifest_path_for(out).read_text())) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("'=cmd|", "'=cmD|"),  # the escaped value itself changed
        ("'=cmd|", "'+cmd|"),  # another formula, still escaped
    ],
)
def test_tampered_escaped_cell_is_caught(db, tmp_path, old, new):
    _formula_event()
    out = _export(tmp_path, "csv")
    out.write_bytes(out.read_bytes().replace(old.encode(), new.encode(), 1))

    result = _offline(out)

    assert result.returncode == 1
    assert "FAIL file: SHA-256 differs" in result.stdout
    assert "FAIL line 2: position 1: altered (hash mismatch)" in result.stdout


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("'=cmd|", "=cmd|", "a formula-like cell that the export would have escaped"),
        ("''quoted", "'quoted", "a quote-prefixed cell that was not escaped by the export"),
    ],
)
def test_unescaped_or_wrongly_escaped_cell_is_refused(db, tmp_path, old, new, message):
    _formula_event()
    out = _export(tmp_path, "csv")
    out.write_bytes(out.read_bytes().replace(old.encode(), new.encode(), 1))
    manifest = json.loads(manifest_path_for(out).read_text())

    problems = chain.verify_export(out, manifest)

    line = 2 if old.startswith("'=") else 3
    assert problems == [
        "file: SHA-256 differs from the manifest (the file was changed)",
        f"unreadable: line {line}: {message}",
    ]


def test_version_1_csv_cells_are_read_as_written(db, tmp_path):
    """A version-1 file wrote cells as-is: a leading quote there is data, not escaping."""
    out = tmp_path / "v1.csv"
    row = dict.fromkeys(chain.EXPORT_FIELDS, "")
    row.update(position="1", actor_display="'quoted", user_agent="=1+1", details="{}")
    out.write_text(",".join(chain.EXPORT_FIELDS) + "\n" + ",".join(row.values()) + "\n")

    [(_, v1)] = chain.export_records(out, "csv", version=1)
    with pytest.raises(ValueError, match="line 2: a quote-prefixed cell"):
        list(chain.export_records(out, "csv", version=2))

    assert (v1["actor_display"], v1["user_agent"]) == ("'quoted", "=1+1")


def test_unknown_manifest_version_is_refused(sealed, tmp_path):
    out = _export(tmp_path, "csv")
    manifest = json.loads(manifest_path_for(out).read_text())
    manifest["version"] = 4

    assert chain.verify_export(out, manifest) == [
        "manifest: format version 4 is not supported by this verifier"
    ]
