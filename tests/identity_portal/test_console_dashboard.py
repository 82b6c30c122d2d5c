"""The console's dashboard: its numbers come from the hourly counts the sealer keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from audit.choices import ActorKind, EventType, Outcome
from audit.context import Actor, RequestContext, Target
from audit.models import AuditHourlyCount, AuditHourlyMachineCount
from audit.services import audit_checkpoint_create, audit_record, audit_seal_pending
from clients.models import ClientSecret, Machine
from clients.selectors import secrets_expiring
from clients.services import machine_disable, machine_register
from identity_portal.console.dashboard import dashboard_get
from tests.audit.conftest import tamper
from tests.fixtures.core import console_login

NOW = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)


def _token_event(client_id: str, *, outcome: str = Outcome.SUCCESS, reason: str = ""):
    return audit_record(
        event_type=EventType.TOKEN_ISSUED if outcome == Outcome.SUCCESS else EventType.TOKEN_DENIED,
        actor=Actor(kind=ActorKind.MACHINE, id=client_id, display=client_id),
        target=Target(kind="machine", id=client_id, display=client_id),
        outcome=outcome,
        reason=reason,
        context=RequestContext(source_ip="192.0.2.9"),
    )


def _user(name: str, group: str | None):
    user = get_user_model().objects.create_user(
        username=name, password="correct horse battery", is_staff=True
    )
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def machines(db, cli_actor, scope_read, audience_api):
    made = [
        machine_register(actor=cli_actor, name=name, scopes=["read"], audiences=[audience_api.uri])[
            0
        ]
        for name in ("alpha", "beta", "gamma")
    ]
    machine_disable(actor=cli_actor, machine=made[2])
    return made


def test_the_sealer_counts_each_event_once_per_hour_type_and_machine(machines):
    alpha, beta, _ = machines
    with time_machine.travel(NOW - timedelta(hours=2), tick=False):
        _token_event(alpha.client_id)
        _token_event(alpha.client_id)
        audit_seal_pending()
    with time_machine.travel(NOW, tick=False):
        _token_event(beta.client_id, outcome=Outcome.FAILURE, reason="invalid_scope")
        audit_seal_pending()
        audit_seal_pending()  # nothing left: nothing counted twice

    hour = (NOW - timedelta(hours=2)).replace(minute=0)
    this_hour = NOW.replace(minute=0)
    assert set(
        AuditHourlyCount.objects.filter(event_type__startswith="token.").values_list(
            "hour", "event_type", "outcome", "reason", "count"
        )
    ) == {
        (hour, "token.issued", "success", "", 2),
        (this_hour, "token.denied", "failure", "invalid_scope", 1),
    }
    assert set(
        AuditHourlyMachineCount.objects.values_list("hour", "machine", "outcome", "count")
    ) == {(hour, alpha.client_id, "success", 2), (this_hour, beta.client_id, "failure", 1)}


def test_dashboard_numbers(machines, signing_key):
    alpha, beta, _ = machines
    with time_machine.travel(NOW - timedelta(days=3), tick=False):
        _token_event(alpha.client_id)
        audit_seal_pending()
    with time_machine.travel(NOW - timedelta(hours=1), tick=False):
        for _ in range(3):
            _token_event(alpha.client_id)
        _token_event(beta.client_id)
        _token_event(beta.client_id, outcome=Outcome.FAILURE, reason="invalid_target")
        audit_seal_pending()
        audit_checkpoint_create()

    with time_machine.travel(NOW, tick=False):
        board = dashboard_get()

    assert board.machines == {"enabled": 2, "disabled": 1}
    assert (board.hourly.issued, board.hourly.refused) == (4, 1)
    assert (board.daily.issued, board.daily.refused) == (5, 1)
    assert len(board.hourly.bars) == 24 and len(board.daily.bars) == 30
    assert board.hourly.bars[-2].title == "2026-11-20 11:00 UTC: 4 issued, 1 refused"
    assert [(row["name"], row["total"], row["failures"]) for row in board.top_machines] == [
        ("alpha", 3, 0),
        ("beta", 2, 1),
    ]
    assert [(r["event_type"], r["reason"], r["total"]) for r in board.top_failures] == [
        ("token.denied", "invalid_target", 1)
    ]
    assert board.keys["states"][1] == ("Active", 1)
    assert board.chain.verifies and board.chain.unsealed == 0
    assert board.chain.checkpoint["position"] == board.chain.head_position


def test_the_chain_state_notices_a_rewritten_head(machines, signing_key):
    _token_event(machines[0].client_id)
    audit_seal_pending()
    audit_checkpoint_create()
    position = dashboard_get().chain.head_position

    tamper("UPDATE audit_auditseal SET hash = %s WHERE position = %s", ["0" * 64, position])

    chain = dashboard_get().chain
    assert (chain.signature_valid, chain.links_to_previous, chain.head_matches) == (
        True,
        True,
        False,
    )
    assert not chain.verifies


def test_expiring_secrets_count_only_the_newest_usable_one(machines, cli_actor):
    alpha, beta, _ = machines
    with time_machine.travel(NOW, tick=False):
        ClientSecret.objects.filter(machine=alpha).update(expires_at=NOW + timedelta(days=3))
        ClientSecret.objects.filter(machine=beta).update(expires_at=NOW + timedelta(days=20))
        found = secrets_expiring()

    assert [(row.machine.name, row.expires_at) for row in found] == [
        ("alpha", NOW + timedelta(days=3))
    ]


def test_unused_machines_and_their_count(machines):
    alpha, beta, _ = machines
    Machine.objects.filter(pk=alpha.pk).update(last_used_at=NOW - timedelta(days=31))
    Machine.objects.filter(pk=beta.pk).update(last_used_at=NOW - timedelta(days=2))

    with time_machine.travel(NOW, tick=False):
        board = dashboard_get()

    # beta was used lately; gamma is disabled; only alpha is listed.
    assert (board.unused_count, [m.name for m in board.unused]) == (1, ["alpha"])


def test_dashboard_page_by_role(client, machines, signing_key):
    admin, auditor, nobody = (
        _user("sec", "security-admins"),
        _user("aud", "auditors"),
        _user("staff", None),
    )
    pages = {}
    for user in (admin, auditor, nobody):
        console_login(client, user)
        pages[user.username] = client.get("/console/")

    assert (pages["sec"].status_code, pages["aud"].status_code) == (200, 200)
    # Without a role the console is not open at all (not even with the staff flag): to sign-in.
    assert (pages["staff"].status_code, pages["staff"]["Location"]) == (
        302,
        "/console/login/?next=/console/",
    )
    body = pages["aud"].content.decode()
    assert "Tokens per hour, last 24 hours (UTC)" in body
    assert '<svg class="chart"' in body
    assert "<script" not in body.split("</head>", 1)[1]  # no inline script in the page body
    assert "View site" not in body


@pytest.mark.parametrize(
    ("counts", "labels"),
    [
        ([(0, 0)], ["1"]),  # empty: the top line only, no second "0"
        ([(1, 1)], ["1", "2"]),
        ([(3, 1)], ["5"]),  # half of 5 is no whole count
        ([(40, 7)], ["25", "50"]),
        ([(1500, 0)], ["1,000", "2,000"]),
    ],
)
def test_chart_gridlines_are_whole_counts_at_their_height(counts, labels):
    from identity_portal.console.charts import HEIGHT, TOP, bar_chart

    chart = bar_chart(
        [(f"{i}h", f"hour {i}", issued, refused) for i, (issued, refused) in enumerate(counts)],
        label_every=1,
    )

    assert [label for _, label in chart.gridlines] == labels
    top = int(labels[-1].replace(",", ""))
    for y, label in chart.gridlines:
        assert y == round(TOP + HEIGHT - HEIGHT * int(label.replace(",", "")) / top, 2)
