"""Browser tests: Playwright for Python driving Debian's Chromium against the live server.

What this package gives every browser test (the fixtures below):

- ``chromium``: one headless Chromium per test package run, Debian's
  (``/usr/bin/chromium``, or ``$CHROMIUM``), never a downloaded build. Without
  it (or without Playwright) the tests skip with the reason; with
  ``REQUIRE_BROWSER=1`` (CI) they fail instead, so a green CI proves they ran;
- ``browser_page``: a fresh context (own cookies) and page on the live server
  (pytest-django's ``live_server``: the test database, PostgreSQL or SQLite,
  served from a thread of the test process), 1366 x 900;
- ``browser_log``: everything the page reports: Content-Security-Policy
  violations (the ``securitypolicyviolation`` events, and Chromium's own
  console line), uncaught script errors and console errors. At teardown the
  test fails on any of them, unless the test said it expects that line
  (``browser_log.allow("status of 403")`` for a URL it forces on purpose);
- ``console_user(role)``: a user holding ``admin`` (superuser), ``security_admin``
  or ``auditor``, with a confirmed TOTP device whose codes the test computes;
- ``console_as(role)``: a page signed in through the real sign-in form as that
  role (password, then the TOTP code when MFA is asked for); ``admin_page``,
  ``security_admin_page`` and ``auditor_page`` are the three of them;
- ``screenshot(page, name)``: saves ``var/screenshots/<name>.png`` (full page).

The sync Playwright API runs an event loop in the test thread, so Django's
"no ORM from async code" guard is lifted for this package only
(``DJANGO_ALLOW_ASYNC_UNSAFE``), and put back when the browser closes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from core.roles import AUDITORS, SECURITY_ADMINS
from tests.browser import pages

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("REQUIRE_BROWSER") == "1"
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"
VIEWPORT = {"width": 1366, "height": 900}
PASSWORD = "correct horse battery staple"

# Chromium's own console line for a refused resource or inline code.
_CSP_CONSOLE = re.compile(r"Content Security Policy|Content-Security-Policy", re.IGNORECASE)
# Runs before any page script, outside the page's CSP (Playwright injects it):
# every violation the document sees is reported on the console with a marker.
_VIOLATION_LISTENER = """
document.addEventListener('securitypolicyviolation', (e) => {
  console.error('CSP violation: ' + JSON.stringify({
    directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile,
    line: e.lineNumber, sample: e.sample, page: e.documentURI}));
});
"""


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.browser)


def _unavailable(reason: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="package")
def chromium():
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"needs Debian's Chromium at {CHROMIUM}: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("needs Playwright for Python: make .venv/.installed-dev")
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@dataclass
class BrowserLog:
    """What the pages of one test reported: violations, script errors, console errors."""

    csp_violations: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)

    def allow(self, substring: str) -> None:
        """A console error the test causes on purpose (a forced URL's 403, say)."""
        self.allowed.append(substring)

    def watch(self, page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.page_errors.append(f"{page.url}: {error}"))

    def _console(self, message) -> None:
        if message.type != "error":
            return
        where = message.location.get("url", "") if message.location else ""
        text = f"{message.text} (at {where})"
        if message.text.startswith("CSP violation:") or _CSP_CONSOLE.search(message.text):
            self.csp_violations.append(text)
        else:
            self.console_errors.append(text)

    def unexpected(self) -> dict[str, list[str]]:
        errors = [e for e in self.console_errors if not any(a in e for a in self.allowed)]
        return {
            name: found
            for name, found in (
                ("csp_violations", self.csp_violations),
                ("page_errors", self.page_errors),
                ("console_errors", errors),
            )
            if found
        }


@pytest.fixture
def browser_log() -> Iterator[BrowserLog]:
    log = BrowserLog()
    yield log
    assert log.unexpected() == {}, "the browser reported problems"


@pytest.fixture
def new_page(chromium, live_server, browser_log) -> Iterator[Callable]:
    """Open pages in fresh contexts (own cookies), each watched by ``browser_log``."""
    contexts = []

    def open_page():
        context = chromium.new_context(base_url=live_server.url, viewport=VIEWPORT)
        context.add_init_script(_VIOLATION_LISTENER)
        contexts.append(context)
        page = context.new_page()
        browser_log.watch(page)
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def browser_page(new_page):
    return new_page()


@pytest.fixture
def screenshot() -> Callable:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


# --- console users and signing in --------------------------------------------------


@dataclass
class ConsoleUser:
    """A console account as a test holds it: the user, its password and its TOTP device."""

    user: object
    password: str
    device: object  # django_otp.plugins.otp_totp.models.TOTPDevice

    @property
    def username(self) -> str:
        return self.user.get_username()

    def totp(self) -> str:
        """The device's current code, computed from its key as an authenticator app would."""
        from django_otp.oath import TOTP

        totp = TOTP(self.device.bin_key, self.device.step, self.device.t0, self.device.digits)
        totp.drift = self.device.drift
        return f"{totp.token():0{self.device.digits}d}"


ROLES = ("admin", "security_admin", "auditor")


def console_user_create(role: str, username: str | None = None) -> ConsoleUser:
    """A user holding ``role``, with a confirmed TOTP device (as after enrolment)."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {ROLES}")
    users = get_user_model().objects
    username = username or f"{role.replace('_', '-')}-browser"
    if role == "admin":
        user = users.create_superuser(username=username, email="", password=PASSWORD)
    else:
        user = users.create_user(username=username, password=PASSWORD, is_staff=True)
        group = SECURITY_ADMINS if role == "security_admin" else AUDITORS
        # get_or_create: a transactional test's flush removes the migration's groups.
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
    return ConsoleUser(user=user, password=PASSWORD, device=device)


@pytest.fixture
def console_user(transactional_db) -> Callable[..., ConsoleUser]:
    return console_user_create


def console_sign_in(page, who: ConsoleUser) -> None:
    """Sign in through the console's own form: password, then the TOTP code if asked."""
    page.goto(pages.LOGIN_URL)
    page.fill(pages.LOGIN_USERNAME, who.username)
    page.fill(pages.LOGIN_PASSWORD, who.password)
    page.click(pages.LOGIN_SUBMIT)
    page.wait_for_load_state()
    if page.locator(pages.OTP_INPUT).count():
        page.fill(pages.OTP_INPUT, who.totp())
        page.click(pages.OTP_SUBMIT)
        page.wait_for_load_state()
    assert page.locator(pages.USER_TOOLS).count() == 1, f"not signed in: {page.url}"


@pytest.fixture
def console_as(new_page, console_user) -> Callable:
    """``console_as("auditor")``: a new page signed in as a new user holding that role.

    The page carries the user as ``page.console_user`` (its TOTP device included).
    """

    def sign_in(role: str, username: str | None = None):
        who = console_user(role, username)
        page = new_page()
        console_sign_in(page, who)
        page.console_user = who
        return page

    return sign_in


@pytest.fixture
def admin_page(console_as):
    return console_as("admin")


@pytest.fixture
def security_admin_page(console_as):
    return console_as("security_admin")


@pytest.fixture
def auditor_page(console_as):
    return console_as("auditor")
