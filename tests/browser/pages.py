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
