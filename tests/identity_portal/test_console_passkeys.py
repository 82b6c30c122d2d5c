"""Passkeys as the console's second factor: registration, sign-in, failure, removal, reset."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import AuditEvent
from core.roles import AUDITORS
from identity_portal.checks import production_passkeys
from identity_portal.models import PasskeyCredential
from identity_portal.passkeys import passkey_binding
from tests.fixtures.core import console_login
from tests.fixtures.passkeys import SoftPasskey, b64url

pytestmark = pytest.mark.django_db

User = get_user_model()
BASE = "/console/mfa/passkeys"
REGISTER_BEGIN = f"{BASE}/registration/begin/"
REGISTER_COMPLETE = f"{BASE}/registration/complete/"
AUTH_BEGIN = f"{BASE}/authentication/begin/"
AUTH_COMPLETE = f"{BASE}/authentication/complete/"
PAGE = "/console/account/passkeys/"


@pytest.fixture
def auditor(db):
    user = User.objects.create_user(username="audrey", password="correct horse battery")
    user.groups.add(Group.objects.get_or_create(name=AUDITORS)[0])
    return user


def _events(event_type: str):
    return list(
        AuditEvent.objects.filter(event_type=event_type)
        .order_by("id")
        .values_list("actor_display", "target_display", "outcome", "reason", "details")
    )


def _post_json(client, url: str, body) -> object:
    return client.post(url, json.dumps(body), content_type="application/json")


def _register(client, passkey: SoftPasskey):
    options = client.post(REGISTER_BEGIN).json()
    return _post_json(client, REGISTER_COMPLETE, passkey.create(options))


def _verified(client) -> bool:
    return client.get("/console/").status_code == 200


@pytest.fixture
def registered(client, auditor, passkeys_on):
    """``auditor`` with a passkey registered through the views, and a fresh signed-out client."""
    passkey = SoftPasskey()
    console_login(client, auditor)
    assert _register(client, passkey).status_code == 200
    client.logout()
    return passkey


# --- registration ---------------------------------------------------------------------


def test_a_verified_user_registers_a_passkey_and_it_is_audited(client, auditor, passkeys_on):
    console_login(client, auditor)
    passkey = SoftPasskey()

    options = client.post(REGISTER_BEGIN).json()
    response = _post_json(client, REGISTER_COMPLETE, passkey.create(options))

    credential = PasskeyCredential.objects.get()
    assert response.status_code == 200
    assert response.json() == {"id": credential.pk}  # no recovery codes: not a first factor
    assert options["rp"] == {"id": "localhost", "name": "Machine Identity Portal"}
    assert options["user"]["name"] == "audrey"
    assert (credential.user, credential.credential_id, credential.name) == (
        auditor,
        passkey.credential_id,
        f"passkey {credential.pk}",
    )
    assert credential.binding == passkey_binding(
        user_id=auditor.pk, credential_id=passkey.credential_id, public_key=credential.public_key
    )
    assert _events("console.mfa_enrolled") == [
        (
            "audrey",
            "audrey",
            "success",
            "",
            {"device": "webauthn", "credential": credential.pk, "recovery_codes": 0},
        )
    ]
    assert StaticToken.objects.count() == 0


def test_a_first_passkey_enrols_verifies_the_session_and_shows_recovery_codes_once(
    client, auditor, passkeys_on
):
    client.force_login(auditor)  # password only, no second factor yet
    assert client.get("/console/")["Location"].startswith("/console/mfa/")
    session_before = client.session.session_key

    response = _register(client, SoftPasskey())

    body = response.json()
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    assert len(body["recovery_codes"]) == 10
    assert all(len(code) == 14 and code.count("-") == 2 for code in body["recovery_codes"])
    assert StaticToken.objects.filter(device__user=auditor).count() == 10
    assert client.session.session_key != session_before
    assert _verified(client)
    assert _events("console.mfa_enrolled")[0][4]["recovery_codes"] == 10
    # Shown once: the codes are stored as digests only.
    stored = set(StaticToken.objects.values_list("token", flat=True))
    assert not stored & {code.replace("-", "") for code in body["recovery_codes"]}


def test_an_enrolled_user_cannot_add_a_passkey_with_the_password_alone(
    client, auditor, passkeys_on
):
    TOTPDevice.objects.create(user=auditor, name="authenticator", confirmed=True)
    client.force_login(auditor)

    response = client.post(REGISTER_BEGIN)

    assert response.status_code == 403
    assert response.json()["code"] == "user_not_verified"
    assert _post_json(client, REGISTER_COMPLETE, {}).status_code == 403
    assert not PasskeyCredential.objects.exists()
    assert _events("console.mfa_enrolled") == []


def test_a_registration_answer_for_another_challenge_stores_nothing(client, auditor, passkeys_on):
    console_login(client, auditor)
    client.post(REGISTER_BEGIN)

    response = _post_json(client, REGISTER_COMPLETE, SoftPasskey().create({"challenge": "AAAA"}))

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_registration_response"
    assert not PasskeyCredential.objects.exists()
    assert _events("console.mfa_enrolled") == []


# --- sign-in with a passkey -----------------------------------------------------------


def test_a_user_signs_in_with_their_passkey_instead_of_a_code(client, auditor, registered):
    client.force_login(auditor)
    page = client.get("/console/mfa/?next=/console/audit/")
    assert b'id="passkey-verification-placeholder"' in page.content
    assert page.context["webauthn_config"]["beginAuthenticationUrl"] == AUTH_BEGIN

    options = client.post(AUTH_BEGIN).json()
    response = _post_json(client, f"{AUTH_COMPLETE}?next=/console/audit/", registered.get(options))

    credential = PasskeyCredential.objects.get()
    assert response.status_code == 200
    assert response.json() == {"id": credential.pk, "redirect_url": "/console/audit/"}
    assert options["allowCredentials"] == [
        {"id": b64url(registered.credential_id), "type": "public-key", "transports": ["internal"]}
    ]
    assert _verified(client)
    assert (credential.sign_count, credential.last_used_at is not None) == (1, True)
    assert _events("console.mfa_verified") == [
        ("audrey", "audrey", "success", "", {"method": "webauthn", "credential": credential.pk})
    ]


def test_an_unsafe_next_is_not_followed(client, auditor, registered):
    client.force_login(auditor)
    options = client.post(AUTH_BEGIN).json()

    response = _post_json(
        client, f"{AUTH_COMPLETE}?next=https://evil.example/", registered.get(options)
    )

    assert response.json()["redirect_url"] == "/console/"


def test_a_failed_assertion_is_recorded_and_verifies_nothing(client, auditor, registered):
    client.force_login(auditor)
    options = client.post(AUTH_BEGIN).json()

    response = _post_json(client, AUTH_COMPLETE, registered.get(options, tamper=True))

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_authentication_response"
    assert not _verified(client)
    assert PasskeyCredential.objects.get().sign_count == 0
    assert _events("console.mfa_verified") == []
    assert _events("console.mfa_failed") == [
        (
            "audrey",
            "audrey",
            "failure",
            "invalid_authentication_response",
            {"method": "webauthn"},
        )
    ]


def test_an_assertion_is_accepted_once(client, auditor, registered):
    client.force_login(auditor)
    assertion = registered.get(client.post(AUTH_BEGIN).json())
    assert _post_json(client, AUTH_COMPLETE, assertion).status_code == 200
    other = client.__class__()
    other.force_login(auditor)

    replayed = _post_json(other, AUTH_COMPLETE, assertion)

    assert replayed.status_code == 400
    assert replayed.json()["code"] == "invalid_state"
    assert not _verified(other)
    assert [e[3] for e in _events("console.mfa_failed")] == ["invalid_state"]


def test_another_users_passkey_does_not_verify_this_user(client, auditor, registered):
    mallory = User.objects.create_user(username="mallory", password="correct horse battery")
    mallory.groups.add(Group.objects.get(name=AUDITORS))
    client.force_login(mallory)
    options = client.post(AUTH_BEGIN).json()

    response = _post_json(client, AUTH_COMPLETE, registered.get(options))

    assert response.status_code == 403
    assert response.json()["code"] == "credential_user_mismatch"
    assert options["allowCredentials"] == []
    assert not _verified(client)
    assert _events("console.mfa_failed")[0][:4] == (
        "mallory",
        "mallory",
        "failure",
        "credential_user_mismatch",
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"text"',
        b"1",
        b"null",
        b"{}",
        b'{"id": 1}',
        b'{"id": "AA", "rawId": "AA", "type": "public-key", "response": []}',
        b'{"id": "AA", "rawId": "AA", "type": "public-key", "response": {"clientDataJSON": "!"}}',
        b'{"id": "\\u0000", "rawId": "\\u0000", "type": "x", "response": {}}',
        b'{"id": "AA", "rawId": "AA", "type": "public-key", "response": '
        b'{"clientDataJSON": "e30", "authenticatorData": "AA", "signature": "AA"}}',
    ],
)
@pytest.mark.parametrize("url", [REGISTER_COMPLETE, AUTH_COMPLETE])
def test_malformed_ceremony_answers_get_a_4xx_and_change_nothing(
    client, auditor, passkeys_on, url, body
):
    console_login(client, auditor) if url == REGISTER_COMPLETE else client.force_login(auditor)
    client.post(REGISTER_BEGIN if url == REGISTER_COMPLETE else AUTH_BEGIN)
    enrolled_before = _events("console.mfa_enrolled")

    response = client.post(url, body, content_type="application/json")

    assert 400 <= response.status_code < 500
    assert response["Content-Type"] == "application/json"
    assert not PasskeyCredential.objects.exists()
    assert _events("console.mfa_enrolled") == enrolled_before
    assert _events("console.mfa_verified") == []


def test_the_ceremonies_refuse_anyone_without_a_console_role(client, passkeys_on):
    nobody = User.objects.create_user(username="nobody", password="correct horse battery")

    anonymous = [client.post(url).status_code for url in (REGISTER_BEGIN, AUTH_BEGIN)]
    client.force_login(nobody)
    roleless = [client.post(url) for url in (REGISTER_BEGIN, AUTH_BEGIN)]

    assert anonymous == [403, 403]
    assert [(r.status_code, r.json()["code"]) for r in roleless] == [
        (403, "not_authenticated"),
        (403, "not_authenticated"),
    ]


def test_passkeys_are_not_offered_where_browsers_cannot_use_them(client, auditor):
    # The test settings' ISSUER is http://127.0.0.1:...: an IP address is no RP ID.
    client.force_login(auditor)

    response = client.post(REGISTER_BEGIN)
    page = client.get("/console/mfa/")

    assert (response.status_code, response.json()["code"]) == (404, "passkeys_unavailable")
    assert page.context["webauthn_config"] is None
    assert b"passkey-registration-placeholder" not in page.content
    console_login(client, auditor)
    assert client.get(PAGE).status_code == 404
    assert b"passkeys-link" not in client.get("/console/").content


# --- the passkeys page: list and removal ----------------------------------------------


def test_the_page_lists_the_users_passkeys_and_removes_one(client, auditor, registered):
    console_login(client, auditor)
    credential = PasskeyCredential.objects.get()

    page = client.get(PAGE)
    assert page.status_code == 200
    assert [row["id"] for row in page.context["passkeys"]] == [credential.pk]
    assert b'id="passkeys-link"' in page.content
    response = client.post(f"{PAGE}{credential.pk}/remove/")

    assert response.status_code == 302
    assert not PasskeyCredential.objects.exists()
    assert _events("console.mfa_device_removed") == [
        ("audrey", "audrey", "success", "", {"device": "webauthn", "credential": credential.pk})
    ]


def test_the_only_second_factor_is_not_removed(client, auditor, passkeys_on):
    client.force_login(auditor)
    _register(client, SoftPasskey())  # enrolled with a passkey alone, session verified
    credential = PasskeyCredential.objects.get()

    response = client.post(f"{PAGE}{credential.pk}/remove/", follow=True)

    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == [
        "This passkey is your only second factor: add another passkey before removing it."
    ]
    assert PasskeyCredential.objects.filter(pk=credential.pk).exists()
    assert _events("console.mfa_device_removed") == []


def test_the_ceremonies_need_the_csrf_token(auditor, passkeys_on):
    client = Client(enforce_csrf_checks=True)
    console_login(client, auditor)

    response = client.post(REGISTER_BEGIN)

    assert response.status_code == 403
    assert "otp_webauthn_register_state" not in client.session


def test_nobody_removes_another_users_passkey(client, auditor, registered, admin_user):
    console_login(client, admin_user)
    credential = PasskeyCredential.objects.get()

    response = client.post(f"{PAGE}{credential.pk}/remove/")

    assert response.status_code == 404
    assert PasskeyCredential.objects.filter(pk=credential.pk).exists()
    assert _events("console.mfa_device_removed") == []
    assert client.get(f"{PAGE}{credential.pk}/remove/").status_code == 405


def test_the_page_needs_the_second_factor(client, auditor, registered):
    client.force_login(auditor)

    response = client.get(PAGE)

    assert response.status_code == 302
    assert response["Location"].startswith("/console/mfa/")


def test_a_superusers_reset_removes_passkeys_too(client, auditor, registered, admin_user):
    victim = client.__class__()
    victim.force_login(auditor)
    victim_options = victim.post(AUTH_BEGIN).json()
    assert _post_json(victim, AUTH_COMPLETE, registered.get(victim_options)).status_code == 200
    console_login(client, admin_user)

    client.post(f"/console/auth/user/{auditor.pk}/reset-mfa/")

    assert not PasskeyCredential.objects.exists()
    assert _events("console.mfa_reset") == [
        ("root-admin", "audrey", "success", "", {"devices_removed": 2, "passkeys_removed": 1})
    ]
    assert not _verified(victim)  # the session verified by the passkey is verified no more


# --- rows the portal did not write ----------------------------------------------------


def test_a_passkey_planted_in_the_database_verifies_nobody(client, auditor, passkeys_on):
    passkey = SoftPasskey()
    planted = PasskeyCredential.objects.create(
        user=auditor,
        name="planted",
        credential_id=passkey.credential_id,
        public_key=passkey._cose_public_key(),
        binding="0" * 64,
    )
    client.force_login(auditor)
    options = client.post(AUTH_BEGIN).json()

    response = _post_json(client, AUTH_COMPLETE, passkey.get(options))

    assert (response.status_code, response.json()["code"]) == (403, "credential_unbound")
    assert not _verified(client)
    planted.refresh_from_db()
    assert (planted.sign_count, planted.last_used_at) == (0, None)
    assert _events("console.mfa_verified") == []
    assert _events("console.mfa_failed") == [
        ("audrey", "audrey", "failure", "credential_unbound", {"method": "webauthn"})
    ]


def test_a_passkey_moved_to_another_user_verifies_nobody(client, auditor, registered):
    mallory = User.objects.create_user(username="mallory", password="correct horse battery")
    mallory.groups.add(Group.objects.get(name=AUDITORS))
    PasskeyCredential.objects.update(user=mallory)  # a database writer's edit
    client.force_login(mallory)
    options = client.post(AUTH_BEGIN).json()

    response = _post_json(client, AUTH_COMPLETE, registered.get(options))

    assert (response.status_code, response.json()["code"]) == (403, "credential_unbound")
    assert not _verified(client)
    console_login(client, mallory)
    assert b"not registered by the portal" in client.get(PAGE).content


def test_production_warns_when_passkeys_are_off(settings):
    settings.PRODUCTION = True
    off = production_passkeys()
    settings.WEBAUTHN_RP_ID, settings.WEBAUTHN_ORIGINS = (
        "portal.example",
        ["https://portal.example"],
    )
    on = production_passkeys()

    assert [(m.level, m.id) for m in off] == [(30, "identity_portal.W009")]
    assert on == []
