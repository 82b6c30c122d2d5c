import pytest

from audit.models import AuditEvent

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


def _events():
    return list(
        AuditEvent.objects.values_list(
            "event_type", "actor_kind", "actor_display", "outcome", "reason", "source_ip"
        )
    )


def test_console_login_and_logout_are_audited(client, admin_user):
    response = client.post(
        "/console/login/",
        {"username": "root-admin", "password": PASSWORD},
        REMOTE_ADDR="198.51.100.7",
    )
    assert response.status_code == 302
    client.post("/console/logout/", REMOTE_ADDR="198.51.100.7")

    assert _events() == [
        ("console.login", "user", "root-admin", "success", "", "198.51.100.7"),
        ("console.logout", "user", "root-admin", "success", "", "198.51.100.7"),
    ]


def test_failed_console_login_is_audited_without_the_password(client, admin_user):
    response = client.post(
        "/console/login/",
        {"username": "root-admin", "password": "wrong-guess-123"},
        REMOTE_ADDR="203.0.113.9",
    )

    assert response.status_code == 200  # the form again, with its error
    assert _events() == [
        (
            "console.login_failed",
            "anonymous",
            "root-admin",
            "failure",
            "bad_credentials",
            "203.0.113.9",
        ),
    ]
    event = AuditEvent.objects.get()
    assert "wrong-guess-123" not in str(event.details)
    assert "wrong-guess-123" not in event.target_display
