"""The benchmark's audit check: tokens received against token.issued events."""

from __future__ import annotations

import sqlite3

import pytest
from django.db import connection

from audit.models import AuditEvent
from bench.audit_check import audit_compare, audited_request_ids


def test_compare_counts_lost_extra_and_duplicates():
    result = audit_compare(
        received=["r-1", "r-2", "r-3"], audited=["r-2", "r-3", "r-3", "r-4"], connections=4
    )

    assert result.as_dict() == {
        "received": 3,
        "audited": 4,
        "lost": 1,
        "extra": 1,
        "duplicates": 1,
        "allowed_extra": 4,
        "ok": False,
    }


def test_compare_allows_in_flight_extras_up_to_the_connections():
    received = [f"r-{n}" for n in range(10)]
    in_flight = ["r-10", "r-11"]

    assert audit_compare(received=received, audited=received + in_flight, connections=2).ok
    assert not audit_compare(received=received, audited=received + in_flight, connections=1).ok


def test_compare_never_allows_a_lost_token():
    result = audit_compare(received=["r-1", "r-2"], audited=["r-1"], connections=64)

    assert (result.lost, result.ok) == (1, False)


def test_prefix_must_be_plain_so_like_needs_no_escaping(tmp_path):
    with pytest.raises(ValueError, match="prefixes"):
        audited_request_ids(database_url=f"sqlite:///{tmp_path / 'x.db'}", prefix="b1_%")


def test_reads_token_issued_ids_with_the_prefix_from_sqlite(tmp_path):
    path = tmp_path / "portal.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE audit_auditevent (event_type TEXT, request_id TEXT)")
        conn.executemany(
            "INSERT INTO audit_auditevent VALUES (?, ?)",
            [
                ("token.issued", "b1-portal-c1-m1-1"),
                ("token.issued", "b1-portal-c1-m1-2"),
                ("token.denied", "b1-portal-c1-m1-3"),
                ("token.issued", "b1-portal-c16-m1-1"),
                ("token.issued", "b2-portal-c1-m1-1"),
            ],
        )

    ids = audited_request_ids(database_url=f"sqlite:///{path}", prefix="b1-portal-c1-m")

    assert sorted(ids) == ["b1-portal-c1-m1-1", "b1-portal-c1-m1-2"]


@pytest.mark.postgres
def test_reads_token_issued_ids_from_postgres(transactional_db):
    for event_type, request_id in [
        ("token.issued", "b9-portal-c4-m1-1"),
        ("token.issued", "b9-portal-c4-m2-7"),
        ("token.denied", "b9-portal-c4-m1-2"),
        ("token.issued", "b9-portal-c4-w1-1"),
    ]:
        AuditEvent.objects.create(
            event_type=event_type, actor_kind="machine", request_id=request_id
        )
    s = connection.settings_dict
    host = f"{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}"
    url = f"postgres://{s['USER']}:{s['PASSWORD']}@{host}/{s['NAME']}"

    ids = audited_request_ids(database_url=url, prefix="b9-portal-c4-m")

    assert sorted(ids) == ["b9-portal-c4-m1-1", "b9-portal-c4-m2-7"]
