"""The machine pages and the audit log in Chromium, as a security admin and as an auditor.

An admin registers a machine through the form, copies its secret with the copy
button, gets a token with it over HTTP, rotates it, disables and re-enables the
machine, finds all of it in the audit log (time range and failure filters) and
exports it. An auditor filters and exports, sees no control on a machine's page,
and is refused when forcing one. Screenshots of each page land in var/screenshots.
"""

from __future__ import annotations

import base64
import io
import zipfile
from datetime import UTC, datetime, timedelta

import pytest

from audit.context import Actor
from audit.services import audit_checkpoint_create, audit_seal_pending
from clients.models import Machine
from clients.services import audience_create, machine_register, scope_create
from tests.browser import pages
from tokens.services import signing_key_create

API = "https://orders.example.test"


@pytest.fixture
def registries(transactional_db):
    actor = Actor.cli("browser test")
    scope_create(actor=actor, name="orders:read", description="Read orders")
    audience_create(actor=actor, uri=API, name="Orders API")
    signing_key_create(algorithm="ES256", activate_now=True, actor=Actor.system("test"))


def _token(page, client_id: str, secret: str) -> tuple[int, dict]:
    """Ask for a token over HTTP as the machine would (Basic auth), outside the browser session."""
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    answer = page.context.request.post(
        "/oauth/token",
        form={"grant_type": "client_credentials", "scope": "orders:read", "resource": API},
        headers={"Authorization": f"Basic {basic}", "Cookie": ""},
    )
    return answer.status, answer.json()


def _zip_names(download) -> list[str]:
    with open(download.path(), "rb") as handle:
        return sorted(zipfile.ZipFile(io.BytesIO(handle.read())).namelist())


def test_an_admin_runs_a_machine_from_registration_to_the_audit_log(
    admin_page, registries, live_server, screenshot
):
    from playwright.sync_api import expect  # imported once the fixtures found Playwright

    page = admin_page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.goto(pages.CONSOLE_HOME)
    screenshot(page, "dashboard-empty")

    # Register through the short form.
    page.goto(pages.MACHINE_ADD)
    screenshot(page, "machine-add")
    page.fill("input[name=name]", "orders-sync")
    page.fill("input[name=owner_team]", "payments")
    page.get_by_label("orders:read").check()
    page.get_by_label(API).check()
    page.click(pages.SAVE)
    secret = page.inner_text(pages.CLIENT_SECRET).strip()
    client_id = page.inner_text(pages.CLIENT_ID).strip()
    assert secret.startswith("mip_cs_")
    assert '-d scope="orders:read"' in page.inner_text(pages.EXAMPLE_CURL)
    screenshot(page, "machine-secret-once")

    # The copy button puts exactly the secret on the clipboard.
    page.click(pages.COPY_SECRET)
    page.wait_for_function("() => document.querySelector('#copy-secret').textContent === 'Copied'")
    # Read back as a person would, by pasting: the page's Permissions-Policy keeps
    # clipboard-read=() (the console never reads the clipboard), so no readText() here.
    page.evaluate(
        "() => { const box = document.createElement('textarea');"
        " box.id = 'paste-check'; document.body.append(box); }"
    )
    page.focus("#paste-check")
    page.keyboard.press("Control+V")
    assert page.input_value("#paste-check") == secret
    page.evaluate("() => document.querySelector('#paste-check').remove()")

    # The machine gets a token with it over HTTP; a wrong secret is refused.
    status, issued = _token(page, client_id, secret)
    refused, _ = _token(page, client_id, secret[:-2] + "xx")
    assert (status, issued.get("scope"), refused) == (200, "orders:read", 401), issued

    # Its page: rotate with a chosen grace, disable, enable.
    page.click(pages.BACK_TO_MACHINE)
    page.click(pages.ROTATE)
    page.select_option("select[name=grace]", "3600")
    page.click(pages.ROTATE_CONFIRM)
    rotated = page.inner_text(pages.CLIENT_SECRET).strip()
    assert rotated.startswith("mip_cs_") and rotated != secret
    page.click(pages.BACK_TO_MACHINE)
    expect(page.locator("#machine-secrets .badge.expiring")).to_have_count(1)  # old one, in grace
    page.click(pages.DISABLE)
    expect(page.locator(pages.STATE_DISABLED)).to_have_count(1)
    assert not Machine.objects.get(client_id=client_id).enabled
    page.click(pages.ENABLE)
    expect(page.locator(pages.STATE_ENABLED)).to_have_count(1)
    audit_seal_pending()
    audit_checkpoint_create()
    page.reload()
    screenshot(page, "machine-page")

    # The audit log: this machine's events, then only failures within a time range.
    page.click(pages.MACHINE_AUDIT_LINK)
    page.wait_for_load_state()
    types = page.locator("#audit-events td.type").all_inner_texts()
    for expected in ("token.issued", "token.denied", "secret.rotated", "machine.disabled"):
        assert any(text.startswith(expected) for text in types), expected
    now = datetime.now(UTC)
    page.fill("input[name=since]", (now - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S UTC"))
    page.fill("input[name=until]", (now + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S UTC"))
    page.select_option("select[name=outcome]", "failure")
    page.click(pages.FILTER)
    rows = page.locator("#audit-events tbody tr")
    expect(page.locator(pages.FILTER_COUNT)).to_have_text("1 event on this page, newest first")
    assert rows.count() == 1
    assert rows.first.get_attribute("class") == "failure"
    assert "token.denied" in rows.first.inner_text()
    screenshot(page, "audit-log-failures")

    with page.expect_download() as download:
        page.click(pages.EXPORT)
    names = _zip_names(download.value)
    assert names[0].endswith(".jsonl") and names[1].endswith(".manifest.json")

    page.goto(pages.CONSOLE_HOME)
    assert "orders-sync" in page.inner_text("body")
    screenshot(page, "dashboard")


def test_an_auditor_reads_filters_exports_and_changes_nothing(
    auditor_page, registries, browser_log, screenshot
):
    from playwright.sync_api import expect

    page = auditor_page
    machine, _ = machine_register(
        actor=Actor.cli("browser test"),
        name="billing-export",
        scopes=["orders:read"],
        audiences=[API],
    )
    audit_seal_pending()

    page.goto(pages.AUDIT_LOG)
    page.select_option("select[name=type]", "machine.*")
    page.click(pages.FILTER)
    expect(page.locator(pages.FILTER_COUNT)).to_have_text("1 event on this page, newest first")
    assert "machine.registered" in page.inner_text("#audit-events tbody")
    screenshot(page, "audit-log-auditor")
    with page.expect_download() as download:
        page.click(pages.EXPORT)
    assert len(_zip_names(download.value)) == 2

    page.goto(pages.machine_change(machine.pk))
    body = page.inner_text("body")
    for control in ("Rotate secret", "Disable", "Revoke its tokens", "Revoke now", "SAVE"):
        assert control not in body
    screenshot(page, "machine-page-auditor")

    # Forcing the disable URL with a valid CSRF token: refused, nothing changed.
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    forced = page.request.post(
        f"/console/machines/{machine.pk}/disable/",
        headers={"X-CSRFToken": token, "Referer": page.url},
    )
    assert forced.status == 403
    machine.refresh_from_db()
    assert machine.enabled
