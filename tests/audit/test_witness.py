"""Witnesses: every checkpoint copied outside the database, and verification against them."""

from __future__ import annotations

import json
import logging
import urllib.error
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from audit import chain, witness
from audit.choices import CheckpointKind
from audit.context import Actor
from audit.models import AuditCheckpoint
from audit.selectors import AuditFilters, VerifyReport, audit_chain_verify
from audit.services import (
    audit_checkpoint_create,
    audit_export,
    audit_prune,
    audit_seal_pending,
    checkpoint_values,
    manifest_path_for,
)
from tests.audit.conftest import record_token_event, rehash_from, tamper, verify_command


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def witnessed(make_events, witness_file, committed):
    """Positions 2, 4, 6 checkpointed and witnessed."""
    for _ in range(3):
        make_events(2)
        audit_seal_pending()
        committed(audit_checkpoint_create)
    return witness_file


def test_each_committed_checkpoint_is_appended_to_the_file_witness(witnessed):
    rows = list(AuditCheckpoint.objects.order_by("id"))

    assert _lines(witnessed) == [
        {"id": row.pk, **chain.checkpoint_signed(checkpoint_values(row))} for row in rows
    ]
    assert [entry["position"] for entry in _lines(witnessed)] == [2, 4, 6]


def test_nothing_is_witnessed_before_the_transaction_commits(make_events, witness_file, db):
    make_events(1)
    audit_seal_pending()

    audit_checkpoint_create()  # the test's transaction never commits

    assert not witness_file.exists()


def test_log_witness_writes_the_checkpoint_as_its_own_line(
    make_events, settings, committed, caplog
):
    settings.AUDIT_WITNESS = ["log"]
    make_events(1)
    audit_seal_pending()

    with caplog.at_level(logging.INFO, logger="audit.witness"):
        checkpoint = committed(audit_checkpoint_create)

    [record] = [r for r in caplog.records if r.name == "audit.witness"]
    assert json.loads(record.getMessage()) == {
        "id": checkpoint.pk,
        **chain.checkpoint_signed(checkpoint_values(checkpoint)),
    }


def test_a_failed_file_witness_catches_up_at_the_next_checkpoint(
    make_events, settings, tmp_path, committed, caplog
):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    settings.AUDIT_WITNESS = [f"file:{blocked}/witness.jsonl"]
    make_events(1)
    audit_seal_pending()

    with caplog.at_level(logging.ERROR, logger="audit"):
        first = committed(audit_checkpoint_create)
    assert first.pk is not None  # the checkpoint stands; the witness failure is logged
    assert f"audit witness file:{blocked}/witness.jsonl failed" in caplog.text

    path = tmp_path / "witness.jsonl"
    settings.AUDIT_WITNESS = [f"file:{path}"]
    second = committed(audit_checkpoint_create)

    assert [entry["id"] for entry in _lines(path)] == [first.pk, second.pk]


def test_the_file_witness_never_copies_a_rewritten_chain(witnessed, committed, caplog):
    # The database's checkpoints are replaced behind the witness's back.
    tamper("DELETE FROM audit_auditcheckpoint WHERE position > 2")
    before = witnessed.read_text()

    with caplog.at_level(logging.ERROR, logger="audit"):
        forged_successor = committed(audit_checkpoint_create)

    assert witnessed.read_text() == before
    assert (
        f"audit checkpoint {forged_successor.pk} does not extend what witness "
        f"file:{witnessed} holds: not copied" in caplog.text
    )


