"""Checkpoints chained to each other, and the sealer trusting only authentic ones.

Each checkpoint signs the digest of the one before it, so removing, inserting or
reordering checkpoints is named by ``audit_verify``. The verifier mutants of
issue 10 item 7 (disagreeing checkpoints ignored, events at or below the prune
anchor ignored) are pinned here too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from audit import chain
from audit.choices import CheckpointKind
from audit.models import AuditCheckpoint, AuditEvent, AuditSeal
from audit.selectors import (
    audit_chain_anchor,
    audit_chain_head,
    audit_chain_verify,
    audit_events_sealed,
)
from audit.services import (
    _checkpoint_insert,
    audit_checkpoint_create,
    audit_prune,
    audit_seal_pending,
    checkpoint_values,
)
from tests.audit.conftest import record_token_event, tamper, verify_command


@pytest.fixture
def three_checkpoints(make_events):
    """Positions 2, 4 and 6 checkpointed."""
    checkpoints = []
    for _ in range(3):
        make_events(2)
        audit_seal_pending()
        checkpoints.append(audit_checkpoint_create())
    return checkpoints


def _problem():
    report = audit_chain_verify()
    assert not report.ok
    return report.problem


def test_each_checkpoint_signs_the_digest_of_the_one_before(three_checkpoints):
    first, second, third = three_checkpoints

    assert first.prev_checkpoint == chain.GENESIS_CHECKPOINT
    assert second.prev_checkpoint == chain.checkpoint_digest(checkpoint_values(first))
    assert third.prev_checkpoint == chain.checkpoint_digest(checkpoint_values(second))
    payload = chain.checkpoint_payload(checkpoint_values(third))
    assert payload["prev_checkpoint"] == third.prev_checkpoint
    assert audit_chain_verify().checkpoints == 3


def test_a_deleted_checkpoint_is_named_at_the_next_one(three_checkpoints):
    _, second, third = three_checkpoints
    tamper("DELETE FROM audit_auditcheckpoint WHERE id = %s", [second.pk])

    problem = _problem()

    assert (problem.position, problem.message) == (
        6,
        "a checkpoint here does not follow the one before it "
        "(a checkpoint was removed, inserted or reordered)",
    )
    assert problem.checkpoint == chain.describe_checkpoint(checkpoint_values(third))
    code, _, err = verify_command()
    assert code == 1
    assert "BROKEN at position 6: position 6: a checkpoint here does not follow" in err
    assert f"checkpoint id {third.pk} (scheduled, position 6, created " in err


def test_reordered_checkpoints_are_named(three_checkpoints):
    first, second, _ = three_checkpoints
    # Swap the first two rows: each keeps its valid signature, only the order changes.
    tamper("UPDATE audit_auditcheckpoint SET id = -1 WHERE id = %s", [first.pk])
    tamper("UPDATE audit_auditcheckpoint SET id = %s WHERE id = %s", [first.pk, second.pk])
    tamper("UPDATE audit_auditcheckpoint SET id = %s WHERE id = -1", [second.pk])

    problem = _problem()

    assert problem.position == 4
    assert problem.message.startswith("a checkpoint here does not follow the one before it")


def test_a_replayed_old_checkpoint_is_named(three_checkpoints):
    first = three_checkpoints[0]
    tamper(
        "INSERT INTO audit_auditcheckpoint (created_at, kind, position, head_hash, "
        "anchor_position, anchor_hash, key_id, signature, prev_checkpoint) "
        "SELECT created_at, kind, position, head_hash, anchor_position, anchor_hash, key_id, "
        "signature, prev_checkpoint FROM audit_auditcheckpoint WHERE id = %s",
        [first.pk],
    )

    problem = _problem()

    assert problem.position == 2
    assert problem.message.startswith("a checkpoint here does not follow the one before it")


def test_unsigned_checkpoint_row_neither_rebases_the_sealer_nor_verifies(make_events):
    make_events(3)
    audit_seal_pending()
    head = audit_chain_head()
    tamper(
        "INSERT INTO audit_auditcheckpoint (created_at, kind, position, head_hash, "
        "anchor_position, anchor_hash, key_id, signature, prev_checkpoint) "
        "VALUES (%s, 'prune', 100, %s, 99, %s, 'attacker', 'not-a-signature', '')",
        [datetime.now(UTC), "f" * 64, "e" * 64],
    )
    forged = AuditCheckpoint.objects.get(position=100)

    assert audit_chain_head() == head
    assert audit_chain_anchor() == (0, chain.GENESIS_HASH)
    make_events(1)
    audit_seal_pending()
    assert AuditSeal.objects.order_by("-position").values_list("position", flat=True)[0] == 4
    problem = _problem()
    assert (problem.position, problem.message) == (
        100,
        "a checkpoint here has an invalid signature or an untrusted key",
    )
    assert problem.checkpoint.startswith(f"checkpoint id {forged.pk} (prune, position 100,")


def test_a_validly_signed_checkpoint_that_is_not_chained_does_not_move_the_anchor(make_events):
    """A genuine prune checkpoint copied to the end keeps its signature but not its link."""
    make_events(4)
    audit_seal_pending()
    prune = _checkpoint_insert(
        kind=CheckpointKind.PRUNE,
        position=4,
        head_hash=AuditSeal.objects.get(position=4).hash,
        anchor_position=2,
        anchor_hash=AuditSeal.objects.get(position=2).hash,
    )
    audit_checkpoint_create()
    tamper(
        "UPDATE audit_auditcheckpoint SET id = id + 1000 WHERE id = %s",
        [prune.pk],
    )

    assert audit_chain_anchor() == (0, chain.GENESIS_HASH)


# --- Item 7: the verifier's own checks, each with a test that fails without it --------


def test_a_signed_checkpoint_disagreeing_with_an_earlier_one_is_named(make_events):
    make_events(3)
    audit_seal_pending()
    first = audit_checkpoint_create()
    # A later checkpoint, validly signed and chained, that claims another hash at position 3.
    bad = _checkpoint_insert(
        kind=CheckpointKind.SCHEDULED,
        position=3,
        head_hash="e" * 64,
        anchor_position=0,
        anchor_hash=chain.GENESIS_HASH,
    )

    problem = _problem()

    assert (problem.position, problem.message) == (
        3,
        f"checkpoints disagree here (also {chain.describe_checkpoint(checkpoint_values(first))})",
    )
    assert problem.checkpoint == chain.describe_checkpoint(checkpoint_values(bad))


def test_a_signed_checkpoint_disagreeing_with_the_events_is_named(make_events):
    make_events(3)
    audit_seal_pending()
    bad = _checkpoint_insert(
        kind=CheckpointKind.SCHEDULED,
        position=2,
        head_hash="e" * 64,
        anchor_position=0,
        anchor_hash=chain.GENESIS_HASH,
    )

    problem = _problem()

    assert (problem.position, problem.message) == (
        2,
        "differs from its signed checkpoint (rewritten at or before)",
    )
    assert problem.checkpoint == chain.describe_checkpoint(checkpoint_values(bad))


START = datetime(2026, 1, 1, tzinfo=UTC)
SEAL_COLUMNS = ("position", "prev_hash", "hash", "sealed_at")


def _sealed_rows(**lookup) -> list[dict]:
    """Events with their seals, as an attacker would save them before a prune."""
    names = [field.attname for field in AuditEvent._meta.concrete_fields]
    return list(audit_events_sealed().filter(**lookup).values(*names, *SEAL_COLUMNS))


def _reinsert(row: dict) -> None:
    """Put a pruned event and its seal back, triggers off, as a superuser could."""
    event = {name: value for name, value in row.items() if name not in SEAL_COLUMNS}
    event["details"] = chain.canonical_json(event["details"]).decode()
    marks = ", ".join(["%s"] * len(event))
    # The model's own column names, nothing from input.
    tamper(
        f"INSERT INTO audit_auditevent ({', '.join(event)}) VALUES ({marks})",  # noqa: S608
        list(event.values()),
    )
    tamper(
        "INSERT INTO audit_auditseal (position, event_id, prev_hash, hash, sealed_at) "
        "VALUES (%s, %s, %s, %s, %s)",
        [row["position"], row["id"], row["prev_hash"], row["hash"], row["sealed_at"]],
    )


@pytest.fixture
def pruned(db):
    with time_machine.travel(START, tick=False):
        for n in range(3):
            record_token_event(n)
        audit_seal_pending()
    with time_machine.travel(START + timedelta(days=300), tick=False):
        for n in range(3, 5):
            record_token_event(n)
        audit_seal_pending()
    removed = {row["position"]: row for row in _sealed_rows(position__lte=3)}
    with time_machine.travel(START + timedelta(days=401), tick=False):
        result = audit_prune()
    assert result.anchor_position == 3
    audit_seal_pending()
    return removed


def test_an_event_left_at_or_below_the_prune_anchor_is_named(pruned):
    _reinsert(pruned[2])

    problem = _problem()

    assert (problem.position, problem.message) == (
        2,
        "event present at or below the prune anchor",
    )


def test_a_seal_row_planted_below_the_anchor_is_named(pruned):
    """A seal without an event below the prune anchor: no event to find there, but the
    seal table's anchor (what the sealer, checkpoints and exports start from) moved."""
    tamper(
        "INSERT INTO audit_auditseal (position, event_id, prev_hash, hash, sealed_at) "
        "VALUES (2, NULL, '', %s, %s)",
        ["e" * 64, datetime.now(UTC)],
    )

    assert audit_chain_anchor() == (2, "e" * 64)
    assert (_problem().position, _problem().message) == (
        2,
        "the seal table's anchor is not the signed prune anchor (position 3)",
    )


