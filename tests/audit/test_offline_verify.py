"""``audit.chain.verify_export`` and the walks under it, on exports built without a database.

Each test builds the exact export it needs (``tests/audit/offline_export.py``) and
asserts the full list of problems: an auditor reads these lines, and a check that
stops reporting (or reports the wrong place) must fail a test.
"""

from __future__ import annotations

import json

import pytest

from audit import chain
from tests.audit.offline_export import (
    KEY,
    OTHER_KEY,
    chained,
    checkpoint,
    event,
    events,
    following,
    manifest,
    write_csv,
    write_jsonl,
)

EARLIER = "2026-01-02T04:00:00.000000Z"
LATER = "2026-01-02T06:00:00.000000Z"


def _keys(*keys):
    return {chain.public_jwk(k.public_key())["kid"]: k.public_key() for k in keys}


def _jsonl(tmp_path, lines, checkpoints=None, **kwargs):
    path = write_jsonl(tmp_path / "audit.jsonl", lines)
    head = lines[-1] if lines else None
    if checkpoints is None:
        checkpoints = [checkpoint(head["position"], head["hash"])] if head else []
    return path, manifest(path, lines, checkpoints, **kwargs)


# --- Intact exports ----------------------------------------------------------------


@pytest.mark.parametrize("version", [2, 3])
def test_an_intact_csv_export_with_formula_cells_verifies(tmp_path, version):
    lines = chained([event(1, user_agent="=HYPERLINK(1)"), event(2, reason="'quoted"), event(3)])
    path = write_csv(tmp_path / "audit.csv", lines)
    body = manifest(path, lines, [checkpoint(3, lines[2]["hash"])], fmt="csv", version=version)

    assert chain.verify_export(path, body) == []


def test_a_version_1_csv_export_wrote_formula_cells_as_they_are(tmp_path):
    lines = chained([event(1, user_agent="=HYPERLINK(1)"), event(2, source_ip=None)])
    path = write_csv(tmp_path / "audit.csv", lines, escaped=False)
    body = manifest(path, lines, [checkpoint(2, lines[1]["hash"])], fmt="csv", version=1)

    assert chain.verify_export(path, body) == []
    # The same file under version 2 rules is refused: the cell should have been escaped.
    newer = manifest(path, lines, [checkpoint(2, lines[1]["hash"])], fmt="csv", version=2)
    assert chain.verify_export(path, newer) == [
        "unreadable: line 2: a formula-like cell that the export would have escaped"
    ]


def test_an_export_after_pruning_chains_from_the_signed_anchor(tmp_path):
    before = events(2)
    anchor = (2, before[1]["hash"])
    lines = events(3, first=3, prev_hash=anchor[1])
    path, body = _jsonl(
        tmp_path, lines, [checkpoint(5, lines[2]["hash"], anchor=anchor)], anchor=anchor
    )

    assert chain.verify_export(path, body) == []
    # From the genesis instead of the anchor, the first line does not link.
    genesis = manifest(path, lines, [checkpoint(5, lines[2]["hash"], anchor=anchor)])
    assert chain.verify_export(path, genesis) == [
        "line 1: position 1: missing (the chain jumps here)"
    ]


def test_a_filtered_export_links_only_neighbours(tmp_path):
    all_lines = events(5)
    lines = [all_lines[1], all_lines[3], all_lines[4]]
    path, body = _jsonl(tmp_path, lines, [checkpoint(5, all_lines[4]["hash"])], contiguous=False)

    assert chain.verify_export(path, body) == []


def test_trusted_keys_replace_the_manifests_own(tmp_path):
    lines = events(2)
    path, body = _jsonl(tmp_path, lines)
    trusted = [chain.public_jwk(OTHER_KEY.public_key()), chain.public_jwk(KEY.public_key())]

    assert chain.verify_export(path, body, trusted_keys=trusted) == []
    assert chain.verify_export(path, body, trusted_keys=trusted[:1]) == [
        "manifest: signature invalid or key not trusted",
        "checkpoint at position 2: bad signature",
    ]


# --- The manifest ------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 4, None, "3"])
def test_an_unknown_format_version_is_the_only_problem_named(tmp_path, version):
    path, body = _jsonl(tmp_path, events(2), version=version)

    assert chain.verify_export(path, body) == [
        f"manifest: format version {version!r} is not supported by this verifier"
    ]


