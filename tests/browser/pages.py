"""Where the browser tests find things on the console's pages: every selector lives here.

The console's pages are redesigned while these tests exist; a changed page
should need one change here, not one per test. Prefer URLs, form field names
and text the console controls over CSS structure.
"""

from __future__ import annotations

# --- sign-in ---------------------------------------------------------------
LOGIN_URL = "/console/login/"
LOGIN_USERNAME = "input[name=username]"
LOGIN_PASSWORD = "input[name=password]"
LOGIN_SUBMIT = "form#login-form [type=submit]"
# The second step of sign-in (TOTP code or recovery code), when MFA is on.
OTP_INPUT = "input[name=otp_token]"
OTP_SUBMIT = "form#otp-form [type=submit]"
LOGOUT_BUTTON = "#logout-form [type=submit]"

# --- the console's frame ---------------------------------------------------
CONSOLE_HOME = "/console/"
USER_TOOLS = "#user-tools"

# --- second factor -------------------------------------------------------------
MFA_URL = "/console/mfa/"
MFA_MANUAL_KEY = "#totp-key"
MFA_QR = "figure.console-qr svg"
RECOVERY_CODES = "#recovery-codes code"
MFA_CONTINUE = "#mfa-continue"
# Passkeys: the buttons django-otp-webauthn's scripts wire up, and the user's own page.
PASSKEY_REGISTER = "#passkey-register-button"
PASSKEY_REGISTER_STATUS = "#passkey-register-status-message"
PASSKEY_VERIFY = "#passkey-verification-button"
PASSKEYS_URL = "/console/account/passkeys/"
PASSKEYS_LINK = "#passkeys-link"
PASSKEY_ROWS = "#passkey-list tbody tr"

# --- the console's main pages (visited and photographed by test_pages.py) ----------
# name -> URL; "{machine}", "{user}", "{event}" are filled in with real ids.
MAIN_PAGES = {
    "dashboard": "/console/",
    "machines": "/console/clients/machine/",
    "machine-add": "/console/clients/machine/add/",
    "machine": "/console/clients/machine/{machine}/change/",
    "machine-rotate": "/console/clients/machine/{machine}/rotate-secret/",
    "scopes": "/console/clients/scope/",
    "audiences": "/console/clients/audience/",
    "signing-keys": "/console/tokens/signingkey/",
    "audit-log": "/console/audit/",
    "audit-log-failures": "/console/audit/?outcome=failure",
    "audit-events": "/console/audit/auditevent/",
    "audit-event": "/console/audit/auditevent/{event}/change/",
    "audit-checkpoints": "/console/audit/auditcheckpoint/",
    "users": "/console/auth/user/",
    "user": "/console/auth/user/{user}/change/",
    "password-change": "/console/password_change/",
}
# Pages an auditor may open (read-only); the others answer 403 to an auditor.
AUDITOR_PAGES = (
    "dashboard",
    "machines",
    "machine",
    "scopes",
    "audiences",
    "signing-keys",
    "audit-log",
    "audit-log-failures",
    "audit-events",
    "audit-event",
    "audit-checkpoints",
    "users",
    "user",
    "password-change",
)
ERROR_HEADING = "h1"


# --- what a person does on the machine pages ---------------------------------------
# Written against the redesigned pages (short registration form with checkbox
# grids, the machine page's own buttons, the console's audit log); a redesigned
# page changes these functions, not the tests that call them.
MACHINES_URL = "/console/clients/machine/"
MACHINE_ADD_URL = "/console/clients/machine/add/"
SECRET_CLIENT_ID = "#client-id"
SECRET_VALUE = "#client-secret"
SECRET_BACK = "text=I have stored it"
ROTATE_LINK = "#rotate-secret"
ROTATE_GRACE = "select[name=grace]"
ROTATE_SUBMIT = "#rotate-confirm"
SAVE_BUTTON = "input[name=_save]"
ACTION_SELECT = "select[name=action]"
DISABLE_BUTTON = "#disable-machine"
ENABLE_BUTTON = "#enable-machine"
REVOKE_SECRET_BUTTON = "text=Revoke now"
ADD_LINK = "a.addlink"
RESET_PASSWORD = "text=Reset password"
CHANGE_FORM = "form[method=post]"
MESSAGES = "ul.messagelist"


