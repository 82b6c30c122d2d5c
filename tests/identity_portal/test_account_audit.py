"""Every account change is audited: a console user's own password, and the account commands.

Each event names who did it (the user, or the operator at the command line)
and whose account changed, never the password; a refused change records nothing.
"""

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import AuditEvent
from tests.fixtures.core import console_login

pytestmark = pytest.mark.django_db

User = get_user_model()
OLD_PASSWORD = "Old-Console-Passphrase-41"
NEW_PASSWORD = "New-Console-Passphrase-73"
FIELDS = (
    "event_type",
    "actor_kind",
    "actor_id",
    "actor_display",
    "target_kind",
    "target_id",
    "target_display",
    "outcome",
    "details",
)


def _events():
    return list(AuditEvent.objects.order_by("id").values_list(*FIELDS))


def _no_password_anywhere(*passwords: str) -> None:
    for row in AuditEvent.objects.values():
        dumped = json.dumps(row, default=str)
        for password in passwords:
            assert password not in dumped


@pytest.fixture
def operator(monkeypatch):
    """The login name the command line reports for the operator."""
    monkeypatch.setattr("getpass.getuser", lambda: "ops-alice")
    return "ops-alice"


@pytest.fixture
def staff_user(db):
    """A console user (an auditor: a role, not the staff flag, lets one in)."""
    from django.contrib.auth.models import Group

    from core.roles import AUDITORS

    user = User.objects.create_user(username="carol", password=OLD_PASSWORD)
    user.groups.add(Group.objects.get_or_create(name=AUDITORS)[0])
    return user


def test_a_console_users_own_password_change_is_audited(client, staff_user):
    console_login(client, staff_user)
    before = _events()

    response = client.post(
        "/console/password_change/",
        {
            "old_password": OLD_PASSWORD,
            "new_password1": NEW_PASSWORD,
            "new_password2": NEW_PASSWORD,
        },
        REMOTE_ADDR="198.51.100.23",
        HTTP_USER_AGENT="browser/1.0",
    )

    assert response.status_code == 302
    assert response["Location"] == "/console/password_change/done/"
    staff_user.refresh_from_db()
    assert staff_user.check_password(NEW_PASSWORD)
    pk = str(staff_user.pk)
    assert _events()[len(before) :] == [
        ("user.password_changed", "user", pk, "carol", "user", pk, "carol", "success", {})
    ]
    event = AuditEvent.objects.get(event_type="user.password_changed")
    assert (event.source_ip, event.user_agent) == ("198.51.100.23", "browser/1.0")
    _no_password_anywhere(OLD_PASSWORD, NEW_PASSWORD)


def test_a_refused_own_password_change_changes_and_records_nothing(client, staff_user):
    console_login(client, staff_user)
    before = _events()

    response = client.post(
        "/console/password_change/",
        {
            "old_password": "not-the-old-one",
            "new_password1": NEW_PASSWORD,
            "new_password2": NEW_PASSWORD,
        },
    )

    assert response.status_code == 200
    assert "old_password" in response.context["form"].errors
    staff_user.refresh_from_db()
    assert staff_user.check_password(OLD_PASSWORD)
    assert _events() == before


def test_the_own_password_change_and_its_event_commit_together(client, staff_user, monkeypatch):
    console_login(client, staff_user)
    before = _events()

    def failing_record(**kwargs):
        raise RuntimeError("audit store down")

    monkeypatch.setattr("identity_portal.admin.console_user_record", failing_record)
    with pytest.raises(RuntimeError):
        client.post(
            "/console/password_change/",
            {
                "old_password": OLD_PASSWORD,
                "new_password1": NEW_PASSWORD,
                "new_password2": NEW_PASSWORD,
            },
        )

    staff_user.refresh_from_db()
    assert staff_user.check_password(OLD_PASSWORD)
    assert _events() == before


def test_createsuperuser_is_audited_with_the_operator(monkeypatch, operator, capsys):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", NEW_PASSWORD)

    call_command("createsuperuser", "--noinput", username="root2", email="root2@example.test")

    user = User.objects.get(username="root2")
    assert (user.is_superuser, user.is_staff, user.check_password(NEW_PASSWORD)) == (
        True,
        True,
        True,
    )
    assert _events() == [
        (
            "user.created",
            "cli",
            "",
            "manage.py createsuperuser (ops-alice)",
            "user",
            str(user.pk),
            "root2",
            "success",
            {"superuser": True, "staff": True},
        )
    ]
    _no_password_anywhere(NEW_PASSWORD)


def test_a_refused_createsuperuser_records_nothing(monkeypatch, operator, staff_user):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", NEW_PASSWORD)
    before = _events()

    with pytest.raises(CommandError, match="already taken"):
        call_command("createsuperuser", "--noinput", username="carol", email="c@example.test")

    assert User.objects.count() == 1
    assert _events() == before


def test_changepassword_is_audited_with_the_operator(monkeypatch, operator, staff_user):
    monkeypatch.setattr("getpass.getpass", lambda prompt="": NEW_PASSWORD)

    call_command("changepassword", "carol")

    staff_user.refresh_from_db()
    assert staff_user.check_password(NEW_PASSWORD)
    pk = str(staff_user.pk)
    assert _events() == [
        (
            "user.password_changed",
            "cli",
            "",
            "manage.py changepassword (ops-alice)",
            "user",
            pk,
            "carol",
            "success",
            {},
        )
    ]
    _no_password_anywhere(OLD_PASSWORD, NEW_PASSWORD)


def test_a_refused_changepassword_changes_and_records_nothing(monkeypatch, operator, staff_user):
    typed = iter(["first-Passphrase-11", "second-Passphrase-22"] * 3)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(typed))

    with pytest.raises(CommandError, match="after 3 attempts"):
        call_command("changepassword", "carol")

    staff_user.refresh_from_db()
    assert staff_user.check_password(OLD_PASSWORD)
    assert _events() == []


def test_changepassword_and_its_event_commit_together(monkeypatch, operator, staff_user):
    monkeypatch.setattr("getpass.getpass", lambda prompt="": NEW_PASSWORD)

    def failing_record(**kwargs):
        raise RuntimeError("audit store down")

    monkeypatch.setattr(
        "identity_portal.management.commands.changepassword.console_user_record", failing_record
    )
    with pytest.raises(RuntimeError):
        call_command("changepassword", "carol")

    staff_user.refresh_from_db()
    assert staff_user.check_password(OLD_PASSWORD)
    assert _events() == []