def test_an_anchor_that_moves_back_is_named(pruned):
    bad = _checkpoint_insert(
        kind=CheckpointKind.PRUNE,
        position=6,
        head_hash=AuditSeal.objects.get(position=6).hash,
        anchor_position=2,
        anchor_hash="e" * 64,
    )

    problem = _problem()

    assert (problem.position, problem.message) == (2, "the prune anchor moved back or changed")
    assert problem.checkpoint == chain.describe_checkpoint(checkpoint_values(bad))


def test_a_changed_anchor_hash_is_named(pruned):
    _checkpoint_insert(
        kind=CheckpointKind.SCHEDULED,
        position=6,
        head_hash=AuditSeal.objects.get(position=6).hash,
        anchor_position=3,
        anchor_hash="e" * 64,
    )

    problem = _problem()

    assert (problem.position, problem.message) == (3, "the prune anchor moved back or changed")


def test_an_anchor_disagreeing_with_a_signed_head_is_named(make_events):
    make_events(3)
    audit_seal_pending()
    at_three = audit_checkpoint_create()
    make_events(2)
    audit_seal_pending()
    _checkpoint_insert(
        kind=CheckpointKind.PRUNE,
        position=5,
        head_hash=AuditSeal.objects.get(position=5).hash,
        anchor_position=3,
        anchor_hash="e" * 64,
    )

    problem = _problem()

    earlier = chain.describe_checkpoint(checkpoint_values(at_three))
    assert (problem.position, problem.message) == (3, f"checkpoints disagree here (also {earlier})")


