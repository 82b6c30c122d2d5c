"""Two-factor console sign-in: enrolment, codes, recovery codes, reset, idle timeout."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import AuditEvent
from core.roles import AUDITORS
from identity_portal.mfa import recovery_code_digest
from tests.fixtures.core import console_login

pytestmark = pytest.mark.django_db

User = get_user_model()
MFA = "/console/mfa/"


def code_of(device: TOTPDevice, *, steps_ahead: int = 0) -> str:
    """The code an authenticator app shows now (or ``steps_ahead`` periods later)."""
    device.refresh_from_db()
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{totp.token() if not steps_ahead else _ahead(totp, steps_ahead):06d}"


def _ahead(totp: TOTP, steps: int) -> int:
    totp.time = totp.time + steps * totp._step
    return totp.token()


@pytest.fixture
def auditor(db):
    user = User.objects.create_user(username="audrey", password="correct horse battery")
    user.is_staff = True
    user.save()
    user.groups.add(Group.objects.get_or_create(name=AUDITORS)[0])
    return user


def _events(event_type: str):
    return list(
        AuditEvent.objects.filter(event_type=event_type)
        .order_by("id")
        .values_list("actor_display", "target_display", "outcome", "reason", "details")
    )


def _enrol(client, user) -> tuple[TOTPDevice, list[str]]:
    page = client.get(MFA)
    assert page.status_code == 200
    device = TOTPDevice.objects.get(user=user)
    done = client.post(MFA, {"otp_token": code_of(device), "next": "/console/"})
    assert done.status_code == 200
    codes = re.findall(r"<li><code>([a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4})</code></li>", done.text)
    return device, codes


def test_a_password_alone_reaches_only_the_second_step(client, auditor):
    client.force_login(auditor)

    home = client.get("/console/")
    machines = client.get("/console/clients/machine/?q=x")
    api = client.get("/api/v1/audit/events")

    assert home.status_code == 302
    assert home["Location"] == "/console/mfa/?next=%2Fconsole%2F"
    assert machines["Location"] == "/console/mfa/?next=%2Fconsole%2Fclients%2Fmachine%2F%3Fq%3Dx"
    # The audit API's session authentication sees no signed-in user.
    assert api.status_code in (401, 403)
    assert "results" not in api.text


def test_the_second_step_shows_no_console_menu_until_it_is_done(client, auditor):
    client.force_login(auditor)

    step = client.get(MFA)
    _enrol(client, auditor)
    home = client.get("/console/")

    assert step.status_code == 200
    assert 'class="console-nav"' not in step.text
    assert 'id="logout-form"' in step.text
    assert home.status_code == 200
    assert 'class="console-nav"' in home.text


def test_first_sign_in_enrols_an_authenticator_and_shows_recovery_codes_once(client, auditor):
    client.force_login(auditor)

    page = client.get(MFA)

    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]
    assert "<svg" in page.text
    assert [t for t in re.findall(r"<script\b[^>]*>", page.text) if "src=" not in t] == []
    device = TOTPDevice.objects.get(user=auditor)
    assert device.confirmed is False
    assert page.context["manual_key"] in page.text
    assert client.get("/console/").status_code == 302  # not yet

    done = client.post(MFA, {"otp_token": code_of(device), "next": "/console/"})

    assert done.status_code == 200
    assert "no-store" in done["Cache-Control"]
    codes = re.findall(r"<li><code>([a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4})</code></li>", done.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    device.refresh_from_db()
    assert device.confirmed is True
    stored = set(StaticToken.objects.filter(device__user=auditor).values_list("token", flat=True))
    # Only keyed digests are stored, never a code as typed.
    assert stored == {
        recovery_code_digest(user_id=auditor.pk, code=c.replace("-", "")) for c in codes
    }
    assert not stored & {c.replace("-", "") for c in codes}
    assert _events("console.mfa_enrolled") == [
        ("audrey", "audrey", "success", "", {"device": "totp", "recovery_codes": 10})
    ]
    assert client.get("/console/").status_code == 200
    # Shown once: the page now sends a verified user on, and never lists the codes again.
    again = client.get(MFA)
    assert again.status_code == 302


def test_a_wrong_enrolment_code_confirms_nothing_and_is_audited(client, auditor):
    client.force_login(auditor)
    client.get(MFA)
    device = TOTPDevice.objects.get(user=auditor)
    wrong = f"{(int(code_of(device)) + 1) % 1_000_000:06d}"

    response = client.post(MFA, {"otp_token": wrong})

    assert response.status_code == 200
    assert "That code is not valid" in response.text
    device.refresh_from_db()
    assert device.confirmed is False
    assert not StaticToken.objects.exists()
    assert _events("console.mfa_failed") == [
        ("audrey", "audrey", "failure", "bad_code", {"method": "totp"})
    ]
    assert client.get("/console/").status_code == 302


def test_an_enrolled_user_signs_in_with_the_current_code_and_it_cannot_be_replayed(client, auditor):
    device = TOTPDevice.objects.create(user=auditor, name="authenticator", confirmed=True)
    client.force_login(auditor)
    code = code_of(device)

    response = client.post(MFA, {"otp_token": code, "next": "/console/audit/auditevent/"})

    assert response.status_code == 302
    assert response["Location"] == "/console/audit/auditevent/"
    assert client.get("/console/").status_code == 200

    # The same code, from another session a moment later (after the throttle's wait).
    other = client.__class__()
    other.force_login(auditor)
    with time_machine.travel(timezone.now() + timedelta(seconds=2), tick=False):
        replay = other.post(MFA, {"otp_token": code})
    assert replay.status_code == 200
    assert other.get("/console/").status_code == 302
    assert _events("console.mfa_failed") == [
        ("audrey", "audrey", "failure", "bad_code", {"method": "totp"})
    ]


def test_failures_are_throttled_and_a_throttled_attempt_is_audited(client, auditor):
    device = TOTPDevice.objects.create(user=auditor, name="authenticator", confirmed=True)
    client.force_login(auditor)
    start = timezone.now()

    with time_machine.travel(start, tick=False):
        wrong = f"{(int(code_of(device)) + 1) % 1_000_000:06d}"
        client.post(MFA, {"otp_token": wrong})
        right_but_too_soon = client.post(MFA, {"otp_token": code_of(device)})
    with time_machine.travel(start + timedelta(seconds=2), tick=False):
        after_the_wait = client.post(MFA, {"otp_token": code_of(device), "next": "/console/"})

    assert right_but_too_soon.status_code == 200
    assert after_the_wait.status_code == 302
    assert [e[3] for e in _events("console.mfa_failed")] == ["bad_code", "throttled"]


def test_a_recovery_code_works_once_and_its_use_is_audited(client, auditor):
    client.force_login(auditor)
    _, codes = _enrol(client, auditor)
    first = client.__class__()
    first.force_login(auditor)

    used = first.post(MFA, {"otp_token": codes[0].upper().replace("-", " "), "next": "/console/"})

    assert used.status_code == 302
    assert first.get("/console/").status_code == 200
    assert StaticToken.objects.filter(device__user=auditor).count() == 9
    assert _events("console.mfa_recovery_used") == [
        ("audrey", "audrey", "success", "", {"left": 9})
    ]
    second = client.__class__()
    second.force_login(auditor)
    with time_machine.travel(timezone.now() + timedelta(seconds=2), tick=False):
        again = second.post(MFA, {"otp_token": codes[0]})
    assert again.status_code == 200
    assert second.get("/console/").status_code == 302
    assert _events("console.mfa_failed")[-1][3:] == ("bad_code", {"method": "recovery_code"})


def test_a_recovery_code_row_copied_to_another_user_opens_nothing(client, auditor, admin_user):
    """The stored digest binds the user: a database writer cannot reuse one across accounts."""
    client.force_login(auditor)
    _, codes = _enrol(client, auditor)
    other = client.__class__()
    other.force_login(admin_user)
    _enrol(other, admin_user)
    admins_device = admin_user.staticdevice_set.get()
    for token in StaticToken.objects.filter(device__user=auditor):
        StaticToken.objects.create(device=admins_device, token=token.token)
    thief = client.__class__()
    thief.force_login(admin_user)

    response = thief.post(MFA, {"otp_token": codes[1]})

    assert response.status_code == 200
    assert thief.get("/console/").status_code == 302


def test_next_never_leaves_the_site(client, auditor):
    device = TOTPDevice.objects.create(user=auditor, name="authenticator", confirmed=True)
    client.force_login(auditor)

    response = client.post(MFA, {"otp_token": code_of(device), "next": "https://evil.example/"})

    assert response["Location"] == "/console/"


@pytest.mark.parametrize("typed", ["", " ", "x" * 40, "12345", "abcd-efgh", "\x00\x01", "١٢٣٤٥٦"])
def test_malformed_codes_are_refused_without_error(client, auditor, typed):
    TOTPDevice.objects.create(user=auditor, name="authenticator", confirmed=True)
    client.force_login(auditor)

    response = client.post(MFA, {"otp_token": typed})

    assert response.status_code == 200
    assert client.get("/console/").status_code == 302


def test_a_superuser_resets_a_second_factor_and_the_user_enrols_again(client, auditor, admin_user):
    victim = client.__class__()
    console_login(victim, auditor)
    assert victim.get("/console/").status_code == 200
    console_login(client, admin_user)

    response = client.post(f"/console/auth/user/{auditor.pk}/reset-mfa/")

    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(user=auditor).exists()
    assert _events("console.mfa_reset") == [
        ("root-admin", "audrey", "success", "", {"devices_removed": 1, "passkeys_removed": 0})
    ]
    # The session verified by the removed device is verified no more.
    assert victim.get("/console/")["Location"].startswith(MFA)
    assert victim.get(MFA).context["manual_key"]


def test_only_a_superuser_may_reset_and_only_by_post(client, auditor, admin_user):
    console_login(client, admin_user)
    assert client.get(f"/console/auth/user/{auditor.pk}/reset-mfa/").status_code == 405
    console_login(client, auditor)

    refused = client.post(f"/console/auth/user/{admin_user.pk}/reset-mfa/")

    assert refused.status_code == 403
    assert "Your role does not allow this" in refused.text
    assert TOTPDevice.objects.filter(user=admin_user).count() == 1
    assert _events("console.mfa_reset") == []
    assert _events("console.access_denied") == [
        (
            "audrey",
            f"/console/auth/user/{admin_user.pk}/reset-mfa/",
            "failure",
            "forbidden",
            {"method": "POST", "path": f"/console/auth/user/{admin_user.pk}/reset-mfa/"},
        )
    ]


def test_the_user_page_offers_the_reset_to_superusers_only(client, auditor, admin_user):
    TOTPDevice.objects.create(user=auditor, name="authenticator", confirmed=True)
    console_login(client, admin_user)
    as_admin = client.get(f"/console/auth/user/{auditor.pk}/change/")
    console_login(client, auditor)
    as_auditor = client.get(f"/console/auth/user/{admin_user.pk}/change/")

    assert "Reset two-factor sign-in" in as_admin.text
    assert "Enrolled: authenticator app" in as_admin.text
    assert as_auditor.status_code == 200
    assert "Reset two-factor sign-in" not in as_auditor.text


def test_an_idle_session_is_signed_out_after_the_timeout(client, auditor, settings):
    settings.CONSOLE_IDLE_TIMEOUT = 1800
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        console_login(client, auditor)
        assert client.get("/console/").status_code == 200
    with time_machine.travel(start + timedelta(seconds=1799), tick=False):
        assert client.get("/console/").status_code == 200
    with time_machine.travel(start + timedelta(seconds=1799 + 1801), tick=False):
        idle = client.get("/console/audit/auditevent/")

    assert idle.status_code == 302
    assert idle["Location"] == "/console/login/?next=%2Fconsole%2Faudit%2Fauditevent%2F"
    assert "_auth_user_id" not in client.session
    assert _events("console.logout") == [("audrey", "audrey", "success", "", {"reason": "idle"})]


def test_without_required_mfa_a_password_is_enough(client, auditor, settings):
    settings.CONSOLE_REQUIRE_MFA = False
    client.force_login(auditor)

    assert client.get("/console/").status_code == 200


def test_the_mfa_reset_command_unlocks_a_locked_out_superuser(admin_user):
    import io
    import json

    from django.core.management import call_command

    TOTPDevice.objects.create(user=admin_user, name="authenticator", confirmed=True)
    out = io.StringIO()

    call_command("mfa_reset", "root-admin", stdout=out)

    assert json.loads(out.getvalue()) == {"username": "root-admin", "devices_removed": 1}
    assert not TOTPDevice.objects.filter(user=admin_user).exists()
    event = AuditEvent.objects.get(event_type="console.mfa_reset")
    assert (event.actor_kind, event.target_display) == ("cli", "root-admin")


def test_the_mfa_reset_command_refuses_an_unknown_user_and_changes_nothing(admin_user):
    import io

    from django.core.management import call_command

    TOTPDevice.objects.create(user=admin_user, name="authenticator", confirmed=True)
    err = io.StringIO()

    with pytest.raises(SystemExit) as exited:
        call_command("mfa_reset", "nobody", stderr=err)

    assert exited.value.code == 2
    assert TOTPDevice.objects.filter(user=admin_user).count() == 1
    assert not AuditEvent.objects.filter(event_type="console.mfa_reset").exists()