@pytest.mark.parametrize("member", ["key_id", "signature"])
def test_a_manifest_without_its_key_id_or_signature_is_refused(tmp_path, member):
    path, body = _jsonl(tmp_path, events(2))
    del body[member]

    assert chain.verify_export(path, body) == ["manifest: signature invalid or key not trusted"]


def test_a_manifest_signed_by_another_key_is_refused(tmp_path):
    lines = events(2)
    path, body = _jsonl(tmp_path, lines)
    other = manifest(path, lines, body["checkpoints"], key=OTHER_KEY)
    other["public_key"] = body["public_key"]

    assert chain.verify_export(path, other) == ["manifest: signature invalid or key not trusted"]


def test_a_badly_signed_checkpoint_and_a_line_that_differs_from_one(tmp_path):
    lines = events(3)
    forged = {**checkpoint(3, lines[2]["hash"]), "head_hash": "f" * 64}
    wrong = checkpoint(2, "e" * 64)
    path, body = _jsonl(tmp_path, lines, [forged, wrong])

    assert chain.verify_export(path, body) == [
        "checkpoint at position 3: bad signature",
        "line 2: position 2: not checkpointed",
    ]


# --- Lines ---------------------------------------------------------------------------


def test_a_changed_line_stops_the_walk_and_skips_the_count(tmp_path):
    lines = events(4)
    lines[1]["actor_id"] = "m-2"
    path, body = _jsonl(tmp_path, lines)

    assert chain.verify_export(path, body) == ["line 2: position 2: altered (hash mismatch)"]


def test_a_line_that_does_not_link_is_named(tmp_path):
    lines = events(3)
    lines[2:] = chained([event(3)], "a" * 64)
    path, body = _jsonl(tmp_path, lines)

    assert chain.verify_export(path, body) == [
        "line 3: position 3: does not link to the previous event"
    ]


def test_a_repeated_line_is_out_of_order(tmp_path):
    lines = events(3)
    path, body = _jsonl(tmp_path, [*lines[:2], lines[1], lines[2]])

    assert chain.verify_export(path, body) == [
        "line 3: position 2: out of order (follows position 2)"
    ]


def test_a_missing_line_is_named_by_the_count_in_a_filtered_export(tmp_path):
    lines = events(4)
    path, body = _jsonl(tmp_path, lines, contiguous=False)
    body_lines = [lines[0], lines[1], lines[3]]
    write_jsonl(path, body_lines)
    resigned = manifest(path, body_lines, body["checkpoints"], contiguous=False, count=4)

    assert chain.verify_export(path, resigned) == ["count: 3 lines, the manifest says 4"]


@pytest.mark.parametrize(
    ("first", "last"), [(2, 3), (1, 2), (None, 3)], ids=["first", "last", "none"]
)
def test_a_range_that_differs_from_the_manifest_is_named(tmp_path, first, last):
    lines = events(3)
    path = write_jsonl(tmp_path / "audit.jsonl", lines)
    body = manifest(
        path,
        lines,
        [checkpoint(3, lines[2]["hash"])],
        first_position=first,
        last_position=last,
    )

    assert chain.verify_export(path, body) == [
        "range: first or last position differs from the manifest"
    ]


def test_an_empty_export_verifies_with_no_range(tmp_path):
    path, body = _jsonl(tmp_path, [])

    assert (body["count"], body["first_position"], body["last_position"]) == (0, None, None)
    assert chain.verify_export(path, body) == []


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"position": 1}\n', "unreadable: line 2: not an audit event"),
        ("[1]\n", "unreadable: line 2: not an audit event"),
        ("{\n", "unreadable: Expecting property name enclosed in double quotes: line 2 column 1"),
    ],
)
def test_an_unreadable_jsonl_line_is_named(tmp_path, content, problem):
    lines = events(1)
    path = write_jsonl(tmp_path / "audit.jsonl", lines)
    path.write_text(path.read_text() + content)
    body = manifest(path, lines, [checkpoint(1, lines[0]["hash"])], count=2)

    assert chain.verify_export(path, body)[0].startswith(problem)
    assert len(chain.verify_export(path, body)) == 1


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda rows: [["Position", *rows[0][1:]], *rows[1:]], "unexpected header"),
        (lambda rows: [], "unexpected header"),
        (lambda rows: [rows[0], rows[1][:-1]], "line 2: expected 18 columns"),
        (lambda rows: [rows[0], [*rows[1], "x"]], "line 2: expected 18 columns"),
        (
            lambda rows: [rows[0], rows[1], ["'plain" if c == "r2" else c for c in rows[2]]],
            "line 3: a quote-prefixed cell that was not escaped by the export",
        ),
        (
            lambda rows: [rows[0], ["1x" if c == "1" else c for c in rows[1]]],
            "invalid literal for int() with base 10: '1x'",
        ),
    ],
    ids=["header", "empty", "short", "long", "quote", "position"],
)
def test_an_unreadable_csv_export_is_named(tmp_path, edit, problem):
    import csv
    import io

    lines = events(2)
    path = write_csv(tmp_path / "audit.csv", lines)
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(edit(rows))
    path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    body = manifest(path, lines, [checkpoint(2, lines[1]["hash"])], fmt="csv")

    assert chain.verify_export(path, body) == [
        f"unreadable: {'not an audit CSV export (' if problem == 'unexpected header' else ''}"
        f"{problem}{')' if problem == 'unexpected header' else ''}"
    ]