def test_verify_passes_after_pruning_with_chained_checkpoints(pruned):
    audit_checkpoint_create()

    report = audit_chain_verify()

    assert report.ok
    assert (report.anchor_position, report.checked, report.checkpoints) == (3, 3, 2)
    assert verify_command()[0] == 0


def _legacy_checkpoint(position: int, head_hash: str) -> AuditCheckpoint:
    """A checkpoint as signed before checkpoints were chained (no prev_checkpoint)."""
    from audit.signing import audit_key_id, audit_sign

    checkpoint = AuditCheckpoint(
        created_at=datetime.now(UTC),
        kind=CheckpointKind.SCHEDULED,
        position=position,
        head_hash=head_hash,
        anchor_position=0,
        anchor_hash=chain.GENESIS_HASH,
        key_id=audit_key_id(),
        prev_checkpoint="",
    )
    checkpoint.signature = audit_sign(chain.checkpoint_payload(checkpoint_values(checkpoint)))
    checkpoint.save(force_insert=True)
    return checkpoint


def test_legacy_unchained_checkpoints_verify_before_the_chained_ones(make_events):
    make_events(2)
    audit_seal_pending()
    legacy = _legacy_checkpoint(2, AuditSeal.objects.get(position=2).hash)
    chained = audit_checkpoint_create()

    assert "prev_checkpoint" not in chain.checkpoint_payload(checkpoint_values(legacy))
    assert chained.prev_checkpoint == chain.checkpoint_digest(checkpoint_values(legacy))
    assert audit_chain_verify().ok