class _Recorder(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_https_witness_posts_each_checkpoint_and_retries_after_a_failure(
    make_events, settings, committed, monkeypatch
):
    settings.AUDIT_WITNESS = ["https://witness.test/checkpoints"]
    settings.AUDIT_WITNESS_TIMEOUT = 3
    sent, fail = [], [True]

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return b""

    def urlopen(request, timeout):
        if fail[0]:
            raise urllib.error.URLError("connection refused")
        sent.append((request.full_url, request.get_method(), timeout, json.loads(request.data)))
        return Response()

    monkeypatch.setattr(witness.urllib.request, "urlopen", urlopen)
    make_events(1)
    audit_seal_pending()
    # A handler on the logger itself: what the test reads does not depend on how
    # propagation to the root logger is configured by whatever ran before.
    failures = _Recorder()
    witness.logger.addHandler(failures)
    try:
        first = committed(audit_checkpoint_create)
    finally:
        witness.logger.removeHandler(failures)
    assert sent == []
    assert [message.split(": <urlopen")[0] for message in failures.messages] == [
        "audit witness https://witness.test/checkpoints failed, retried next checkpoint"
    ]

    fail[0] = False
    second = committed(audit_checkpoint_create)
    third = committed(audit_checkpoint_create)

    assert [(url, method, timeout) for url, method, timeout, _ in sent] == [
        ("https://witness.test/checkpoints", "POST", 3)
    ] * 3
    assert [body for *_, body in sent] == [
        {"id": row.pk, **chain.checkpoint_signed(checkpoint_values(row))}
        for row in (first, second, third)
    ]


@pytest.mark.parametrize("value", ["http://witness.test", "file:", "syslog", "ftp://x"])
def test_an_unknown_witness_is_refused(value):
    with pytest.raises(ValueError, match="is not file:PATH, log or https://URL"):
        witness.witness_parse(value)


# --- audit_verify against the witness -------------------------------------------


def test_verify_compares_every_configured_file_witness(witnessed):
    code, out, _ = verify_command()

    assert code == 0
    assert out.startswith("OK: chain intact up to position 6")
    assert f"compared with witness {witnessed} (3)" in out


def test_verify_reads_a_witness_named_on_the_command_line(witnessed, settings, tmp_path):
    copy = tmp_path / "elsewhere.jsonl"
    copy.write_bytes(witnessed.read_bytes())
    settings.AUDIT_WITNESS = ["log"]

    code, out, _ = verify_command("--witness", str(copy))

    assert code == 0
    assert f"compared with witness {copy} (3)" in out


def test_deleted_newest_checkpoints_and_events_are_a_rollback(witnessed):
    """The truncated tail: events and checkpoints after position 4 gone, as from a backup."""
    newest = AuditCheckpoint.objects.order_by("-id").first()
    tamper("DELETE FROM audit_auditcheckpoint WHERE position > 4")
    tamper(
        "DELETE FROM audit_auditevent WHERE id IN "
        "(SELECT event_id FROM audit_auditseal WHERE position > 4)"
    )
    tamper("DELETE FROM audit_auditseal WHERE position > 4")

    code, _, err = verify_command()

    assert code == 1
    assert (
        "BROKEN at position 6: position 6: rolled back: the database's newest is checkpoint" in err
    )
    assert f"line 3: checkpoint id {newest.pk} (scheduled, position 6, created" in err


def test_rewrite_before_the_last_witnessed_checkpoint_is_named(witnessed, make_events):
    """Checkpoints after position 2 deleted, event 3 rewritten and the chain re-hashed, the
    sealer and a new checkpoint run: the database alone is consistent again."""
    gone = AuditCheckpoint.objects.get(position=4)
    tamper("DELETE FROM audit_auditcheckpoint WHERE position > 2")
    tamper(
        "UPDATE audit_auditevent SET actor_id = 'someone-else' WHERE id = "
        "(SELECT event_id FROM audit_auditseal WHERE position = 3)"
    )
    rehash_from(3)
    make_events(1)
    audit_seal_pending()
    audit_checkpoint_create()
    assert verify_command("--witness", "/dev/null")[0] == 0  # no witness, no detection

    code, _, err = verify_command()

    assert code == 1
    assert (
        "BROKEN at position 4: position 4: a witnessed checkpoint is missing from the database "
        f"(deleted or rewritten) [witness {witnessed} line 2: checkpoint id {gone.pk} "
        "(scheduled, position 4, created "
    ) in err


def test_an_edited_witness_is_reported_not_trusted(witnessed):
    lines = witnessed.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["head_hash"] = "e" * 64
    lines[1] = json.dumps(entry)
    witnessed.write_text("\n".join(lines) + "\n")

    code, _, err = verify_command()

    assert code == 1
    assert "position 4: a checkpoint here has an invalid signature or an untrusted key" in err
    assert f"witness {witnessed}: checkpoint id" in err


def test_verify_passes_after_pruning_with_the_witness(db, witness_file, committed):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        for n in range(3):
            record_token_event(n)
        audit_seal_pending()
        committed(audit_checkpoint_create)
    with time_machine.travel(start + timedelta(days=401), tick=False):
        record_token_event(3)
        result = committed(audit_prune)
        audit_seal_pending()
        committed(audit_checkpoint_create)

    code, out, _ = verify_command()

    assert result.deleted == 3
    assert [entry["kind"] for entry in _lines(witness_file)] == [
        CheckpointKind.SCHEDULED,
        CheckpointKind.PRUNE,
        CheckpointKind.SCHEDULED,
    ]
    assert code == 0
    assert "OK: chain intact up to position 5" in out


# --- The offline export verifier against the witness ------------------------------


def _export(tmp_path, committed):
    out = tmp_path / "audit.jsonl"
    committed(
        audit_export,
        fmt="jsonl",
        filters=AuditFilters(),
        out_path=out,
        actor=Actor.cli("test"),
    )
    return out


def test_export_verifies_offline_against_the_witness(witnessed, tmp_path, committed):
    out = _export(tmp_path, committed)

    problems = chain.verify_export(
        out,
        json.loads(manifest_path_for(out).read_text()),
        witnesses={"witness": chain.witness_entries(witnessed)},
    )

    assert problems == []
    assert len(_lines(witnessed)) == 4  # the export's own checkpoint is witnessed too


def test_export_of_a_rolled_back_database_fails_against_the_witness(
    witnessed, tmp_path, committed, settings
):
    tamper("DELETE FROM audit_auditcheckpoint WHERE position > 4")
    tamper(
        "DELETE FROM audit_auditevent WHERE id IN "
        "(SELECT event_id FROM audit_auditseal WHERE position > 4)"
    )
    tamper("DELETE FROM audit_auditseal WHERE position > 4")
    settings.AUDIT_WITNESS = ["log"]  # the attacker's export is not witnessed
    out = _export(tmp_path, committed)

    problems = chain.verify_export(
        out,
        json.loads(manifest_path_for(out).read_text()),
        witnesses={"witness": chain.witness_entries(witnessed)},
    )

    assert len(problems) == 1
    assert problems[0].startswith(
        "position 4: rolled back: the export's checkpoint is behind witness line 3: checkpoint id"
    )


def test_export_with_a_rewritten_witnessed_position_fails(witnessed, tmp_path, committed):
    # The attacker rewrites position 3 and re-hashes the rest; the witness saw position 4.
    tamper(
        "UPDATE audit_auditevent SET actor_id = 'someone-else' WHERE id = "
        "(SELECT event_id FROM audit_auditseal WHERE position = 3)"
    )
    rehash_from(3)
    tamper("DELETE FROM audit_auditcheckpoint")
    out = _export(tmp_path, committed)

    problems = chain.verify_export(
        out,
        json.loads(manifest_path_for(out).read_text()),
        witnesses={"witness": chain.witness_entries(witnessed)},
    )

    assert [problem.split(" [")[0] for problem in problems] == [
        "position 6: differs from a witnessed checkpoint",
        "line 4: position 4: differs from a witnessed checkpoint",
    ]


def test_offline_script_compares_the_export_with_a_witness(witnessed, tmp_path, committed):
    from tests.audit.test_export import _offline

    out = _export(tmp_path, committed)

    intact = _offline(out, "--witness", str(witnessed))
    lines = witnessed.read_text().splitlines()
    other = tmp_path / "other-witness.jsonl"
    entry = json.loads(lines[1])
    entry["head_hash"] = "e" * 64
    other.write_text("\n".join([lines[0], json.dumps(entry), *lines[2:]]) + "\n")
    edited = _offline(out, "--witness", str(other))

    assert intact.returncode == 0, intact.stdout
    assert intact.stdout.endswith(f", matches witness {witnessed}\n")
    assert edited.returncode == 1
    assert edited.stdout.startswith(
        "FAIL line 2: position 4: a checkpoint here has an invalid signature or an untrusted key"
    )


def test_a_malformed_witness_setting_is_refused_at_start_up(settings):
    from audit.checks import audit_witness_configuration

    settings.AUDIT_WITNESS = ["log", "htps://typo.test"]

    [error] = audit_witness_configuration()

    assert (error.id, error.msg) == (
        "audit.E001",
        "AUDIT_WITNESS entry 'htps://typo.test' is not file:PATH, log or https://URL",
    )


def test_a_rollback_is_named_even_when_the_clock_went_back(make_events, witness_file, committed):
    """The database's newest checkpoint is older in the chain, though not by its time."""
    make_events(1)
    audit_seal_pending()
    with time_machine.travel(datetime(2026, 6, 1, tzinfo=UTC), tick=False):
        kept = committed(audit_checkpoint_create)
    make_events(1)
    audit_seal_pending()
    with time_machine.travel(datetime(2026, 3, 1, tzinfo=UTC), tick=False):
        newest = committed(audit_checkpoint_create)
    tamper("DELETE FROM audit_auditcheckpoint WHERE id = %s", [newest.pk])

    code, _, err = verify_command()

    assert code == 1
    assert (
        f"position 2: rolled back: the database's newest is checkpoint id {kept.pk} "
        "(scheduled, position 1, created 2026-06-01T00:00:00.000000Z)"
    ) in err


def test_the_report_counts_everything_it_checked(witnessed, make_events):
    make_events(2)  # recorded, not sealed yet
    witnesses, notes = witness.witness_files_read()

    report = audit_chain_verify(witnesses=witnesses, chunk_size=2)

    assert notes == []
    assert report == VerifyReport(
        checked=6,
        head_position=6,
        anchor_position=0,
        checkpoints=3,
        unsealed=2,
        witnessed={f"witness {witnessed}": 3},
        problem=None,
        notes=[],
    )


def test_a_report_that_stops_at_a_checkpoint_counts_those_before_it(witnessed):
    newest = AuditCheckpoint.objects.order_by("-id").first()
    tamper("UPDATE audit_auditcheckpoint SET head_hash = %s WHERE id = %s", ["e" * 64, newest.pk])
    witnesses, _ = witness.witness_files_read()

    report = audit_chain_verify(witnesses=witnesses)

    assert (report.checkpoints, report.checked, report.head_position, report.witnessed) == (
        2,
        0,
        0,
        {},
    )
    assert str(report.problem).startswith(
        "position 6: a checkpoint here has an invalid signature or an untrusted key "
        f"[checkpoint id {newest.pk} (scheduled, position 6, created "
    )
