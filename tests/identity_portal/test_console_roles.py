"""Who gets into the console and what each role is shown: roles, not the staff flag."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import RequestFactory
from django.views.defaults import server_error

from audit.models import AuditEvent
from core.roles import AUDITORS, SECURITY_ADMINS
from tests.fixtures.core import console_login

pytestmark = pytest.mark.django_db

User = get_user_model()
PASSWORD = "correct horse battery"


def _holder(username: str, *groups: str, staff: bool = False):
    user = User.objects.create_user(username=username, password=PASSWORD, is_staff=staff)
    for name in groups:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    return user


def _sign_in(client, username: str):
    return client.post(
        "/console/login/?next=/console/", {"username": username, "password": PASSWORD}
    )


@pytest.mark.parametrize("group", [AUDITORS, SECURITY_ADMINS])
def test_a_role_without_the_staff_flag_lets_one_in(client, group):
    _holder("holder", group)

    response = _sign_in(client, "holder")

    assert response.status_code == 302
    assert response["Location"] == "/console/"
    assert "_auth_user_id" in client.session


@pytest.mark.parametrize("staff", [False, True])
def test_without_a_role_the_password_is_refused_with_the_reason(client, staff):
    _holder("nobody", staff=staff)

    response = _sign_in(client, "nobody")

    assert response.status_code == 200
    assert "This account holds no console role" in response.text
    assert "_auth_user_id" not in client.session


def test_the_user_list_shows_each_accounts_roles_and_second_factor(client, admin_user):
    _holder("audrey", AUDITORS)
    _holder("sam", SECURITY_ADMINS, AUDITORS)
    _holder("nobody")
    console_login(client, admin_user)

    response = client.get("/console/auth/user/")

    rows = {
        row.username: (admin.roles(row), admin.two_factor(row))
        for admin in [response.context["cl"].model_admin]
        for row in response.context["cl"].result_list
    }
    assert rows == {
        "root-admin": ("Superuser", True),
        "audrey": ("Auditor", False),
        "sam": ("Security admin, Auditor", False),
        "nobody": ("none (cannot sign in)", False),
    }
    assert "Security admin, Auditor" in response.text


def test_a_superuser_assigns_only_the_role_groups_and_no_django_permissions(client, admin_user):
    Group.objects.create(name="some-other-group")
    audrey = _holder("audrey", AUDITORS)
    console_login(client, admin_user)

    form = client.get(f"/console/auth/user/{audrey.pk}/change/").context["adminform"].form

    assert sorted(form.fields["groups"].queryset.values_list("name", flat=True)) == [
        AUDITORS,
        SECURITY_ADMINS,
    ]
    assert "user_permissions" not in form.fields
    assert "is_staff" not in form.fields


def test_an_auditor_is_shown_no_control_it_may_not_use(client, admin_user):
    auditor = _holder("audrey", AUDITORS)
    console_login(client, auditor)

    users = client.get("/console/auth/user/")
    page = client.get(f"/console/auth/user/{admin_user.pk}/change/")

    assert users.status_code == page.status_code == 200
    for text in (users.text, page.text):
        assert "Reset password" not in text
        assert "Reset two-factor sign-in" not in text
        assert 'name="_save"' not in text
        assert "/console/auth/user/add/" not in text
        assert 'name="action"' not in text


def test_a_security_admin_cannot_change_accounts_and_the_attempt_is_recorded(client, admin_user):
    sam = _holder("sam", SECURITY_ADMINS)
    console_login(client, sam)
    before = AuditEvent.objects.count()

    response = client.post(
        f"/console/auth/user/{sam.pk}/change/",
        {"username": "sam", "is_active": "on", "is_superuser": "on"},
    )

    assert response.status_code == 403
    sam.refresh_from_db()
    assert sam.is_superuser is False
    assert list(
        AuditEvent.objects.order_by("id")[before:].values_list(
            "event_type", "actor_display", "outcome", "reason"
        )
    ) == [("console.access_denied", "sam", "failure", "forbidden")]


def test_the_error_pages_are_the_consoles_own(client, admin_user):
    console_login(client, admin_user)

    missing = client.get("/console/no-such-page/")
    crashed = server_error(RequestFactory().get("/"))

    assert missing.status_code == 404
    assert "Nothing here" in missing.text and "console.css" in missing.text
    assert crashed.status_code == 500
    assert b"Something went wrong on our side" in crashed.content
    assert b"console.css" in crashed.content


def test_django_otps_own_device_pages_are_gone(client, admin_user):
    """They would show authenticator keys and ignore the roles; the user page is the place."""
    console_login(client, admin_user)

    for page in ("otp_totp/totpdevice", "otp_static/staticdevice"):
        assert client.get(f"/console/{page}/").status_code == 404
