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


def test_a_failed_login_for_no_such_account_records_nothing_that_was_typed(client, admin_user):
    # Someone typed their password into the username box.
    response = client.post(
        "/console/login/",
        {"username": "hunter2-my-password", "password": "whatever-else"},
        REMOTE_ADDR="203.0.113.9",
    )

    assert response.status_code == 200
    event = AuditEvent.objects.get()
    assert (event.event_type, event.actor_display, event.target_display, event.reason) == (
        "console.login_failed",
        "(unknown account)",
        "(unknown account)",
        "unknown_account",
    )
    assert event.details == {"typed_length": 19}
    assert "hunter2" not in str(AuditEvent.objects.values().get())
