"""audit_verify: every kind of tampering is found at the right position.

Tampering goes through raw SQL, with the PostgreSQL triggers switched off
(``tamper``), as an attacker with database access would do it.
"""

from __future__ import annotations

import pytest
from django.core.management import call_command

from audit import chain
from audit.selectors import audit_chain_verify, audit_events_sealed
from audit.services import audit_checkpoint_create, audit_seal_pending
from tests.audit.conftest import tamper


@pytest.fixture
def sealed_chain(make_events):
    make_events(6)
    audit_seal_pending()
    return list(audit_events_sealed().order_by("position"))


def _broken_at() -> tuple[int, str]:
    report = audit_chain_verify()
    assert not report.ok
    return report.problem.position, report.problem.message


def test_intact_chain_verifies_and_exits_zero(sealed_chain, capsys):
    audit_checkpoint_create()

    call_command("audit_verify")

    assert "OK: chain intact up to position 6" in capsys.readouterr().out


def test_altered_event_is_named(sealed_chain, capsys):
    tamper(
        "UPDATE audit_auditevent SET reason = 'nothing' WHERE id = "
        "(SELECT event_id FROM audit_auditseal WHERE position = 3)"
    )

    assert _broken_at() == (3, "altered (hash mismatch)")
    with pytest.raises(SystemExit) as exit_info:
        call_command("audit_verify")
    assert exit_info.value.code == 1
    assert "BROKEN at position 3" in capsys.readouterr().err


def test_altered_details_are_found(sealed_chain):
    tamper(
        "UPDATE audit_auditevent SET details = %s WHERE id = "
        "(SELECT event_id FROM audit_auditseal WHERE position = 5)",
        ['{"jti": "jti-4", "scope": "admin", "aud": ["https://api.test"], "n": 4}'],
    )

    assert _broken_at() == (5, "altered (hash mismatch)")


def test_deleted_event_is_named(sealed_chain):
    tamper(
        "DELETE FROM audit_auditevent WHERE id = "
        "(SELECT event_id FROM audit_auditseal WHERE position = 4)"
    )

    assert _broken_at() == (4, "missing (the chain jumps here)")


def test_deleted_seal_is_a_missing_position(sealed_chain):
    tamper("DELETE FROM audit_auditseal WHERE position = 2")

    assert _broken_at() == (2, "missing (the chain jumps here)")


def test_reordered_events_are_named(sealed_chain):
    tamper("UPDATE audit_auditseal SET position = -1 WHERE position = 2")
    tamper("UPDATE audit_auditseal SET position = 2 WHERE position = 3")
    tamper("UPDATE audit_auditseal SET position = 3 WHERE position = -1")

    assert _broken_at() == (2, "does not link to the previous event")


def test_inserted_event_is_named(sealed_chain):
    forged = sealed_chain[2]
    tamper("UPDATE audit_auditseal SET position = position + 100 WHERE position >= 3")
    tamper("UPDATE audit_auditseal SET position = position - 99 WHERE position >= 103")
    tamper(
        "INSERT INTO audit_auditevent (id, occurred_at, event_type, actor_kind, actor_id, "
        "actor_display, target_kind, target_id, target_display, outcome, reason, user_agent, "
        "request_id, details) "
        "VALUES (1000, %s, 'token.issued', 'machine', 'evil', '', '', '', '', 'success', '', '', "
        "'', '{}')",
        [forged.occurred_at],
    )
    tamper(
        "INSERT INTO audit_auditseal (position, event_id, prev_hash, hash, sealed_at) "
        "VALUES (3, 1000, %s, %s, %s)",
        [forged.prev_hash, "f" * 64, forged.sealed_at],
    )

    assert _broken_at() == (3, "altered (hash mismatch)")


def test_recomputed_chain_is_caught_by_the_signed_checkpoint(sealed_chain):
    audit_checkpoint_create()
    # Rewrite event 2 and re-hash everything after it, exactly as the sealer would.
    tamper(
        "UPDATE audit_auditevent SET actor_id = 'someone-else' WHERE id = "
        "(SELECT event_id FROM audit_auditseal WHERE position = 2)"
    )
    prev = sealed_chain[0].hash
    for event in audit_events_sealed().order_by("position")[1:]:
        values = {name: getattr(event, name) for name in chain.RECORD_FIELDS}
        digest = chain.event_hash(chain.event_record(values), prev)
        tamper(
            "UPDATE audit_auditseal SET prev_hash = %s, hash = %s WHERE position = %s",
            [prev, digest, event.position],
        )
        prev = digest

    assert _broken_at() == (6, "differs from its signed checkpoint (rewritten at or before)")


def test_deleting_the_newest_events_is_caught_by_the_checkpoint(sealed_chain):
    signed = audit_checkpoint_create()
    tamper("DELETE FROM audit_auditseal WHERE position >= 5")

    assert _broken_at() == (5, "missing (a checkpoint signed position 6)")
    # The report names the checkpoint that signed the missing positions.
    assert str(audit_chain_verify().problem).startswith(
        "position 5: missing (a checkpoint signed position 6) "
        f"[checkpoint id {signed.pk} (scheduled, position 6, created "
    )


def test_an_event_inserted_below_the_sealed_head_is_named(sealed_chain, make_events):
    """An event row given an id below the sealer's horizon is never sealed: outside the chain."""
    [planted] = make_events(1)
    tamper("UPDATE audit_auditevent SET id = 0 WHERE id = %s", [planted.pk])

    report = audit_chain_verify()

    assert report.problem == chain.Problem(
        None, "event id 0 is below the sealed head but not sealed"
    )
    assert (report.checked, report.head_position, report.unsealed) == (6, 6, 0)


def test_forged_checkpoint_signature_is_named(sealed_chain):
    audit_checkpoint_create()
    tamper("UPDATE audit_auditcheckpoint SET position = 5")

    assert _broken_at() == (
        5,
        "a checkpoint here has an invalid signature or an untrusted key",
    )


def test_unsealed_events_are_reported_not_broken(sealed_chain, make_events):
    make_events(2)

    report = audit_chain_verify()

    assert report.ok
    assert (report.checked, report.unsealed, report.head_position) == (6, 2, 6)


def test_an_anchor_moved_without_a_prune_checkpoint_is_named(sealed_chain):
    """The oldest events and seals deleted as if pruned, with no signed prune checkpoint:
    the next scheduled checkpoint signs the seal table's new anchor, and is refused."""
    tamper(
        "DELETE FROM audit_auditevent WHERE id IN "
        "(SELECT event_id FROM audit_auditseal WHERE position <= 3)"
    )
    tamper("DELETE FROM audit_auditseal WHERE position < 3")
    laundering = audit_checkpoint_create()
    assert (laundering.kind, laundering.anchor_position) == ("scheduled", 3)

    report = audit_chain_verify()

    assert report.problem.position == 3
    assert str(report.problem).startswith(
        "position 3: the prune anchor moved without a prune checkpoint "
        f"[checkpoint id {laundering.pk} (scheduled, position 6, created "
    )
    assert (report.checkpoints, report.checked, report.anchor_position) == (1, 0, 0)
