"""Passkeys in Chromium: register one at first sign-in, then sign in with it.

Chromium's virtual authenticator (DevTools protocol, ``WebAuthn`` domain) plays
the platform authenticator: CTAP2, internal transport, resident keys, user
verification that always succeeds. The portal runs on ``localhost`` (pytest-django's
live server), the RP ID browsers accept without TLS; the page's scripts are
django-otp-webauthn's from our static files, and ``browser_log`` fails the test
on any CSP violation or script error.
"""

from __future__ import annotations

import base64

import pytest

from audit.models import AuditEvent
from identity_portal.models import PasskeyCredential
from tests.browser import pages
from tests.browser.conftest import PASSWORD


@pytest.fixture
def passkeys_on_live_server(settings, live_server):
    settings.WEBAUTHN_RP_ID = settings.OTP_WEBAUTHN_RP_ID = "localhost"
    settings.WEBAUTHN_ORIGINS = settings.OTP_WEBAUTHN_ALLOWED_ORIGINS = [live_server.url]
    return live_server


def _virtual_authenticator(page) -> str:
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
            }
        },
    )
    page.cdp = cdp
    return added["authenticatorId"]


def _password_step(page, username: str) -> None:
    page.goto(pages.LOGIN_URL)
    page.fill(pages.LOGIN_USERNAME, username)
    page.fill(pages.LOGIN_PASSWORD, PASSWORD)
    page.click(pages.LOGIN_SUBMIT)
    page.wait_for_url(f"**{pages.MFA_URL}*")


def test_a_passkey_registered_at_first_sign_in_signs_in_next_time(
    console_user, new_page, passkeys_on_live_server, screenshot
):
    who = console_user("security_admin", username="passkey-admin")
    who.device.delete()  # never enrolled
    page = new_page()
    authenticator = _virtual_authenticator(page)

    # First sign-in: the enrolment page offers a passkey next to the authenticator app.
    _password_step(page, who.username)
    page.wait_for_selector(pages.PASSKEY_REGISTER)
    screenshot(page, "passkey-enrol")
    page.click(pages.PASSKEY_REGISTER)
    page.wait_for_selector(pages.MFA_CONTINUE, state="visible")
    codes = page.locator(pages.RECOVERY_CODES).all_inner_texts()
    assert len(codes) == 10
    assert page.locator(pages.MFA_QR).is_hidden()
    screenshot(page, "passkey-enrolled-recovery-codes")
    page.click(pages.MFA_CONTINUE)
    page.wait_for_url(f"**{pages.CONSOLE_HOME}")
    credentials = page.cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
    stored = PasskeyCredential.objects.get(user=who.user)
    assert [base64.b64decode(c["credentialId"]) for c in credentials["credentials"]] == [
        bytes(stored.credential_id)
    ]

    # Next sign-in: the passkey instead of a code.
    page.click(pages.LOGOUT_BUTTON)
    _password_step(page, who.username)
    page.wait_for_selector(pages.PASSKEY_VERIFY)
    screenshot(page, "passkey-verify")
    page.click(pages.PASSKEY_VERIFY)
    page.wait_for_url(f"**{pages.CONSOLE_HOME}")
    assert who.username in page.inner_text(pages.USER_TOOLS).casefold()

    # The user's passkeys page lists it.
    page.click(pages.PASSKEYS_LINK)
    page.wait_for_url(f"**{pages.PASSKEYS_URL}")
    assert page.locator(pages.PASSKEY_ROWS).count() == 1
    screenshot(page, "passkeys-page")

    stored.refresh_from_db()
    assert stored.last_used_at is not None
    events = list(
        AuditEvent.objects.filter(event_type__startswith="console.mfa")
        .order_by("id")
        .values_list("event_type", "details")
    )
    assert events == [
        (
            "console.mfa_enrolled",
            {"device": "webauthn", "credential": stored.pk, "recovery_codes": 10},
        ),
        ("console.mfa_verified", {"method": "webauthn", "credential": stored.pk}),
    ]


def test_a_signed_in_user_adds_a_passkey_from_their_page(
    console_as, passkeys_on_live_server, screenshot
):
    page = console_as("auditor", username="passkey-auditor")
    _virtual_authenticator(page)

    page.goto(pages.PASSKEYS_URL)
    page.click(pages.PASSKEY_REGISTER)
    page.wait_for_selector(pages.PASSKEY_ROWS)

    assert page.locator(pages.PASSKEY_ROWS).count() == 1
    assert PasskeyCredential.objects.filter(user=page.console_user.user).count() == 1
    screenshot(page, "passkeys-page-added")
