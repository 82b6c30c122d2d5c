"""Red team: the audit chain attacked as a PostgreSQL superuser would, caught by audit_verify.

A superuser switches every trigger off (``session_replication_role = replica``)
and rewrites the audit tables with plain SQL; what they cannot touch is the
server's audit key and the witness file outside the database. Each test scripts
one attack and asserts the exit code of ``manage.py audit_verify`` and the
position or checkpoint it names.

An event's seal (position, prev_hash, hash, sealed_at) is its row in
``audit_auditseal``; the raw SQL that reads or writes seals is kept in the
helpers below, so a change of where the seal is stored is one local edit.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection

from audit import chain
from audit.models import AuditCheckpoint
from audit.selectors import audit_chain_head, audit_events_sealed
from audit.services import audit_checkpoint_create, audit_seal_pending
from tests.audit.conftest import verify_command

pytestmark = pytest.mark.postgres


def superuser_sql(sql: str, params=None) -> list[tuple]:
    """Run SQL with every trigger off, as a superuser can; return the rows it read."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
        finally:
            cursor.execute("SET session_replication_role = origin")


def _event_seal(position: int) -> tuple[int, str]:
    """(event id, hash) of the event sealed at ``position``."""
    [row] = superuser_sql(
        "SELECT event_id, hash FROM audit_auditseal WHERE position = %s", [position]
    )
    return row


def _forge_event(*, position: int, prev_hash: str, actor_id: str) -> str:
    """Insert an event and its seal at ``position`` with a correctly recomputed hash."""
    now = datetime.now(UTC)
    record = {
        "occurred_at": now,
        "event_type": "token.issued",
        "actor_kind": "machine",
        "actor_id": actor_id,
        "actor_display": f"machine {actor_id}",
        "target_kind": "machine",
        "target_id": actor_id,
        "target_display": f"machine {actor_id}",
        "outcome": "success",
        "reason": "",
        "source_ip": None,
        "user_agent": "",
        "request_id": "",
        "details": {"scope": "admin"},
    }
    digest = chain.event_hash(
        chain.event_record({**record, "position": position, "sealed_at": now}), prev_hash
    )
    values = [*record.values()]
    values[[*record].index("details")] = chain.canonical_json(record["details"]).decode()
    marks = ", ".join(["%s"] * len(record))
    # The test's own column names, nothing from input.
    [(event_id,)] = superuser_sql(
        f"INSERT INTO audit_auditevent ({', '.join(record)}) VALUES ({marks}) "  # noqa: S608
        "RETURNING id",
        values,
    )
    superuser_sql(
        "INSERT INTO audit_auditseal (position, event_id, prev_hash, hash, sealed_at) "
        "VALUES (%s, %s, %s, %s, %s)",
        [position, event_id, prev_hash, digest, now],
    )
    return digest


def _delete_events(condition: str, params=None) -> None:
    """Delete the events whose seal matches ``condition``, and their seals."""
    superuser_sql(
        "DELETE FROM audit_auditevent WHERE id IN "  # noqa: S608 (the test's own SQL)
        f"(SELECT event_id FROM audit_auditseal WHERE {condition})",
        params,
    )
    superuser_sql(f"DELETE FROM audit_auditseal WHERE {condition}", params)  # noqa: S608


def _rehash_from(position: int) -> None:
    """Recompute the seals' prev_hash/hash from ``position`` to the head, as the sealer would."""
    prev = _event_seal(position - 1)[1] if position > 1 else chain.GENESIS_HASH
    for event in audit_events_sealed().filter(position__gte=position).order_by("position"):
        values = {name: getattr(event, name) for name in chain.RECORD_FIELDS}
        digest = chain.event_hash(chain.event_record(values), prev)
        superuser_sql(
            "UPDATE audit_auditseal SET prev_hash = %s, hash = %s WHERE position = %s",
            [prev, digest, event.position],
        )
        prev = digest


CHECKPOINT_COLUMNS = (
    "id, created_at, kind, position, head_hash, anchor_position, anchor_hash, key_id, "
    "signature, prev_checkpoint"
)


