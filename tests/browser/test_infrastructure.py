"""The browser test fixtures themselves: sign-in per role, screenshots, the violation collector."""

from __future__ import annotations

import pytest

from tests.browser import pages
from tests.browser.conftest import ROLES


@pytest.mark.parametrize("role", ROLES)
def test_each_role_signs_in_through_the_form(console_as, screenshot, role):
    page = console_as(role)

    assert page.url.endswith(pages.CONSOLE_HOME)
    assert page.console_user.username in page.inner_text(pages.USER_TOOLS).casefold()
    path = screenshot(page, f"home-{role}")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_collector_reports_a_csp_violation_and_a_script_error(browser_page, browser_log):
    # A page of our own making, served with a strict policy and an inline script.
    browser_page.route(
        "**/csp-probe",
        lambda route: route.fulfill(
            status=200,
            headers={"Content-Security-Policy": "script-src 'self'"},
            content_type="text/html",
            body="<p>probe</p><script>window.ran = true</script>",
        ),
    )
    browser_page.route(
        "**/error-probe",
        lambda route: route.fulfill(
            status=200, content_type="text/html", body="<script>undefinedFunction()</script>"
        ),
    )

    browser_page.goto("/csp-probe")
    browser_page.wait_for_function("() => document.readyState === 'complete'")
    browser_page.goto("/error-probe")

    assert browser_page.evaluate("() => window.undefinedFunction === undefined")
    assert len(browser_log.csp_violations) >= 1
    assert any("script-src" in line for line in browser_log.csp_violations)
    assert any("undefinedFunction" in line for line in browser_log.page_errors)
    # Seen and checked: the fixture's own teardown must not fail this test.
    browser_log.csp_violations.clear()
    browser_log.page_errors.clear()