def test_csv_cells_read_back_as_the_hashed_values(tmp_path):
    lines = chained([event(1, source_ip=None, details={"a": ["é", 1]}), event(2)])
    path = write_csv(tmp_path / "audit.csv", lines)

    records = [values for _, values in chain.export_records(path, "csv")]

    assert [number for number, _ in chain.export_records(path, "csv")] == [2, 3]
    assert records == lines


def test_file_sha256_of_a_file_larger_than_one_block(tmp_path):
    import hashlib

    path = tmp_path / "big"
    data = bytes(range(256)) * 8193
    path.write_bytes(data)

    assert chain.file_sha256(path) == hashlib.sha256(data).hexdigest()


# --- Witnesses against an export ------------------------------------------------------


def test_every_witness_is_compared_and_each_own_chain_problem_is_named(tmp_path):
    lines = events(3)
    path, body = _jsonl(tmp_path, lines)
    good = [(1, checkpoint(2, lines[1]["hash"], kind="scheduled", created_at=EARLIER))]
    edited = [(4, {**checkpoint(1, lines[0]["hash"], created_at=EARLIER), "head_hash": "f" * 64})]

    assert chain.verify_export(path, body, witnesses={"w1": good, "w2": edited}) == [
        "line 4: position 1: a checkpoint here has an invalid signature or an untrusted key "
        f"[w2: checkpoint (export, position 1, created {EARLIER})]"
    ]


def test_a_matching_witness_does_not_hide_the_manifests_own_problems(tmp_path):
    lines = events(3)
    path, body = _jsonl(tmp_path, lines)
    witnessed = [(1, checkpoint(2, lines[1]["hash"], kind="scheduled", created_at=EARLIER))]
    forged = {**body, "file_sha256": "0" * 64}

    assert chain.verify_export(path, forged, witnesses={"w": witnessed}) == [
        "manifest: signature invalid or key not trusted",
        "file: SHA-256 differs from the manifest (the file was changed)",
    ]


def test_an_export_behind_a_witnessed_checkpoint_is_a_rollback(tmp_path):
    lines = events(3)
    path, body = _jsonl(tmp_path, lines)
    # Witnessed at position 4 no later than the export's checkpoint was signed: the
    # export comes from a database that lost position 4.
    newer = checkpoint(
        4, "d" * 64, kind="scheduled", created_at=body["checkpoints"][0]["created_at"]
    )

    assert chain.verify_export(path, body, witnesses={"w": [(7, newer)]}) == [
        "position 3: rolled back: the export's checkpoint is behind w line 7: "
        f"checkpoint (scheduled, position 4, created {newer['created_at']})"
    ]
    # Witnessed only after the export was made: nothing the export could have held.
    later = checkpoint(4, "d" * 64, kind="scheduled", created_at=LATER)
    assert chain.verify_export(path, body, witnesses={"w": [(7, later)]}) == []


def test_a_witnessed_head_at_position_1_that_differs_is_named(tmp_path):
    lines = events(1)
    path, body = _jsonl(tmp_path, lines)
    witnessed = checkpoint(1, "c" * 64, kind="scheduled", created_at=EARLIER)
    where = f"w: checkpoint (scheduled, position 1, created {EARLIER})"

    assert chain.verify_export(path, body, witnesses={"w": [(1, witnessed)]}) == [
        f"position 1: differs from a witnessed checkpoint [{where}]",
        f"line 1: position 1: differs from a witnessed checkpoint [{where}]",
    ]


