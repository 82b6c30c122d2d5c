"""The console's audit log: filters, keyset pages, chain state, and the signed export."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta

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
        page, cursor = audit_log_page(query=AuditLogQuery(), before=cursor, size=4)
        seen += _ids(page)
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
    page, _ = audit_log_page(
        query=AuditLogQuery(filters=filters, search=search), before=None, size=50
    )

    assert _ids(page) == [events[n].pk for n in expected]


def test_the_page_shows_outcome_seconds_utc_and_chain_state(auditor_client, events):
    response = auditor_client.get("/console/audit/", {"type": "token.*", "machine": "m-2"})

    body = response.content.decode()
    assert response.status_code == 200
    assert "2026-11-20 08:08:00 UTC" in body and "2026-11-20 08:07:00 UTC" in body
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


def test_a_search_without_a_start_looks_back_a_day(auditor_client, events):
    with time_machine.travel(T0 + timedelta(days=8), tick=False):
        recent = _event(9, at=T0 + timedelta(days=8), ip="198.51.100.7")
        windowed = auditor_client.get("/console/audit/", {"source_ip": "198.51.100.7"})
        ranged = auditor_client.get(
            "/console/audit/", {"source_ip": "198.51.100.7", "since": "2026-11-01T00:00:00"}
        )

    assert [e.pk for e in windowed.context["events"]] == [recent.pk]
    assert "2026-11-27 08:00:00 UTC (24 hours)" in windowed.content.decode()
    assert [e.pk for e in ranged.context["events"]] == [recent.pk, events[6].pk]


def test_the_api_filters_by_source_address_too(auditor_client, events):
    response = auditor_client.get("/api/v1/audit/events", {"source_ip": "198.51.100.7"})

    assert response.status_code == 200
    assert [row["request_id"] for row in response.json()["results"]] == ["req-6"]