@pytest.fixture
def history(make_events, witness_file, committed):
    """Positions 1..6 sealed, checkpoints at 2, 4 and 6, each copied to the file witness."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert cursor.fetchone() == (True,), "the red team needs a superuser connection"
    for _ in range(3):
        make_events(2)
        audit_seal_pending()
        committed(audit_checkpoint_create)
    assert len(witness_file.read_text().splitlines()) == 3
    assert verify_command()[0] == 0
    return witness_file


def _checkpoint(position: int) -> AuditCheckpoint:
    return AuditCheckpoint.objects.get(position=position)


def test_delete_tail_truncate_checkpoints_and_forged_reinsert_is_caught_by_the_witness(
    history, make_events, committed
):
    """The issue's attack: the database alone is self-consistent afterwards."""
    witnessed_at_six = _checkpoint(6)
    keep = superuser_sql(
        f"SELECT {CHECKPOINT_COLUMNS} FROM audit_auditcheckpoint WHERE position <= 4 "  # noqa: S608
        "ORDER BY id"
    )
    _delete_events("position > 4")
    superuser_sql("TRUNCATE audit_auditcheckpoint")
    for row in keep:
        superuser_sql(
            f"INSERT INTO audit_auditcheckpoint ({CHECKPOINT_COLUMNS}) "  # noqa: S608
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            list(row),
        )
    prev = _event_seal(4)[1]
    for position in (5, 6, 7):
        prev = _forge_event(position=position, prev_hash=prev, actor_id="attacker")
    # The portal carries on: the sealer and the next checkpoint sign the forged head.
    make_events(1)
    audit_seal_pending()
    committed(audit_checkpoint_create)
    assert verify_command("--witness", "/dev/null")[0] == 0  # the database alone is fooled

    code, _, err = verify_command()

    assert code == 1
    assert (
        "BROKEN at position 6: position 6: a witnessed checkpoint is missing from the database "
        f"(deleted or rewritten) [witness {history} line 3: checkpoint id {witnessed_at_six.pk} "
        "(scheduled, position 6, created "
    ) in err


def test_unsigned_checkpoint_row_neither_rebases_the_sealer_nor_passes(history, make_events):
    head = audit_chain_head()
    superuser_sql(
        "INSERT INTO audit_auditcheckpoint (created_at, kind, position, head_hash, "
        "anchor_position, anchor_hash, key_id, signature, prev_checkpoint) "
        "VALUES (now(), 'prune', 500, %s, 500, %s, 'attacker', 'unsigned', %s)",
        ["f" * 64, "f" * 64, "0" * 64],
    )
    forged = _checkpoint(500)

    assert audit_chain_head() == head == (6, _event_seal(6)[1])
    make_events(1)
    audit_seal_pending()
    assert _event_seal(7)[0] is not None  # sealed after 6, not after 500

    code, _, err = verify_command()

    assert code == 1
    assert (
        "BROKEN at position 500: position 500: a checkpoint here has an invalid signature or an "
        f"untrusted key [checkpoint id {forged.pk} (prune, position 500, created "
    ) in err


def test_reordered_pair_of_events_is_named(history):
    superuser_sql("UPDATE audit_auditseal SET position = -3 WHERE position = 3")
    superuser_sql("UPDATE audit_auditseal SET position = 3 WHERE position = 4")
    superuser_sql("UPDATE audit_auditseal SET position = 4 WHERE position = -3")

    code, _, err = verify_command()

    assert code == 1
    assert "BROKEN at position 3: position 3: does not link to the previous event" in err


def test_reordered_pair_with_recomputed_hashes_is_named_by_the_checkpoint(history):
    checkpoint = _checkpoint(4)
    superuser_sql("UPDATE audit_auditseal SET position = -3 WHERE position = 3")
    superuser_sql("UPDATE audit_auditseal SET position = 3 WHERE position = 4")
    superuser_sql("UPDATE audit_auditseal SET position = 4 WHERE position = -3")
    _rehash_from(3)

    code, _, err = verify_command()

    assert code == 1
    assert (
        "BROKEN at position 4: position 4: differs from its signed checkpoint "
        f"(rewritten at or before) [checkpoint id {checkpoint.pk} (scheduled, position 4,"
    ) in err


