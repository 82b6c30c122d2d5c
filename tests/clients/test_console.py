"""The console pages: services do the writes, the raw secret is shown once, roles hold."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session

from audit.context import RequestContext
from audit.models import AuditEvent
from clients.authentication import ClientCredentials, client_authenticate
from clients.models import Audience, ClientSecret, Machine, Scope
from clients.services import machine_delete, machine_disable


def _user(name: str, group: str):
    user = get_user_model().objects.create_user(
        username=name, password="correct horse battery", is_staff=True
    )
    user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def security_admin(db):
    return _user("sec", "security-admins")


@pytest.fixture
def auditor(db):
    return _user("aud", "auditors")


def _works(client_id, raw):
    return client_authenticate(
        credentials=ClientCredentials(client_id=client_id, secret=raw, method="client_secret_post"),
        context=RequestContext(source_ip="192.0.2.1"),
    ).machine


def _add_form(**overrides):
    data = {
        "name": "console-machine",
        "description": "",
        "owner_team": "payments",
        "owner_email": "ops@example.test",
        "tags": "prod, eu",
        "access_token_ttl": "600",
        "max_secret_age": "",
        "rotation_grace": "86400",
        "ip_allowlist": "",
        "auth_methods": ["client_secret_basic", "client_secret_post"],
    }
    data.update(overrides)
    return data


def _only_secret_in(content: str) -> str:
    marker = '<code id="client-secret">'
    return content.split(marker, 1)[1].split("</code>", 1)[0]


def test_registering_shows_the_secret_once(client, security_admin, scope_read, audience_api):
    client.force_login(security_admin)

    response = client.post(
        "/console/clients/machine/add/",
        _add_form(allowed_scopes=[scope_read.pk], allowed_audiences=[audience_api.pk]),
    )

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    raw = _only_secret_in(response.content.decode())
    machine = Machine.objects.get(name="console-machine")
    assert _works(machine.client_id, raw).pk == machine.pk
    assert (machine.tags, machine.created_by, machine.owner_team) == (
        ["prod", "eu"],
        security_admin,
        "payments",
    )
    assert AuditEvent.objects.get(event_type="machine.registered").actor_id == str(
        security_admin.pk
    )
    # Never again: not on the machine's page, not in the session.
    page = client.get(f"/console/clients/machine/{machine.pk}/change/")
    assert page.status_code == 200
    assert raw not in page.content.decode()
    assert all(raw not in str(s.get_decoded()) for s in Session.objects.all())


def test_bad_input_shows_errors_and_changes_nothing(client, security_admin, scope_read):
    client.force_login(security_admin)

    response = client.post(
        "/console/clients/machine/add/",
        _add_form(ip_allowlist="10.0.0.0/99", access_token_ttl="999999"),
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"ip_allowlist", "access_token_ttl"}
    assert (Machine.objects.count(), ClientSecret.objects.count()) == (0, 0)


def test_rotate_and_revoke_from_the_console(client, security_admin, machine_and_secret):
    machine, old = machine_and_secret
    client.force_login(security_admin)

    form = client.get(f"/console/clients/machine/{machine.pk}/rotate-secret/")
    rotated = client.post(f"/console/clients/machine/{machine.pk}/rotate-secret/", {"grace": "0"})
    new = _only_secret_in(rotated.content.decode())
    old_row = ClientSecret.objects.get(machine=machine, digest__isnull=False, last_four=old[-4:])
    revoked = client.post(f"/console/clients/machine/{machine.pk}/secrets/{old_row.pk}/revoke/")

    assert form.status_code == 200
    assert form.context["form"].initial == {"grace": 86400}
    assert "no-store" in rotated["Cache-Control"]
    assert new.startswith("mip_cs_") and new != old
    assert revoked.status_code == 302
    old_row.refresh_from_db()
    assert old_row.revoked_at is not None
    assert [e for e in AuditEvent.objects.values_list("event_type", flat=True)][-2:] == [
        "secret.rotated",
        "secret.revoked",
    ]


def test_auditors_look_but_do_not_touch(client, auditor, machine_and_secret):
    machine, _ = machine_and_secret
    client.force_login(auditor)
    before = (AuditEvent.objects.count(), ClientSecret.objects.count())

    page = client.get(f"/console/clients/machine/{machine.pk}/change/")
    add = client.get("/console/clients/machine/add/")
    change = client.post(f"/console/clients/machine/{machine.pk}/change/", _add_form())
    rotate = client.post(f"/console/clients/machine/{machine.pk}/rotate-secret/", {"grace": "0"})
    secret = ClientSecret.objects.get(machine=machine)
    revoke = client.post(f"/console/clients/machine/{machine.pk}/secrets/{secret.pk}/revoke/")

    assert page.status_code == 200
    assert "Revoke now" not in page.content.decode()
    assert (add.status_code, change.status_code, rotate.status_code, revoke.status_code) == (
        403,
        403,
        403,
        403,
    )
    assert (AuditEvent.objects.count(), ClientSecret.objects.count()) == before


def test_staff_without_a_role_sees_nothing(client, db, machine_and_secret):
    machine, _ = machine_and_secret
    nobody = get_user_model().objects.create_user(
        username="staff", password="x" * 12, is_staff=True
    )
    client.force_login(nobody)

    response = client.get(f"/console/clients/machine/{machine.pk}/change/")

    assert response.status_code == 403


def test_delete_from_the_console_is_soft(client, security_admin, machine_and_secret):
    machine, _ = machine_and_secret
    client.force_login(security_admin)

    response = client.post(f"/console/clients/machine/{machine.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    machine.refresh_from_db()
    assert (machine.enabled, machine.deleted_at is not None) == (False, True)
    assert ClientSecret.objects.filter(machine=machine, revoked_at__isnull=True).count() == 0
    assert AuditEvent.objects.filter(event_type="machine.deleted").count() == 1


def test_scope_and_audience_admins_call_the_services(client, security_admin):
    client.force_login(security_admin)

    scope = client.post("/console/clients/scope/add/", {"name": "write", "description": "W"})
    bad = client.post("/console/clients/audience/add/", {"uri": "nope", "name": ""})
    audience = client.post(
        "/console/clients/audience/add/", {"uri": "https://orders.example", "name": "Orders"}
    )

    assert (scope.status_code, bad.status_code, audience.status_code) == (302, 200, 302)
    assert list(Scope.objects.values_list("name", flat=True)) == ["write"]
    # force_login records console.login (main's console audit); only the services' events here.
    changes = AuditEvent.objects.exclude(event_type="console.login")
    assert list(changes.values_list("event_type", flat=True)) == [
        "scope.created",
        "audience.created",
    ]


def test_editing_a_machine_goes_through_machine_update(
    client, security_admin, machine_and_secret, scope_read, audience_api
):
    machine, _ = machine_and_secret
    client.force_login(security_admin)
    assert client.get("/console/clients/machine/add/").status_code == 200

    response = client.post(
        f"/console/clients/machine/{machine.pk}/change/",
        _add_form(
            name="renamed",
            allowed_scopes=[scope_read.pk],
            allowed_audiences=[audience_api.pk],
            default_audience=audience_api.pk,
            access_token_ttl="120",
            ip_allowlist="10.0.0.0/8\n192.0.2.0/24",
        ),
    )

    assert response.status_code == 302
    machine.refresh_from_db()
    assert (machine.name, machine.access_token_ttl, machine.ip_allowlist) == (
        "renamed",
        120,
        ["10.0.0.0/8", "192.0.2.0/24"],
    )
    event = AuditEvent.objects.get(event_type="machine.updated")
    assert event.details["changed"] == [
        "access_token_ttl",
        "default_scopes",
        "ip_allowlist",
        "name",
        "owner_email",
        "owner_team",
        "tags",
    ]


@pytest.mark.parametrize("role", ["security_admin", "auditor"])
def test_list_pages_render_for_both_roles(client, request, role, machine_and_secret):
    client.force_login(request.getfixturevalue(role))

    pages = [
        client.get(url)
        for url in (
            "/console/",
            "/console/clients/machine/",
            "/console/clients/scope/",
            "/console/clients/audience/",
            f"/console/clients/scope/{Scope.objects.get().pk}/change/",
        )
    ]

    assert [page.status_code for page in pages] == [200, 200, 200, 200, 200]
    assert "billing-job" in pages[1].content.decode()


def _action(client, action, machine):
    return client.post(
        "/console/clients/machine/", {"action": action, "_selected_action": [machine.pk]}
    )


@pytest.mark.parametrize("action", ["disable_selected", "enable_selected"])
def test_auditors_cannot_run_the_machine_actions(
    client, auditor, machine_and_secret, cli_actor, action
):
    machine, _ = machine_and_secret
    if action == "enable_selected":
        machine_disable(actor=cli_actor, machine=machine)
    enabled = action == "disable_selected"
    client.force_login(auditor)
    before = AuditEvent.objects.count()

    response = _action(client, action, machine)

    assert response.status_code == 200
    machine.refresh_from_db()
    assert machine.enabled is enabled
    assert AuditEvent.objects.count() == before


def test_security_admins_run_the_machine_actions(client, security_admin, machine_and_secret):
    machine, _ = machine_and_secret
    client.force_login(security_admin)

    disabled = _action(client, "disable_selected", machine)
    machine.refresh_from_db()
    was_enabled = machine.enabled
    enabled = _action(client, "enable_selected", machine)
    machine.refresh_from_db()

    assert (disabled.status_code, enabled.status_code) == (302, 302)
    assert (was_enabled, machine.enabled) == (False, True)
    assert list(
        AuditEvent.objects.filter(target_id=machine.client_id)
        .order_by("id")
        .values_list("event_type", flat=True)
    ) == ["machine.registered", "secret.created", "machine.disabled", "machine.enabled"]


def test_a_bad_ipv6_audience_is_a_field_error(client, security_admin):
    client.force_login(security_admin)
    before = AuditEvent.objects.count()

    response = client.post("/console/clients/audience/add/", {"uri": "http://[::1", "name": ""})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "uri": ["An audience is an absolute http(s) or urn: URI, no fragment."]
    }
    assert (Audience.objects.count(), AuditEvent.objects.count()) == (0, before)


def test_a_huge_secret_age_is_a_field_error(client, security_admin, machine_and_secret):
    machine, raw = machine_and_secret
    client.force_login(security_admin)
    before = AuditEvent.objects.count()

    response = client.post(
        f"/console/clients/machine/{machine.pk}/change/",
        _add_form(name="billing-job", max_secret_age=str(10**15)),
    )

    assert response.status_code == 200
    assert set(response.context["adminform"].form.errors) == {"max_secret_age"}
    machine.refresh_from_db()
    assert machine.max_secret_age is None
    assert AuditEvent.objects.count() == before
    assert _works(machine.client_id, raw).pk == machine.pk


def test_a_deleted_machine_is_read_only_in_the_console(
    client, security_admin, machine_and_secret, cli_actor
):
    machine, _ = machine_and_secret
    machine_delete(actor=cli_actor, machine=machine)
    client.force_login(security_admin)
    before = AuditEvent.objects.count()

    page = client.get(f"/console/clients/machine/{machine.pk}/change/")
    save = client.post(
        f"/console/clients/machine/{machine.pk}/change/", _add_form(name="resurrected")
    )

    assert (page.status_code, save.status_code) == (200, 403)
    assert "Revoke now" not in page.content.decode()
    machine.refresh_from_db()
    assert (machine.name, machine.enabled) == ("billing-job", False)
    assert AuditEvent.objects.count() == before