def machine_register(page, *, name: str, owner: str, scope: str, audience: str) -> None:
    """Fill and save the registration form; the page then shows the secret once."""
    page.goto(MACHINE_ADD_URL)
    page.fill("input[name=name]", name)
    page.fill("input[name=owner_team]", owner)
    page.get_by_label(scope, exact=True).check()
    page.get_by_label(audience, exact=True).check()
    page.click(SAVE_BUTTON)
    page.wait_for_selector(SECRET_VALUE)


def secret_shown(page) -> tuple[str, str]:
    """The client_id and the secret on the show-once page, as a person copies them."""
    return page.inner_text(SECRET_CLIENT_ID).strip(), page.inner_text(SECRET_VALUE).strip()


def machine_open(page, name: str) -> None:
    page.goto(MACHINES_URL)
    page.click(f"a:text-is('{name}')")
    page.wait_for_load_state()


def machine_rotate(page, name: str, *, grace: int) -> None:
    machine_open(page, name)
    page.click(ROTATE_LINK)
    page.select_option(ROTATE_GRACE, str(grace))
    page.click(ROTATE_SUBMIT)
    page.wait_for_selector(SECRET_VALUE)


def machine_disable(page, name: str) -> None:
    machine_open(page, name)
    page.click(DISABLE_BUTTON)
    page.wait_for_selector(STATE_DISABLED)


def machine_enable(page, name: str) -> None:
    machine_open(page, name)
    page.click(ENABLE_BUTTON)
    page.wait_for_selector(STATE_ENABLED)


# --- the audit log -----------------------------------------------------------------
AUDIT_LOG_URL = "/console/audit/"
AUDIT_ROWS = "#audit-events tbody tr"


def audit_log_open(page, *, search: str = "", outcome: str = "", event_type: str = "") -> None:
    """The audit log filtered as a person would with the page's filter form."""
    page.goto(AUDIT_LOG_URL)
    if search:
        page.fill("input[name=q]", search)
    if outcome:
        page.select_option("select[name=outcome]", outcome)
    if event_type:
        page.select_option("select[name=type]", event_type)
    page.click(FILTER)
    page.wait_for_load_state()


def audit_log_rows(page) -> list[str]:
    return page.locator(AUDIT_ROWS).all_inner_texts()


def audit_row_is(row: str, event_type: str) -> bool:
    """Whether a row of the log shows ``event_type`` (as its code or its label)."""
    from audit.choices import EventType

    return event_type in row or EventType(event_type).label in row


# --- machines ----------------------------------------------------------------
MACHINE_ADD = "/console/clients/machine/add/"
SAVE = "input[name=_save]"
CLIENT_ID = "#client-id"
CLIENT_SECRET = "#client-secret"
COPY_SECRET = "#copy-secret"
EXAMPLE_CURL = "#example-curl"
BACK_TO_MACHINE = "text=I have stored it"
ROTATE = "#rotate-secret"
ROTATE_CONFIRM = "#rotate-confirm"
DISABLE = "#disable-machine"
ENABLE = "#enable-machine"
STATE_ENABLED = "#machine-summary .badge.enabled"
STATE_DISABLED = "#machine-summary .badge.disabled"
MACHINE_AUDIT_LINK = "#machine-activity h2 a"


def machine_change(pk: int) -> str:
    return f"/console/clients/machine/{pk}/change/"


# --- the audit log -------------------------------------------------------------
AUDIT_LOG = "/console/audit/"
FILTER = "#audit-filters [type=submit]"
EXPORT = "#audit-export [type=submit]"
FILTER_COUNT = "#audit-count"