def test_edited_details_field_is_named(history):
    superuser_sql(
        "UPDATE audit_auditevent SET details = %s WHERE id = "
        "(SELECT event_id FROM audit_auditseal WHERE position = 5)",
        ['{"jti": "jti-0", "scope": "admin", "aud": ["https://api.test"], "n": 0}'],
    )

    code, _, err = verify_command()

    assert code == 1
    assert "BROKEN at position 5: position 5: altered (hash mismatch)" in err


def test_event_deleted_in_the_middle_is_named(history):
    _delete_events("position = 3")

    code, _, err = verify_command()

    assert code == 1
    assert "BROKEN at position 3: position 3: missing (the chain jumps here)" in err


def test_event_deleted_in_the_middle_and_the_rest_renumbered_is_named(history):
    checkpoint = _checkpoint(4)
    _delete_events("position = 3")
    # Through negative numbers: the primary key is checked row by row.
    superuser_sql("UPDATE audit_auditseal SET position = 1 - position WHERE position > 3")
    superuser_sql("UPDATE audit_auditseal SET position = -position WHERE position < 0")
    _rehash_from(3)

    code, _, err = verify_command()

    assert code == 1
    assert (
        "BROKEN at position 4: position 4: differs from its signed checkpoint "
        f"(rewritten at or before) [checkpoint id {checkpoint.pk} (scheduled, position 4,"
    ) in err


def test_rollback_to_an_older_backup_is_caught_by_the_witness(history):
    """Restore the audit tables as they were when position 4 was checkpointed."""
    backup_checkpoint = _checkpoint(4)
    newest = _checkpoint(6)
    _delete_events("position > 4")
    superuser_sql("DELETE FROM audit_auditcheckpoint WHERE id > %s", [backup_checkpoint.pk])
    assert verify_command("--witness", "/dev/null")[0] == 0  # an old backup is self-consistent

    code, _, err = verify_command()

    assert code == 1
    assert (
        "BROKEN at position 6: position 6: rolled back: the database's newest is checkpoint id "
        f"{backup_checkpoint.pk} (scheduled, position 4, created "
    ) in err
    assert f"[witness {history} line 3: checkpoint id {newest.pk} (scheduled, position 6," in err


def test_rollback_then_new_activity_is_still_caught_by_the_witness(history, make_events, committed):
    """After the restore the portal keeps sealing and checkpointing on the old chain."""
    backup_checkpoint = _checkpoint(4)
    newest = _checkpoint(6)
    _delete_events("position > 4")
    superuser_sql("DELETE FROM audit_auditcheckpoint WHERE id > %s", [backup_checkpoint.pk])
    make_events(3)
    audit_seal_pending()
    committed(audit_checkpoint_create)

    code, _, err = verify_command()

    assert code == 1
    assert (
        "BROKEN at position 6: position 6: a witnessed checkpoint is missing from the database "
        f"(deleted or rewritten) [witness {history} line 3: checkpoint id {newest.pk} "
    ) in err


def test_deleted_oldest_events_are_not_laundered_by_the_next_checkpoint(
    history, make_events, committed
):
    """A prune faked as a superuser: the oldest events and seals deleted, the seal of
    position 3 kept as if it were a prune's anchor, no signed prune checkpoint. The
    seal table's anchor moves to 3 and the next checkpoint signs it."""
    superuser_sql(
        "DELETE FROM audit_auditevent WHERE id IN "
        "(SELECT event_id FROM audit_auditseal WHERE position <= 3)"
    )
    superuser_sql("DELETE FROM audit_auditseal WHERE position < 3")
    make_events(1)
    audit_seal_pending()
    laundering = committed(audit_checkpoint_create)
    assert laundering.anchor_position == 3

    code, _, err = verify_command()

    assert code == 1
    assert (
        "BROKEN at position 3: position 3: the prune anchor moved without a prune checkpoint "
        f"[checkpoint id {laundering.pk} (scheduled, position 7, created "
    ) in err
