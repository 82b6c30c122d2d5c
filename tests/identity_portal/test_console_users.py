"""Console accounts and roles: gated on the roles, every change audited."""

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache

from audit.models import AuditEvent
from core.roles import AUDITORS, SECURITY_ADMINS
from identity_portal.services import first_admin_ensure
from tests.fixtures.core import console_login

pytestmark = pytest.mark.django_db

User = get_user_model()


def _member(username: str, group: str):
    user = User.objects.create_user(username=username, password="x" * 16, is_staff=True)
    user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def _change_form(user, **overrides):
    data = {
        "username": user.username,
        "first_name": "",
        "last_name": "",
        "email": "",
        "is_active": "on",
        "is_staff": "on",
        "groups": [g.pk for g in user.groups.all()],
        "last_login_0": "",
        "last_login_1": "",
        "date_joined_0": "2026-11-27",
        "date_joined_1": "12:00:00",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_a_superuser_grants_and_revokes_a_role_and_both_are_audited(client, admin_user):
    alice = _member("alice", AUDITORS)
    admins = Group.objects.get_or_create(name=SECURITY_ADMINS)[0]
    auditors = Group.objects.get(name=AUDITORS)
    console_login(client, admin_user)
    url = f"/console/auth/user/{alice.pk}/change/"

    granted = client.post(url, _change_form(alice, groups=[auditors.pk, admins.pk]))
    revoked = client.post(url, _change_form(alice, groups=[admins.pk]))

    assert granted.status_code == 302
    assert revoked.status_code == 302
    assert set(alice.groups.values_list("name", flat=True)) == {SECURITY_ADMINS}
    role_events = list(
        AuditEvent.objects.filter(event_type__startswith="role.")
        .order_by("id")
        .values_list("event_type", "actor_display", "target_display", "details")
    )
    assert role_events == [
        ("role.granted", "root-admin", "alice", {"role": SECURITY_ADMINS}),
        ("role.revoked", "root-admin", "alice", {"role": AUDITORS}),
    ]
    assert AuditEvent.objects.filter(event_type="user.updated", target_display="alice").count() == 2


def test_making_someone_superuser_is_a_role_grant(client, admin_user):
    bob = _member("bob", SECURITY_ADMINS)
    console_login(client, admin_user)

    response = client.post(
        f"/console/auth/user/{bob.pk}/change/", _change_form(bob, is_superuser="on")
    )

    assert response.status_code == 302
    assert list(
        AuditEvent.objects.filter(event_type="role.granted").values_list("details", flat=True)
    ) == [{"role": "superuser"}]


@pytest.mark.parametrize("role", [SECURITY_ADMINS, AUDITORS])
def test_non_superusers_cannot_change_accounts_or_escalate(client, role):
    actor = _member("actor", role)
    console_login(client, actor)

    listing = client.get("/console/auth/user/")
    escalate = client.post(
        f"/console/auth/user/{actor.pk}/change/", _change_form(actor, is_superuser="on")
    )
    add = client.post(
        "/console/auth/user/add/",
        {"username": "mallory", "password1": "p" * 16, "password2": "p" * 16},
    )
    group_edit = client.post(
        f"/console/auth/group/{Group.objects.get(name=role).pk}/change/", {"name": "renamed"}
    )

    assert listing.status_code == 200  # both roles may look
    assert escalate.status_code == 403
    assert add.status_code == 403
    assert group_edit.status_code == 403
    actor.refresh_from_db()
    assert actor.is_superuser is False
    assert not User.objects.filter(username="mallory").exists()
    assert Group.objects.filter(name=role).exists()
    assert not AuditEvent.objects.filter(event_type__in=["role.granted", "user.created"]).exists()


def test_staff_without_a_role_see_no_accounts(client):
    plain = User.objects.create_user(username="plain", password="x" * 16, is_staff=True)
    console_login(client, plain)

    response = client.get("/console/auth/user/")

    # No role, no console: the staff flag lets nobody in.
    assert response.status_code == 302
    assert response["Location"] == "/console/login/?next=/console/auth/user/"


def test_the_toolkits_own_token_pages_are_gone(client, admin_user):
    console_login(client, admin_user)

    for page in ("accesstoken", "refreshtoken", "idtoken", "grant"):
        assert client.get(f"/console/oauth2_provider/{page}/").status_code == 404


def test_the_first_admin_is_audited_as_created_by_first_run():
    first_admin_ensure()

    assert list(
        AuditEvent.objects.values_list("event_type", "actor_kind", "target_display", "details")
    ) == [
        (
            "user.created",
            "cli",
            "admin",
            {"superuser": True, "staff": True, "first_admin": True},
        )
    ]


def test_console_sign_in_is_throttled_after_repeated_failures(client, admin_user):
    cache.clear()
    with time_machine.travel("2026-11-27 12:00:00+00:00", tick=False) as traveller:
        wrong = [
            client.post(
                "/console/login/",
                {"username": "root-admin", "password": "wrong-guess-123"},
                REMOTE_ADDR="203.0.113.50",
            )
            for _ in range(6)
        ]
        throttled = client.post(
            "/console/login/",
            {"username": "root-admin", "password": "correct horse battery"},
            REMOTE_ADDR="203.0.113.50",
        )
        other_address = client.post(
            "/console/login/",
            {"username": "root-admin", "password": "correct horse battery"},
            REMOTE_ADDR="198.51.100.60",
        )
        client.logout()
        traveller.shift(3)
        later = client.post(
            "/console/login/",
            {"username": "root-admin", "password": "correct horse battery"},
            REMOTE_ADDR="203.0.113.50",
        )

    assert [r.status_code for r in wrong] == [200] * 6
    # The sixth failure starts a one-second block; it is itself a normal failure.
    assert all("Please enter the correct username" in r.content.decode() for r in wrong)
    assert throttled.status_code == 200
    assert "Too many failed sign-ins. Try again in 1 s." in throttled.content.decode()
    assert other_address.status_code == 302  # another address is not blocked
    assert later.status_code == 302
    failed = AuditEvent.objects.filter(event_type="console.login_failed").count()
    assert failed == 6  # the throttled attempt never reached the password check
