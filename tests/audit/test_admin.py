"""The console shows the audit trail to auditors and lets nobody change it."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from audit.services import audit_checkpoint_create, audit_seal_pending
from tests.fixtures.core import console_login

EVENTS = "/console/audit/auditevent/"


@pytest.fixture
def events(make_events):
    make_events(2)
    audit_seal_pending()
    return make_events(1)  # the last stays unsealed


def test_auditor_sees_events_with_unsealed_ones_marked(events, client, auditor):
    console_login(client, auditor)

    response = client.get(EVENTS)

    assert response.status_code == 200
    body = response.content.decode()
    assert "unsealed" in body
    assert "token.issued" in body


def test_auditor_sees_checkpoints(events, client, auditor):
    audit_checkpoint_create()
    console_login(client, auditor)

    assert client.get("/console/audit/auditcheckpoint/").status_code == 200


def test_list_filters_by_type_outcome_and_actor_kind(events, client, auditor):
    console_login(client, auditor)

    response = client.get(EVENTS, {"outcome": "failure"})

    assert response.status_code == 200
    assert response.context["cl"].result_count == 0


@pytest.mark.parametrize("who", ["auditor", "admin_user"])
def test_nobody_can_add_change_or_delete(events, client, request, who):
    console_login(client, request.getfixturevalue(who))
    event = events[0]
    before = list(AuditEvent.objects.order_by("id").values())

    assert client.get(f"{EVENTS}add/").status_code == 403
    assert client.post(f"{EVENTS}{event.pk}/change/", {"reason": "x"}).status_code == 403
    assert client.post(f"{EVENTS}{event.pk}/delete/", {"post": "yes"}).status_code == 403

    # Nothing changed; each refusal was recorded, and nothing else.
    after = list(AuditEvent.objects.order_by("id").values())
    assert after[: len(before)] == before
    assert [
        (e["event_type"], e["outcome"], e["reason"], e["details"]) for e in after[len(before) :]
    ] == [
        (
            "console.access_denied",
            "failure",
            "forbidden",
            {"method": "GET", "path": f"{EVENTS}add/"},
        ),
        (
            "console.access_denied",
            "failure",
            "forbidden",
            {"method": "POST", "path": f"{EVENTS}{event.pk}/change/"},
        ),
        (
            "console.access_denied",
            "failure",
            "forbidden",
            {"method": "POST", "path": f"{EVENTS}{event.pk}/delete/"},
        ),
    ]


def test_staff_without_an_audit_role_sees_nothing(events, client, bystander):
    console_login(client, bystander)

    response = client.get(EVENTS)

    # No role, no console: the staff flag lets nobody in.
    assert response.status_code == 302
    assert response["Location"] == f"/console/login/?next={EVENTS}"