def test_a_legacy_checkpoint_replayed_after_chained_ones_is_named(make_events):
    make_events(2)
    audit_seal_pending()
    legacy = _legacy_checkpoint(2, AuditSeal.objects.get(position=2).hash)
    audit_checkpoint_create()
    tamper(
        "INSERT INTO audit_auditcheckpoint (created_at, kind, position, head_hash, "
        "anchor_position, anchor_hash, key_id, signature, prev_checkpoint) "
        "SELECT created_at, kind, position, head_hash, anchor_position, anchor_hash, key_id, "
        "signature, prev_checkpoint FROM audit_auditcheckpoint WHERE id = %s",
        [legacy.pk],
    )

    problem = _problem()

    assert (problem.position, problem.message) == (
        2,
        "an unchained checkpoint follows chained ones",
    )


def test_a_signed_checkpoint_moving_the_head_back_is_named(three_checkpoints):
    back = _checkpoint_insert(
        kind=CheckpointKind.SCHEDULED,
        position=4,
        head_hash=AuditSeal.objects.get(position=4).hash,
        anchor_position=0,
        anchor_hash=chain.GENESIS_HASH,
    )

    problem = _problem()

    assert (problem.position, problem.message) == (
        4,
        "a checkpoint here moves the head back from position 6",
    )
    assert problem.checkpoint == chain.describe_checkpoint(checkpoint_values(back))


def test_a_forged_newest_row_is_never_chained_onto(three_checkpoints):
    last = three_checkpoints[-1]
    tamper(
        "INSERT INTO audit_auditcheckpoint (created_at, kind, position, head_hash, "
        "anchor_position, anchor_hash, key_id, signature, prev_checkpoint) "
        "VALUES (%s, 'scheduled', 6, %s, 0, %s, 'attacker', 'unsigned', '')",
        [datetime.now(UTC), "f" * 64, chain.GENESIS_HASH],
    )
    forged = AuditCheckpoint.objects.get(key_id="attacker")

    ours = audit_checkpoint_create()

    assert ours.prev_checkpoint == chain.checkpoint_digest(checkpoint_values(last))
    assert _problem().checkpoint.startswith(f"checkpoint id {forged.pk} (scheduled, position 6,")
    tamper("DELETE FROM audit_auditcheckpoint WHERE id = %s", [forged.pk])
    assert audit_chain_verify().ok  # the forged row was never part of what we signed


def test_an_old_event_reinserted_below_the_anchor_does_not_rebase_the_sealer(db):
    with time_machine.travel(START, tick=False):
        for n in range(3):
            record_token_event(n)
        audit_seal_pending()
        [old] = _sealed_rows(position=2)
    with time_machine.travel(START + timedelta(days=401), tick=False):
        assert audit_prune().anchor_position == 3
    _reinsert(old)
    record_token_event(9)
    audit_seal_pending()

    # The head comes from the seal table's newest row: the sealer carries on after 3
    # (with the audit.pruned event and the new one).
    assert audit_chain_head()[0] == 5
    assert AuditSeal.objects.get(position=4).prev_hash == AuditSeal.objects.get(position=3).hash
    # The anchor is the seal table's lowest row, so the re-inserted seal moves it back;
    # audit_verify names the event against the signed prune anchor.
    assert audit_chain_anchor() == (1, old["prev_hash"])
    assert (_problem().position, _problem().message) == (
        2,
        "event present at or below the prune anchor",
    )
