"""The console's audit log: filters, keyset pages, chain state, and the signed export."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from audit.choices import ActorKind, EventType, Outcome
from audit.context import Actor, RequestContext, Target
from audit.models import AuditEvent
from audit.selectors import AuditFilters, AuditLogQuery, audit_log_page
from audit.services import audit_record, audit_seal_pending
from tests.fixtures.core import console_login

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def _event(n: int, *, at: datetime, machine: str = "m-1", outcome=Outcome.SUCCESS, ip="192.0.2.1"):
    with time_machine.travel(at, tick=False):
        return audit_record(
            event_type=EventType.TOKEN_ISSUED
            if outcome == Outcome.SUCCESS
            else EventType.TOKEN_DENIED,
            actor=Actor(kind=ActorKind.MACHINE, id=machine, display=f"machine {machine}"),
            target=Target(kind="machine", id=machine, display=f"machine {machine}"),
            outcome=outcome,
            reason="" if outcome == Outcome.SUCCESS else "invalid_scope",
            context=RequestContext(source_ip=ip, request_id=f"req-{n}"),
        )


@pytest.fixture
def events(db):
    made = [_event(n, at=T0 + timedelta(minutes=n)) for n in range(6)]
    made.append(_event(6, at=T0 + timedelta(minutes=6), outcome=Outcome.FAILURE, ip="198.51.100.7"))
    made.append(_event(7, at=T0 + timedelta(minutes=7), machine="m-2"))
    audit_seal_pending()
    made.append(_event(8, at=T0 + timedelta(minutes=8), machine="m-2"))  # left unsealed
    return made


def _role(name: str, group: str | None):
    user = get_user_model().objects.create_user(
        username=name, password="correct horse battery", is_staff=True
    )
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def auditor_client(db):
    client = Client(enforce_csrf_checks=True)
    console_login(client, _role("aud", "auditors"))
    return client


def _ids(page) -> list[int]:
    return [event.pk for event in page]


def test_keyset_pages_cover_every_event_once_newest_first(events):
    seen, cursor = [], None
    while True:
        page = audit_log_page(query=AuditLogQuery(), before=cursor, size=4)
        seen += _ids(page.events)
        cursor = page.cursor
        if cursor is None:
            break

    assert seen == [event.pk for event in reversed(events)]


@pytest.mark.parametrize(
    ("filters", "search", "expected"),
    [
        (AuditFilters(outcome="failure"), "", [6]),
        (AuditFilters(machine="m-2"), "", [8, 7]),
        (AuditFilters(source_ip="198.51.100.7"), "", [6]),
        (
            AuditFilters(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4)),
            "",
            [3, 2],
        ),
        (AuditFilters(event_types=("token.denied",)), "", [6]),
        (AuditFilters(), "req-5", [5]),
        (AuditFilters(), "machine m-2", [8, 7]),
    ],
)
def test_filters(events, filters, search, expected):
    page = audit_log_page(query=AuditLogQuery(filters=filters, search=search), before=None, size=50)

    assert _ids(page.events) == [events[n].pk for n in expected]
    assert (page.cursor, page.scanned_to) == (None, None)


def test_the_page_shows_outcome_seconds_utc_and_chain_state(auditor_client, events):
    response = auditor_client.get("/console/audit/", {"type": "token.*", "machine": "m-2"})

    body = response.content.decode()
    assert response.status_code == 200
    assert "2026-11-20 08:08:00 UTC" in body and "2026-11-20 08:07:00 UTC" in body
    assert (
        '<div class="breadcrumbs"><a href="/console/">Home</a> '
        "\N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK} Audit log</div>"
    ) in body
    assert body.count('<span class="badge unsealed">unsealed</span>') == 1
    assert f"#{events[7].seal.position}</span>" in body
    assert [e.pk for e in response.context["events"]] == [events[8].pk, events[7].pk]


def test_a_failure_row_is_marked(auditor_client, events):
    response = auditor_client.get("/console/audit/", {"outcome": "failure"})

    body = response.content.decode()
    assert '<tr class="failure">' in body
    assert '<span class="badge failure">failure</span>' in body
    assert "invalid_scope" in body


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"since": "2026-11-20T10:00", "until": "2026-11-20T09:00"},
        {"type": "token.nope"},
        {"outcome": "maybe"},
        {"source_ip": "999.1.1.1"},
        {"q": "a\x00b"},
        {"actor": "x" * 500},
        {"before": "not-a-cursor"},
        {"before": "2026-11-20T08:00:00_99999999999999999999999"},
    ],
)
def test_bad_filters_answer_with_errors_never_500(auditor_client, events, params):
    response = auditor_client.get("/console/audit/", params)

    assert response.status_code == 200
    if "before" not in params:
        assert response.context["form"].errors
        assert response.context["events"] == []


def test_export_is_a_csrf_checked_post_of_the_signed_zip(auditor_client, events):
    page = auditor_client.get("/console/audit/", {"outcome": "failure"})
    token = page.cookies["csrftoken"].value if "csrftoken" in page.cookies else None
    form = {"format": "jsonl", "outcome": "failure", "since": "", "until": "", "type": ""}

    refused = auditor_client.post("/console/audit/export/", form)
    get = auditor_client.get("/console/audit/export/")
    before = AuditEvent.objects.filter(event_type="audit.exported").count()
    response = auditor_client.post(
        "/console/audit/export/", {**form, "csrfmiddlewaretoken": token or _csrf(auditor_client)}
    )

    assert (refused.status_code, get.status_code, response.status_code) == (403, 405, 200)
    assert response["Content-Type"] == "application/zip"
    assert "no-store" in response["Cache-Control"]
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    names = sorted(archive.namelist())
    assert names[0].endswith(".jsonl") and names[1].endswith(".jsonl.manifest.json")
    lines = archive.read(names[0]).decode().splitlines()
    manifest = json.loads(archive.read(names[1]))
    assert [json.loads(line)["request_id"] for line in lines] == ["req-6"]
    assert (manifest["count"], manifest["filters"]["outcome"]) == (1, "failure")
    assert AuditEvent.objects.filter(event_type="audit.exported").count() == before + 1


def _csrf(client) -> str:
    client.get("/console/audit/")
    return client.cookies["csrftoken"].value


def test_only_console_roles_read_or_export(client, events):
    console_login(client, _role("staff", None))

    # Without a role the console is not open at all (not even with the staff flag): to sign-in.
    read = client.get("/console/audit/")
    export = client.post("/console/audit/export/", {"format": "jsonl"})
    assert (read.status_code, read["Location"]) == (302, "/console/login/?next=/console/audit/")
    assert (export.status_code, export["Location"]) == (
        302,
        "/console/login/?next=/console/audit/export/",
    )
    assert not AuditEvent.objects.filter(event_type="audit.exported").exists()


def _machine_side_events():
    """m-3 as the actor only, as the target only, and as both; m-4 with successes only."""
    admin = Actor(kind=ActorKind.USER, id="1", display="admin")
    m3 = Actor(kind=ActorKind.MACHINE, id="m-3", display="machine m-3")

    def record(minute, *, event_type, actor, target, outcome=Outcome.SUCCESS):
        with time_machine.travel(T0 + timedelta(minutes=minute), tick=False):
            return audit_record(
                event_type=event_type,
                actor=actor,
                target=target,
                outcome=outcome,
                reason="" if outcome == Outcome.SUCCESS else "forbidden",
                context=RequestContext(request_id=f"side-{minute}"),
            )

    return {
        "revoked": record(
            20,
            event_type=EventType.TOKEN_REVOKED,
            actor=m3,
            target=Target(kind="token", id="jti-1"),
            outcome=Outcome.FAILURE,
        ),
        "disabled": record(
            21,
            event_type=EventType.MACHINE_DISABLED,
            actor=admin,
            target=Target(kind="machine", id="m-3", display="machine m-3"),
            outcome=Outcome.FAILURE,
        ),
        "denied": _event(22, at=T0 + timedelta(minutes=22), machine="m-3", outcome=Outcome.FAILURE),
        "issued": _event(23, at=T0 + timedelta(minutes=23), machine="m-3"),
        "other": _event(24, at=T0 + timedelta(minutes=24), machine="m-4"),
        # A user whose id is "m-3" is not the machine m-3.
        "namesake": record(
            25,
            event_type=EventType.MACHINE_UPDATED,
            actor=Actor(kind=ActorKind.USER, id="m-3", display="m-3"),
            target=Target(kind="machine", id="m-4", display="machine m-4"),
        ),
    }


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (AuditFilters(machine="m-3"), ["issued", "denied", "disabled", "revoked"]),
        (AuditFilters(machine="m-3", outcome="failure"), ["denied", "disabled", "revoked"]),
        (AuditFilters(machine="m-3", outcome="success"), ["issued"]),
        (AuditFilters(machine="m-4", outcome="failure"), []),
        (AuditFilters(machine="m-4"), ["namesake", "other"]),
        (AuditFilters(machine="m-3", event_types=("machine.disabled",)), ["disabled"]),
        (
            AuditFilters(
                machine="m-3", since=T0 + timedelta(minutes=21), until=T0 + timedelta(minutes=23)
            ),
            ["denied", "disabled"],
        ),
        (AuditFilters(actor="machine:m-3", outcome="failure"), ["denied", "revoked"]),
        (AuditFilters(actor="m-3", outcome="success"), ["namesake", "issued"]),
        (AuditFilters(machine="m-9"), []),
    ],
)
def test_a_machine_is_its_requests_and_changes_made_to_it(db, filters, expected):
    made = _machine_side_events()

    page = audit_log_page(query=AuditLogQuery(filters=filters), before=None, size=50)

    assert _ids(page.events) == [made[name].pk for name in expected]
    assert (page.cursor, page.scanned_to) == (None, None)


def test_a_machines_pages_cover_both_sides_once_newest_first(db):
    made = _machine_side_events()
    query = AuditLogQuery(filters=AuditFilters(machine="m-3"))

    first = audit_log_page(query=query, before=None, size=3)
    second = audit_log_page(query=query, before=first.cursor, size=3)

    assert _ids(first.events) == [made[n].pk for n in ("issued", "denied", "disabled")]
    assert first.cursor == (made["disabled"].occurred_at, made["disabled"].pk)
    assert (_ids(second.events), second.cursor) == ([made["revoked"].pk], None)


def test_a_search_reads_a_bounded_number_of_events_per_page(events):
    # Events 8 (newest) to 0; 0 to 6 are m-1's; at most three read per page.
    query = AuditLogQuery(search="machine m-1")
    pages, cursor = [], None
    while True:
        page = audit_log_page(query=query, before=cursor, size=2, scan_limit=3)
        pages.append((_ids(page.events), page.scanned_to))
        cursor = page.cursor
        if cursor is None:
            break

    ids = [event.pk for event in events]
    assert pages == [
        ([ids[6]], events[6].occurred_at),  # 8, 7, 6 read (6 is the bound), one match
        ([ids[5], ids[4]], None),  # below 6: two matches fill the page before the bound
        ([ids[3], ids[2]], None),
        ([ids[1], ids[0]], None),  # fewer than three left: read to the end, no bound
    ]


def test_a_bounded_search_stops_at_the_bound_and_continues_below_it(events):
    query = AuditLogQuery(search="machine m-2")

    first = audit_log_page(query=query, before=None, size=50, scan_limit=5)
    second = audit_log_page(query=query, before=first.cursor, size=50, scan_limit=5)

    # 8 to 4 read; 3 to 0 are four, fewer than the bound: the next page reads them all.
    assert _ids(first.events) == [events[8].pk, events[7].pk]
    assert first.scanned_to == events[4].occurred_at
    assert first.cursor == (events[4].occurred_at, events[4].pk)
    assert (_ids(second.events), second.cursor, second.scanned_to) == ([], None, None)


def test_the_page_says_where_a_bounded_search_stopped(auditor_client, events, monkeypatch):
    monkeypatch.setattr("identity_portal.console.views.AUDIT_LOG_SCAN_LIMIT", 3)

    # Until the fixture's last event: the auditor's sign-in events are newer.
    first = auditor_client.get(
        "/console/audit/", {"source_ip": "198.51.100.7", "until": "2026-11-20T09:00:00"}
    )
    older = auditor_client.get("/console/audit/?" + first.context["next_query"])
    # Three events in the range: the bound is not reached, the page reads them all.
    unbounded = auditor_client.get(
        "/console/audit/",
        {
            "source_ip": "198.51.100.7",
            "since": "2026-11-20T08:06:00",
            "until": "2026-11-20T09:00:00",
        },
    )

    body = first.content.decode()
    assert [e.pk for e in first.context["events"]] == [events[6].pk]
    assert (
        '<p class="notice" id="scan-note">No further match in the 3 events read for this page, '
        "back to 2026-11-20 08:06:00 UTC: a search or an address reads at most that many events "
        "per page."
    ) in body
    assert "Search older events →</a>" in body
    assert first.context["next_query"] == (
        "source_ip=198.51.100.7&until=2026-11-20T09%3A00%3A00"
        f"&before={quote(events[6].occurred_at.isoformat())}_{events[6].pk}"
    )
    assert older.context["events"] == [] and older.context["scanned_to"] is not None
    assert (
        'id="scan-note">No match in the 3 events read for this page, back to 2026-11-20 08:03:00'
        in older.content.decode()
    )
    assert "No match in the events read." in older.content.decode()
    assert [e.pk for e in unbounded.context["events"]] == [events[6].pk]
    assert 'id="scan-note"' not in unbounded.content.decode()


def test_the_api_filters_by_source_address_too(auditor_client, events):
    response = auditor_client.get("/api/v1/audit/events", {"source_ip": "198.51.100.7"})

    assert response.status_code == 200
    assert [row["request_id"] for row in response.json()["results"]] == ["req-6"]


@pytest.mark.parametrize(
    "typed",
    [
        "2026-11-20 08:02:00 UTC",
        "2026-11-20 08:02:00",
        "2026-11-20T08:02:00Z",
        "2026-11-20T08:02",
        " 2026-11-20   08:02 UTC ",
    ],
)
def test_a_time_is_typed_and_shown_in_utc_as_the_log_shows_it(auditor_client, events, typed):
    response = auditor_client.get(
        "/console/audit/", {"since": typed, "until": "2026-11-20 08:04:00 UTC"}
    )

    body = response.content.decode()
    assert [e.pk for e in response.context["events"]] == [events[3].pk, events[2].pk]
    assert 'name="since" value="2026-11-20 08:02:00 UTC"' in body
    assert 'placeholder="YYYY-MM-DD HH:MM:SS UTC"' in body
    assert 'type="datetime-local"' not in body


@pytest.mark.parametrize(
    "typed",
    ["11/20/2026 08:02", "2026-11-20 08:02:00 CET", "2026-11-20 08:02:00+01:00", "2026-13-01"],
)
def test_a_time_that_is_not_utc_or_not_a_time_is_refused(auditor_client, events, typed):
    response = auditor_client.get("/console/audit/", {"since": typed})

    assert response.status_code == 200
    assert response.context["form"].errors == {
        "since": ["Enter a time as YYYY-MM-DD HH:MM:SS (UTC)."]
    }
    assert response.context["events"] == []
    assert f'name="since" value="{typed}"' in response.content.decode()
