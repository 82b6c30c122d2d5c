"""Every main console page, for each role, under the real policy: rendered, photographed, clean.

The fixtures fail a test on any Content-Security-Policy violation, uncaught
script error or unexpected console error; these tests take each page through
the widgets that run script (the two-column pickers, the date and time
shortcuts, the action bar, the theme toggle) so Django admin's own scripts
are exercised under the policy in Chromium, not only loaded.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from audit.context import Actor
from audit.models import AuditEvent
from tests.browser import pages


@pytest.fixture
def console_data(transactional_db):
    """A scope, an audience, a machine with a secret, a signing key, and events."""
    from clients.services import audience_create, machine_register, scope_create
    from tokens.services import signing_key_create

    actor = Actor.cli("browser-test")
    scope_create(actor=actor, name="orders:read", description="Read orders")
    audience_create(actor=actor, uri="https://orders.example.test", name="Orders API")
    machine, _ = machine_register(
        actor=actor,
        name="billing-job",
        scopes=["orders:read"],
        default_scopes=["orders:read"],
        audiences=["https://orders.example.test"],
    )
    signing_key_create(algorithm="ES256", activate_now=True, actor=Actor.system("test"))
    return {"machine": machine.pk}


def _url(name: str, ids: dict) -> str:
    return pages.MAIN_PAGES[name].format(**ids)


def _ids(console_data, page) -> dict:
    user = get_user_model().objects.get(username=page.console_user.username)
    return {**console_data, "user": user.pk, "event": AuditEvent.objects.order_by("id").first().pk}


def _exercise_widgets(page) -> None:
    """Run the admin's scripts that a person would trigger on this page."""
    for link in ("Choose all", "Remove all"):
        chooser = page.get_by_title(link)
        if chooser.count():
            chooser.first.click()
    for shortcut in ("Today", "Now"):
        found = page.locator(f".datetimeshortcuts a:has-text('{shortcut}')")
        if found.count():
            found.first.click()
    calendar = page.locator(".datetimeshortcuts a[id^=calendarlink]")
    if calendar.count():
        calendar.first.click()
        page.keyboard.press("Escape")
    toggle = page.locator("#toggle-all")
    if toggle.count():
        toggle.check()
        toggle.uncheck()
    theme = page.locator("button.theme-toggle")
    if theme.count():
        theme.first.click()
        theme.first.click()


def test_every_main_page_as_an_admin(admin_page, console_data, screenshot):
    ids = _ids(console_data, admin_page)
    for name in pages.MAIN_PAGES:
        response = admin_page.goto(_url(name, ids))

        assert response.status == 200, name
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert "camera=()" in response.headers["permissions-policy"]
        _exercise_widgets(admin_page)
        screenshot(admin_page, f"admin-{name}")


def test_every_page_an_auditor_may_open_and_the_403_of_the_others(
    auditor_page, console_data, screenshot, browser_log
):
    ids = _ids(console_data, auditor_page)
    browser_log.allow("status of 403 (Forbidden)")
    for name in pages.MAIN_PAGES:
        response = auditor_page.goto(_url(name, ids))

        if name in pages.AUDITOR_PAGES:
            assert response.status == 200, name
            _exercise_widgets(auditor_page)
            screenshot(auditor_page, f"auditor-{name}")
        else:
            assert response.status == 403, name
            assert "Your role does not allow this" in auditor_page.inner_text(pages.ERROR_HEADING)
    screenshot(auditor_page, "auditor-403")


def test_the_not_found_page(admin_page, screenshot, browser_log):
    browser_log.allow("status of 404 (Not Found)")

    response = admin_page.goto("/console/no-such-page/")

    assert response.status == 404
    assert admin_page.inner_text(pages.ERROR_HEADING) == "Nothing here"
    screenshot(admin_page, "not-found")
