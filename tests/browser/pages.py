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

# --- the console's main pages (visited and photographed by test_pages.py) ----------
# name -> URL; "{machine}", "{user}", "{event}" are filled in with real ids.
MAIN_PAGES = {
    "home": "/console/",
    "machines": "/console/clients/machine/",
    "machine-add": "/console/clients/machine/add/",
    "machine": "/console/clients/machine/{machine}/change/",
    "machine-rotate": "/console/clients/machine/{machine}/rotate-secret/",
    "scopes": "/console/clients/scope/",
    "audiences": "/console/clients/audience/",
    "signing-keys": "/console/tokens/signingkey/",
    "audit-events": "/console/audit/auditevent/",
    "audit-event": "/console/audit/auditevent/{event}/change/",
    "audit-checkpoints": "/console/audit/auditcheckpoint/",
    "users": "/console/auth/user/",
    "user": "/console/auth/user/{user}/change/",
    "password-change": "/console/password_change/",
}
# Pages an auditor may open (read-only); the others answer 403 to an auditor.
AUDITOR_PAGES = (
    "home",
    "machines",
    "machine",
    "scopes",
    "audiences",
    "signing-keys",
    "audit-events",
    "audit-event",
    "audit-checkpoints",
    "users",
    "user",
    "password-change",
)
ERROR_HEADING = "h1"