def test_a_witnessed_anchor_that_differs_is_named(tmp_path):
    before = events(2)
    anchor = (2, before[1]["hash"])
    lines = events(1, first=3, prev_hash=anchor[1])
    own = checkpoint(3, lines[0]["hash"], anchor=anchor)
    path, body = _jsonl(tmp_path, lines, [own], anchor=anchor)
    witnessed = checkpoint(2, "b" * 64, kind="scheduled", created_at=EARLIER)

    assert chain.verify_export(path, body, witnesses={"w": [(1, witnessed)]}) == [
        "position 2: differs from a witnessed checkpoint "
        f"[w: checkpoint (scheduled, position 2, created {EARLIER})]"
    ]


def test_the_first_witness_to_claim_a_position_is_the_one_named(tmp_path):
    lines = events(2)
    path, body = _jsonl(tmp_path, lines, [])
    first = checkpoint(1, "c" * 64, kind="scheduled", created_at=EARLIER)
    second = checkpoint(1, "d" * 64, kind="periodic", created_at=EARLIER)

    problems = chain.verify_export(path, body, witnesses={"a": [(1, first)], "b": [(1, second)]})

    assert problems == [
        "line 1: position 1: differs from a witnessed checkpoint "
        f"[a: checkpoint (scheduled, position 1, created {EARLIER})]"
    ]


# --- The walks themselves ---------------------------------------------------------------


def test_problem_text_names_only_what_it_knows():
    assert str(chain.Problem(None, "gone")) == "gone"
    assert str(chain.Problem(0, "gone")) == "position 0: gone"
    assert str(chain.Problem(3, "gone", 0, "")) == "line 0: position 3: gone"
    assert str(chain.Problem(3, "gone", 7, "cp")) == "line 7: position 3: gone [cp]"


def test_chain_walker_names_each_break():
    lines = events(4)

    def walk(contiguous, feed):
        walker = chain.ChainWalker(
            anchor_position=0, anchor_hash=chain.GENESIS_HASH, contiguous=contiguous
        )
        found = []
        for number, line in feed:
            found.append(walker.feed(line, line["prev_hash"], line["hash"], line=number))
        return found, walker

    found, walker = walk(True, enumerate(lines, start=1))
    assert found == [None] * 4
    assert (walker.position, walker.hash) == (4, lines[3]["hash"])
    assert walk(True, [(1, lines[0]), (2, lines[2])])[0] == [
        None,
        chain.Problem(2, "missing (the chain jumps here)", 2),
    ]
    assert walk(False, [(1, lines[0]), (2, lines[2])])[0] == [None, None]
    assert walk(False, [(1, lines[1]), (2, lines[1])])[0] == [
        None,
        chain.Problem(2, "out of order (follows position 2)", 2),
    ]
    assert walk(True, [(9, {**lines[0], "position": "1"})])[0] == [
        chain.Problem("1", "out of order (follows position 0)", 9)
    ]
    assert walk(False, [(1, lines[0]), (2, {**lines[1], "prev_hash": "0" * 64})])[0] == [
        None,
        chain.Problem(2, "does not link to the previous event", 2),
    ]
    assert walk(True, [(5, {**lines[0], "hash": "1" * 64})])[0] == [
        chain.Problem(1, "altered (hash mismatch)", 5)
    ]


def test_checkpoint_chain_refuses_an_older_key_after_a_newer_one():
    first = checkpoint(1, "a" * 64, key=KEY)
    second = following(first, 2, "b" * 64, key=OTHER_KEY)
    third = following(second, 3, "c" * 64, key=KEY)
    held = chain.CheckpointChain(_keys(OTHER_KEY, KEY))  # newest first

    assert held.feed(first) is None
    assert held.feed(second) is None
    assert held.feed(third, line=3) == chain.Problem(
        3,
        f"signed by key {chain.public_jwk(KEY.public_key())['kid']} after a newer key took over",
        3,
        f"checkpoint (export, position 3, created {first['created_at']})",
    )
    assert (held.count, held.position, held.newest) == (2, 2, second)


