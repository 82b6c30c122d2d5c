import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from identity_portal.services import first_admin_ensure

pytestmark = pytest.mark.django_db


def test_first_admin_is_created_once_with_a_usable_one_time_password():
    first = first_admin_ensure()
    second = first_admin_ensure()

    assert first is not None
    assert first.username == "admin"
    assert len(first.password) >= 24
    assert second is None
    users = get_user_model().objects.all()
    assert [(u.username, u.is_superuser, u.is_staff) for u in users] == [("admin", True, True)]
    # Stored as a hash, usable for sign-in.
    assert first.password not in users[0].password
    assert users[0].check_password(first.password)


def test_first_run_command_prints_the_password_only_the_first_time(capsys):
    call_command("first_run")
    printed_first = capsys.readouterr().out
    call_command("first_run")
    printed_second = capsys.readouterr().out

    assert "username: admin" in printed_first
    assert "password:" in printed_first
    assert "First signing key created: ES256 kid=" in printed_first
    assert "For /metrics scrapers: created scope metrics:read and audience " in printed_first
    assert printed_second == (
        "Console admin exists; nothing to create.\nSigning key exists; nothing to create.\n"
        "Metrics scope and audience exist; nothing to create.\n"
    )


def test_no_admin_created_when_one_exists(admin_user):
    assert first_admin_ensure() is None
    assert get_user_model().objects.count() == 1
