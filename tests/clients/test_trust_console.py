"""The console's trust pages: security admins add and remove through the services, auditors look."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.urls import reverse

from audit.models import AuditEvent
from clients.federation.services import trust_add
from clients.federation.templates import GITHUB_ISSUER
from clients.models import FederationTrust
from tests.fixtures.core import console_login

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:clients_federationtrust_add")
LIST_URL = reverse("admin:clients_federationtrust_changelist")


def _login(client, name: str, group: str | None):
    user = get_user_model().objects.create_user(
        username=name, password="correct horse battery", is_staff=True
    )
    if group:
        user.groups.add(Group.objects.get(name=group))
    console_login(client, user)
    return user


@pytest.fixture
def machine(machine_and_secret, clean_cache):
    return machine_and_secret[0]


def _github_form(machine, **overrides):
    data = {
        "machine": str(machine.pk),
        "template": "github",
        "repository": "acme/billing",
        "ref": "refs/heads/main",
        "audience": "https://portal.example",
        "description": "deploys",
    }
    return {**data, **overrides}


def test_a_security_admin_adds_a_github_trust_from_the_template(client, machine):
    _login(client, "sec", "security-admins")

    response = client.post(ADD_URL, _github_form(machine))

    assert response.status_code == 302
    trust = FederationTrust.objects.get()
    assert (trust.issuer, trust.subject, trust.condition, trust.template) == (
        GITHUB_ISSUER,
        "",
        'claims.repository == "acme/billing" && claims.ref == "refs/heads/main"',
        "github",
    )
    event = AuditEvent.objects.get(event_type="trust.added")
    assert (event.actor_kind, event.actor_display) == ("user", "sec")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"repository": ""}, "repository"),
        ({"template": "", "issuer": GITHUB_ISSUER}, "subject, a condition"),
        ({"template": "", "issuer": "http://x", "subject": "s"}, "https://"),
        ({"condition": "claims.repository =="}, "Not a valid CEL expression"),
    ],
)
def test_refused_forms_show_the_error_and_change_nothing(client, machine, overrides, message):
    _login(client, "sec", "security-admins")
    events = AuditEvent.objects.count()

    response = client.post(ADD_URL, _github_form(machine, **overrides))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert FederationTrust.objects.count() == 0
    assert AuditEvent.objects.count() == events


def test_an_auditor_sees_trusts_but_cannot_add_or_remove(client, machine, cli_actor):
    trust = trust_add(
        actor=cli_actor,
        machine=machine,
        issuer=GITHUB_ISSUER,
        audience="a",
        condition='claims.repository == "acme/billing"',
    )
    _login(client, "aud", "auditors")

    assert client.get(LIST_URL).status_code == 200
    detail = client.get(reverse("admin:clients_federationtrust_change", args=[trust.pk]))
    assert detail.status_code == 200
    assert client.post(ADD_URL, _github_form(machine)).status_code == 403
    delete_url = reverse("admin:clients_federationtrust_delete", args=[trust.pk])
    assert client.post(delete_url, {"post": "yes"}).status_code == 403
    assert FederationTrust.objects.count() == 1


def test_staff_without_a_role_sees_nothing(client, machine):
    # Holding no role, the account is not let into the console at all: sent to sign in.
    _login(client, "nobody", None)
    listed = client.get(LIST_URL)
    posted = client.post(ADD_URL, _github_form(machine))
    assert (listed.status_code, posted.status_code) == (302, 302)
    assert listed["Location"].startswith("/console/login/")
    assert FederationTrust.objects.count() == 0


def test_a_security_admin_removes_a_trust_through_the_service(client, machine, cli_actor):
    trust = trust_add(
        actor=cli_actor, machine=machine, issuer=GITHUB_ISSUER, audience="a", subject="s"
    )
    _login(client, "sec", "security-admins")

    delete_url = reverse("admin:clients_federationtrust_delete", args=[trust.pk])
    response = client.post(delete_url, {"post": "yes"})

    assert response.status_code == 302
    assert FederationTrust.objects.count() == 0
    event = AuditEvent.objects.get(event_type="trust.removed")
    assert event.details["trust_id"] == str(trust.uid)


def test_a_trust_page_is_never_an_edit_form(client, machine, cli_actor):
    trust = trust_add(
        actor=cli_actor, machine=machine, issuer=GITHUB_ISSUER, audience="a", subject="s"
    )
    _login(client, "sec", "security-admins")
    url = reverse("admin:clients_federationtrust_change", args=[trust.pk])

    client.post(url, {"issuer": "https://evil.example", "audience": "a", "subject": "s"})

    trust.refresh_from_db()
    assert trust.issuer == GITHUB_ISSUER