def test_checkpoint_chain_collects_claims_and_names_disagreement():
    first = checkpoint(2, "a" * 64, anchor=(1, "9" * 64), created_at=EARLIER)
    second = following(first, 2, "b" * 64, anchor=(1, "9" * 64))
    held = chain.CheckpointChain(_keys(KEY), source="db: ")

    assert (held.digest, held.chained, held.key_rank, held.count) == (
        chain.GENESIS_CHECKPOINT,
        False,
        None,
        0,
    )
    assert (held.position, held.anchor_position, held.anchor_hash) == (0, 0, chain.GENESIS_HASH)
    assert held.feed(first) is None
    assert held.claims == {
        2: ("a" * 64, f"db: checkpoint (export, position 2, created {EARLIER})"),
        1: ("9" * 64, f"db: checkpoint (export, position 2, created {EARLIER})"),
    }
    assert held.feed(second) == chain.Problem(
        2,
        f"checkpoints disagree here (also db: checkpoint (export, position 2, created {EARLIER}))",
        None,
        f"db: checkpoint (export, position 2, created {second['created_at']})",
    )


def test_an_unchained_checkpoint_after_chained_ones_is_named():
    first = checkpoint(1, "a" * 64)
    legacy = checkpoint(2, "b" * 64, prev=None)
    held = chain.CheckpointChain(_keys(KEY))

    assert held.feed(first) is None
    assert held.feed(legacy) == chain.Problem(
        2,
        "an unchained checkpoint follows chained ones",
        None,
        f"checkpoint (export, position 2, created {legacy['created_at']})",
    )


# --- A witness against the database's checkpoints ---------------------------------------


def _held(*checkpoints):
    held = chain.CheckpointChain(_keys(KEY))
    for entry in checkpoints:
        assert held.feed(entry) is None
    return held


def test_a_database_with_no_checkpoint_left_is_rolled_back():
    witnessed = checkpoint(2, "a" * 64, created_at=EARLIER)

    assert chain.witness_compare(_held(), [(3, witnessed)], _keys(KEY)) == chain.Problem(
        2,
        "rolled back: the database's newest is no checkpoint at all, older than the witness's "
        "newest",
        None,
        f"witness line 3: checkpoint (export, position 2, created {EARLIER})",
    )


def test_a_newest_checkpoint_of_the_same_time_that_differs_is_a_rewrite_not_a_rollback():
    first = checkpoint(1, "a" * 64, created_at=EARLIER)
    witnessed = following(first, 2, "b" * 64, created_at=LATER)
    rewritten = following(first, 2, "c" * 64, created_at=LATER)

    assert chain.witness_compare(
        _held(first, rewritten), [(1, first), (2, witnessed)], _keys(KEY), name="w"
    ) == chain.Problem(
        2,
        "a witnessed checkpoint is missing from the database (deleted or rewritten)",
        None,
        f"w line 2: checkpoint (export, position 2, created {LATER})",
    )


def test_an_empty_witness_and_a_matching_one_say_nothing():
    first = checkpoint(1, "a" * 64, created_at=EARLIER)

    assert chain.witness_compare(_held(first), [], _keys(KEY)) is None
    assert chain.witness_compare(_held(first), [(1, first)], _keys(KEY)) is None


def test_witness_entries_skip_blank_lines_and_refuse_other_objects(tmp_path):
    first = checkpoint(1, "a" * 64)
    path = tmp_path / "w.jsonl"
    path.write_text(f"\n{json.dumps(first)}\n  \n{json.dumps(first)}\n", encoding="utf-8")

    assert chain.witness_entries(path) == [(2, first), (4, first)]
    path.write_text(json.dumps(first) + "\n" + json.dumps([first]) + "\n")
    with pytest.raises(ValueError) as refused:
        chain.witness_entries(path)
    assert str(refused.value) == f"{path} line 2: not a witnessed checkpoint"


def test_a_witness_of_checkpoints_from_before_chaining_is_read(tmp_path):
    legacy = checkpoint(1, "a" * 64, prev=None)  # exactly the fields it signed, no link
    path = tmp_path / "w.jsonl"
    path.write_text(json.dumps(legacy) + "\n", encoding="utf-8")

    assert chain.witness_entries(path) == [(1, legacy)]


def test_a_witness_that_was_itself_edited_is_named_by_its_line():
    first = checkpoint(1, "a" * 64, created_at=EARLIER)
    edited = {**following(first, 2, "b" * 64), "position": 3}

    witnessed, problem = chain.witness_chain([(1, first), (5, edited)], _keys(KEY))

    assert witnessed.count == 1
    assert problem == chain.Problem(
        3,
        "a checkpoint here has an invalid signature or an untrusted key",
        5,
        f"witness: checkpoint (export, position 3, created {edited['created_at']})",
    )
