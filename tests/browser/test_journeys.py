"""Two people at work in the console, end to end, in Chromium.

An admin registers a machine, hands its secret to a machine that gets a token
over HTTP, rotates the secret, disables and re-enables the machine, and finds
all of it in the audit log. An auditor filters the log and is refused every
change: no control is shown, a forced URL answers 403, and each refusal is in
the audit trail. Selectors and page steps live in ``tests/browser/pages.py``.
"""

from __future__ import annotations

import jwt
import pytest
import requests

from audit.context import Actor
from audit.models import AuditEvent
from tests.browser import pages

SCOPE = "orders:read"
AUDIENCE = "https://orders.example.test"


@pytest.fixture
def registry(transactional_db):
    """What a machine needs before it can be registered: a scope, an audience, a signing key."""
    from clients.services import audience_create, scope_create
    from tokens.services import signing_key_create

    actor = Actor.cli("browser-test")
    scope_create(actor=actor, name=SCOPE, description="Read orders")
    audience_create(actor=actor, uri=AUDIENCE, name="Orders API")
    return signing_key_create(algorithm="ES256", activate_now=True, actor=Actor.system("test"))


def _token(live_server, client_id: str, secret: str) -> requests.Response:
    """What the machine does with its credentials: the client credentials grant, HTTP Basic."""
    return requests.post(
        f"{live_server.url}/oauth/token",
        auth=(client_id, secret),
        data={"grant_type": "client_credentials", "scope": SCOPE, "resource": AUDIENCE},
        timeout=10,
    )


def test_an_admin_registers_rotates_disables_and_finds_it_all_in_the_audit_log(
    admin_page, registry, live_server, screenshot, browser_log
):
    page = admin_page

    pages.machine_register(page, name="billing", owner="payments", scope=SCOPE, audience=AUDIENCE)
    screenshot(page, "journey-secret-once")
    client_id, secret = pages.secret_shown(page)

    issued = _token(live_server, client_id, secret)
    assert issued.status_code == 200, issued.text
    claims = jwt.decode(issued.json()["access_token"], options={"verify_signature": False})
    assert (claims["client_id"], claims["aud"], claims["scope"]) == (client_id, AUDIENCE, SCOPE)

    pages.machine_rotate(page, "billing", grace=0)
    rotated_id, rotated = pages.secret_shown(page)
    assert rotated_id == client_id and rotated != secret
    assert _token(live_server, client_id, secret).status_code == 401  # no grace: stopped at once
    assert _token(live_server, client_id, rotated).status_code == 200

    pages.machine_disable(page, "billing")
    screenshot(page, "journey-disabled")
    refused = _token(live_server, client_id, rotated)
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")

    pages.machine_enable(page, "billing")
    assert _token(live_server, client_id, rotated).status_code == 200

    pages.audit_log_open(page, search=client_id)
    screenshot(page, "journey-audit-log")
    rows = pages.audit_log_rows(page)
    for event_type in (
        "machine.registered",
        "secret.rotated",
        "machine.disabled",
        "machine.enabled",
        "token.issued",
        "token.denied",
    ):
        assert any(pages.audit_row_is(row, event_type) for row in rows), event_type
    assert pages.audit_row_is(rows[0], "token.issued")  # newest first
    assert sum(pages.audit_row_is(row, "token.issued") for row in rows) == 3
    assert sum(pages.audit_row_is(row, "token.denied") for row in rows) == 2


def test_an_auditor_filters_the_log_and_is_refused_every_change(
    auditor_page, registry, live_server, screenshot, browser_log
):
    from clients.services import machine_register

    page = auditor_page
    auditor = page.console_user.username
    machine, secret = machine_register(
        actor=Actor.cli("browser-test"),
        name="billing",
        scopes=[SCOPE],
        default_scopes=[SCOPE],
        audiences=[AUDIENCE],
    )
    assert _token(live_server, machine.client_id, secret).status_code == 200
    assert _token(live_server, machine.client_id, "wrong-secret").status_code == 401

    # The log, failures only.
    pages.audit_log_open(page, outcome="failure")
    rows = pages.audit_log_rows(page)
    screenshot(page, "auditor-failures")
    assert rows and all("failure" in row.casefold() for row in rows)
    assert any(pages.audit_row_is(row, "token.denied") for row in rows)
    assert not any(pages.audit_row_is(row, "token.issued") for row in rows)

    # No control the auditor may not use.
    page.goto(pages.MACHINES_URL)
    assert page.locator(pages.ADD_LINK).count() == 0
    assert page.locator(pages.ACTION_SELECT).count() == 0
    pages.machine_open(page, "billing")
    for control in (pages.SAVE_BUTTON, pages.ROTATE_LINK, pages.REVOKE_SECRET_BUTTON):
        assert page.locator(control).count() == 0, control
    page.goto("/console/auth/user/")
    assert page.locator(pages.ADD_LINK).count() == 0
    page.click(f"a:text-is('{auditor}')")
    assert page.locator(pages.RESET_PASSWORD).count() == 0

    # Forced URLs: 403, the console's page, and a record of each attempt.
    browser_log.allow("status of 403 (Forbidden)")
    before = AuditEvent.objects.filter(event_type="console.access_denied").count()
    for url in (
        pages.MACHINE_ADD_URL,
        f"{pages.MACHINES_URL}{machine.pk}/rotate-secret/",
    ):
        response = page.goto(url)
        assert response.status == 403, url
    screenshot(page, "auditor-forced-403")
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    forced_post = page.request.post(
        f"{live_server.url}{pages.MACHINES_URL}{machine.pk}/change/",
        form={"csrfmiddlewaretoken": csrf, "name": "renamed", "enabled": "on"},
        headers={"Referer": f"{live_server.url}{pages.MACHINES_URL}"},
    )
    assert forced_post.status == 403
    machine.refresh_from_db()
    assert (machine.name, machine.enabled) == ("billing", True)

    refusals = AuditEvent.objects.filter(event_type="console.access_denied").order_by("id")
    assert list(refusals[before:].values_list("actor_display", "outcome", "details")) == [
        (auditor, "failure", {"method": "GET", "path": pages.MACHINE_ADD_URL}),
        (
            auditor,
            "failure",
            {"method": "GET", "path": f"{pages.MACHINES_URL}{machine.pk}/rotate-secret/"},
        ),
        (
            auditor,
            "failure",
            {"method": "POST", "path": f"{pages.MACHINES_URL}{machine.pk}/change/"},
        ),
    ]
    # And the auditor sees those refusals in the log.
    pages.audit_log_open(page, event_type="console.access_denied")
    assert len(pages.audit_log_rows(page)) == 3
    screenshot(page, "auditor-refusals-in-the-log")
