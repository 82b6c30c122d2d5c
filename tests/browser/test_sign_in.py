"""Signing in as a person does: password, then enrolling an authenticator from the page."""

from __future__ import annotations

import base64

from django_otp.oath import TOTP

from tests.browser import pages
from tests.browser.conftest import PASSWORD


def test_first_sign_in_enrols_from_the_page_and_shows_the_recovery_codes(
    console_user, new_page, screenshot
):
    who = console_user("security_admin", username="new-admin")
    who.device.delete()  # a user who never enrolled
    page = new_page()

    page.goto(pages.LOGIN_URL)
    screenshot(page, "sign-in")
    page.fill(pages.LOGIN_USERNAME, who.username)
    page.fill(pages.LOGIN_PASSWORD, PASSWORD)
    page.click(pages.LOGIN_SUBMIT)
    page.wait_for_url(f"**{pages.MFA_URL}*")

    assert page.locator(pages.MFA_QR).count() == 1
    screenshot(page, "mfa-enrol")
    # What an authenticator app does with the key: RFC 6238, SHA-1, 30 s, 6 digits.
    key = base64.b32decode(page.inner_text(pages.MFA_MANUAL_KEY).strip())
    page.fill(pages.OTP_INPUT, f"{TOTP(key).token():06d}")
    page.click(pages.OTP_SUBMIT)

    codes = page.locator(pages.RECOVERY_CODES).all_inner_texts()
    assert len(codes) == 10
    screenshot(page, "mfa-recovery-codes")
    page.click(pages.MFA_CONTINUE)
    page.wait_for_url(f"**{pages.CONSOLE_HOME}")
    assert who.username in page.inner_text(pages.USER_TOOLS).casefold()


def test_an_enrolled_user_is_asked_for_a_code(console_user, new_page, screenshot):
    who = console_user("auditor", username="returning-auditor")
    page = new_page()

    page.goto(pages.LOGIN_URL)
    page.fill(pages.LOGIN_USERNAME, who.username)
    page.fill(pages.LOGIN_PASSWORD, PASSWORD)
    page.click(pages.LOGIN_SUBMIT)
    page.wait_for_url(f"**{pages.MFA_URL}*")
    screenshot(page, "mfa-verify")
    page.fill(pages.OTP_INPUT, who.totp())
    page.click(pages.OTP_SUBMIT)

    page.wait_for_url(f"**{pages.CONSOLE_HOME}")
    assert page.locator(pages.USER_TOOLS).count() == 1
