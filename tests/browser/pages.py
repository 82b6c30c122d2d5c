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
