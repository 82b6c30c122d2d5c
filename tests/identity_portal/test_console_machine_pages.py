"""The machine pages: registration, the one-time secret page, and the machine's own page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from audit.models import AuditEvent
from clients.models import ClientSecret, Machine
from tests.fixtures.core import console_login
from tokens.choices import KeyAlgorithm
from tokens.models import IssuedToken


def _role(name: str, group: str):
    user = get_user_model().objects.create_user(
        username=name, password="correct horse battery", is_staff=True
    )
    user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def admin_client(client, db):
    console_login(client, _role("sec", "security-admins"))
    return client


@pytest.fixture
def auditor_client(client, db):
    console_login(client, _role("aud", "auditors"))
    return client


def _register(client, **overrides):
    form = {
        "name": "orders-sync",
        "owner_team": "payments",
        "owner_email": "",
        "access_token_ttl": "600",
        "ip_allowlist": "",
        "auth_methods": ["client_secret_basic", "client_secret_post"],
        **overrides,
    }
    return client.post("/console/clients/machine/add/", form)


def _events(*types: str) -> list[str]:
    return list(
        AuditEvent.objects.filter(event_type__in=types).values_list("event_type", flat=True)
    )


def test_the_registration_form_is_short_and_labelled(admin_client):
    response = admin_client.get("/console/clients/machine/add/")

    form = response.context["adminform"].form
    assert list(form.fields) == [
        "name",
        "owner_team",
        "owner_email",
        "allowed_scopes",
        "allowed_audiences",
        "access_token_ttl",
        "ip_allowlist",
        "auth_methods",
    ]
    assert form.fields["ip_allowlist"].label == "Allowed source addresses"
    assert form.fields["access_token_ttl"].label == "Token lifetime (seconds)"
    assert (
        'type="checkbox"' in response.content.decode() or not form.fields["allowed_scopes"].choices
    )


def test_a_machine_that_could_never_get_a_token_is_refused(admin_client, scope_read):
    response = _register(admin_client, allowed_scopes=[scope_read.pk])

    errors = response.context["adminform"].form.errors
    assert list(errors) == ["allowed_audiences"]
    assert "could never get a token" in errors["allowed_audiences"][0]
    assert Machine.objects.count() == 0


def test_the_secret_page_has_copy_buttons_and_examples_of_this_machine(
    admin_client, scope_read, audience_api, settings
):
    response = _register(
        admin_client, allowed_scopes=[scope_read.pk], allowed_audiences=[audience_api.pk]
    )

    body = response.content.decode()
    machine = Machine.objects.get(name="orders-sync")
    raw = body.split('<code id="client-secret">', 1)[1].split("</code>", 1)[0]
    assert 'data-copy="client-secret"' in body and "console/console.js" in body
    assert f'curl -s -u "{machine.client_id}:$CLIENT_SECRET"' in body
    assert '-d scope="read"' in body and "-d resource=https://api.example" in body
    assert f"{settings.ISSUER}/oauth/token" in body
    assert '"client_secret": os.environ["CLIENT_SECRET"]' in body
    assert body.count(raw) == 1  # the examples read it from the environment
    assert "no-store" in response["Cache-Control"]
    assert "<script>" not in body


def test_the_machine_page_shows_state_credentials_activity_and_actions(
    admin_client, machine_and_secret
):
    machine, _ = machine_and_secret

    body = admin_client.get(f"/console/clients/machine/{machine.pk}/change/").content.decode()

    assert '<span class="badge enabled">enabled</span>' in body
    assert 'id="disable-machine"' in body and 'id="revoke-tokens"' in body
    assert f"/console/audit/?machine={machine.client_id}" in body
    assert "machine.registered" in body  # its activity, from the audit trail
    assert '<span class="badge active">usable</span>' in body
    assert "View on site" not in body and "View site" not in body


def test_disable_enable_and_revoke_tokens_write_through_services(
    admin_client, machine_and_secret, signing_key
):
    machine, _ = machine_and_secret
    live = IssuedToken.objects.create(
        jti="j1",
        checksum="c" * 64,
        machine=machine,
        audience="https://api.example",
        issued_at=timezone.now(),
        expires_at=timezone.now() + timedelta(minutes=5),
        signing_key=signing_key,
    )
    base = f"/console/machines/{machine.pk}"

    disabled = admin_client.post(f"{base}/disable/")
    machine.refresh_from_db()
    was_enabled = machine.enabled
    enabled = admin_client.post(f"{base}/enable/")
    revoked = admin_client.post(f"{base}/revoke-tokens/")

    machine.refresh_from_db()
    live.refresh_from_db()
    assert (disabled.status_code, enabled.status_code, revoked.status_code) == (302, 302, 302)
    assert (was_enabled, machine.enabled, live.revoked_at is not None) == (False, True, True)
    assert _events("machine.disabled", "machine.enabled", "token.revoked") == [
        "machine.disabled",
        "machine.enabled",
        "token.revoked",
    ]
    event = AuditEvent.objects.get(event_type="token.revoked")
    assert (event.target_id, event.details) == (
        machine.client_id,
        {"all_of_machine": True, "revoked": 1},
    )


def test_auditors_see_no_control_and_are_refused_when_forcing(auditor_client, machine_and_secret):
    machine, _ = machine_and_secret
    before = AuditEvent.objects.count()

    page = auditor_client.get(f"/console/clients/machine/{machine.pk}/change/").content.decode()
    forced = [
        auditor_client.post(f"/console/machines/{machine.pk}/{action}/").status_code
        for action in ("disable", "enable", "revoke-tokens")
    ]

    machine.refresh_from_db()
    assert "disable-machine" not in page and "revoke-tokens" not in page
    assert "Rotate secret" not in page and "Revoke now" not in page
    assert forced == [403, 403, 403]
    assert machine.enabled is True
    # Nothing changed; each refusal is on the record (the console's role gate audits it).
    new = AuditEvent.objects.order_by("id")[before:]
    assert [(e.event_type, e.outcome, e.details) for e in new] == [
        ("console.access_denied", "failure", {"method": "POST", "path": path})
        for path in (
            f"/console/machines/{machine.pk}/disable/",
            f"/console/machines/{machine.pk}/enable/",
            f"/console/machines/{machine.pk}/revoke-tokens/",
        )
    ]


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [
        ("/console/machines/{pk}/explode/", "post", 404),
        ("/console/machines/999999/disable/", "post", 404),
        ("/console/machines/{pk}/disable/", "get", 405),
    ],
)
def test_bad_machine_actions(admin_client, machine_and_secret, path, method, status):
    machine, _ = machine_and_secret

    response = getattr(admin_client, method)(path.format(pk=machine.pk))

    machine.refresh_from_db()
    assert response.status_code == status
    assert machine.enabled is True


def test_rotation_offers_grace_choices(admin_client, machine_and_secret):
    machine, _ = machine_and_secret

    form = admin_client.get(f"/console/clients/machine/{machine.pk}/rotate-secret/")
    bad = admin_client.post(f"/console/clients/machine/{machine.pk}/rotate-secret/", {"grace": "5"})
    good = admin_client.post(
        f"/console/clients/machine/{machine.pk}/rotate-secret/", {"grace": "3600"}
    )

    choices = [value for value, _ in form.context["form"].fields["grace"].choices]
    assert choices == [0, 3600, 86400, 604800, 2592000]
    assert bad.status_code == 200 and bad.context["form"].errors
    assert good.status_code == 200
    usable = ClientSecret.objects.filter(machine=machine, revoked_at__isnull=True)
    assert usable.count() == 2


def test_algorithms_read_as_the_rfcs_spell_them():
    assert [label for _, label in KeyAlgorithm.choices] == ["ES256", "EdDSA", "RS256"]


def test_a_machines_sub_pages_lead_back_to_it_in_their_breadcrumbs(
    admin_client, machine_and_secret
):
    machine, _ = machine_and_secret
    change = f"/console/clients/machine/{machine.pk}/change/"
    step = " \N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK} "
    trail = (
        f'<div class="breadcrumbs"><a href="/console/">Home</a>{step}'
        f'<a href="/console/clients/machine/">Machines</a>{step}'
        f'<a href="{change}">{machine.name}</a>{step}'
    )

    rotate = admin_client.get(f"/console/clients/machine/{machine.pk}/rotate-secret/")
    add_key = admin_client.get(f"/console/clients/machine/{machine.pk}/keys/add/")
    rotated = admin_client.post(
        f"/console/clients/machine/{machine.pk}/rotate-secret/", {"grace": "3600"}
    )

    assert trail + f"Rotate the secret of {machine}</div>" in rotate.content.decode()
    assert trail + f"Add a public key to {machine}</div>" in add_key.content.decode()
    assert trail + "Secret rotated</div>" in rotated.content.decode()


def test_the_machine_page_writes_times_in_utc_and_labels_in_words(admin_client, machine_and_secret):
    machine, _ = machine_and_secret

    body = admin_client.get(f"/console/clients/machine/{machine.pk}/change/").content.decode()

    assert f'<div class="readonly">{machine.created:%Y-%m-%d %H:%M:%S} UTC</div>' in body
    assert "a.m." not in body and "p.m." not in body
    # Labels as a reader spells them, not the column names.
    assert "<label>Last used from (address):</label>" in body
    assert '<label for="id_jwks_uri">JWKS URL (its private_key_jwt keys):</label>' in body
    assert "Last used ip" not in body and "Jwks uri" not in body
