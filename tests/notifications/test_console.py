"""The console pages of issue 12: webhook endpoints, deliveries and their attempts, jobs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import override_settings
from django.utils import timezone

from audit.models import AuditEvent
from jobs.models import JobRun
from notifications.crypto import webhook_secret_unwrap
from notifications.models import Delivery, WebhookEndpoint
from tests.fixtures.core import console_login

pytestmark = pytest.mark.django_db

ADD = "/console/notifications/webhookendpoint/add/"
LIST = "/console/notifications/webhookendpoint/"


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


def _form(url: str, **overrides) -> dict:
    return {"team": "payments", "url": url, "description": "", "enabled": "on", **overrides}


@override_settings(NOTIFICATION_WEBHOOK_ALLOW_PRIVATE=True)
def test_an_admin_adds_an_endpoint_sees_its_secret_once_and_sends_a_test(
    client, security_admin, webhook_receiver, django_capture_on_commit_callbacks
):
    console_login(client, security_admin)
    response = client.post(ADD, _form(webhook_receiver.url))

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    content = response.content.decode()
    shown = content.split('<code id="webhook-secret">', 1)[1].split("</code>", 1)[0]
    endpoint = WebhookEndpoint.objects.get()
    assert (
        f'<a href="{LIST}">Webhook endpoints</a> \N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK} '
        f'<a href="{LIST}{endpoint.pk}/change/">payments: {webhook_receiver.url}</a>'
    ) in content
    assert (
        webhook_secret_unwrap(
            endpoint.secret_wrapped, kek_id=endpoint.kek_id, uid=str(endpoint.uid)
        )
        == shown
    )
    # The change page never shows it again.
    page = client.get(f"{LIST}{endpoint.pk}/change/").content.decode()
    assert shown not in page
    assert AuditEvent.objects.get(event_type="webhook.created").actor_display == "sec"

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            LIST, {"action": "send_test", "_selected_action": [str(endpoint.pk)]}
        )
    assert response.status_code == 302
    assert [r.headers["X-Portal-Event"] for r in webhook_receiver.received] == ["test"]
    delivery = Delivery.objects.get()
    page = client.get(f"/console/notifications/delivery/{delivery.pk}/change/").content.decode()
    assert "delivered" in page
    assert "204" in page  # the attempt's status


def test_a_private_url_is_a_field_error_and_nothing_is_saved(client, security_admin):
    console_login(client, security_admin)
    response = client.post(ADD, _form("http://10.0.0.1/hook"))
    assert response.status_code == 200
    assert "Private and loopback targets are refused." in response.content.decode()
    assert WebhookEndpoint.objects.count() == 0
    assert not AuditEvent.objects.filter(event_type="webhook.created").exists()


def test_an_auditor_sees_deliveries_and_jobs_but_adds_nothing(client, auditor):
    console_login(client, auditor)
    assert client.get(LIST).status_code == 200
    assert client.get(ADD).status_code == 403
    response = client.post(ADD, _form("https://hooks.example.com/x"))
    assert response.status_code == 403
    assert WebhookEndpoint.objects.count() == 0
    assert client.get("/console/notifications/delivery/").status_code == 200
    assert client.get("/console/jobs/jobrun/").status_code == 200


def test_the_jobs_page_flags_a_job_not_run_for_three_intervals(client, security_admin):
    JobRun.objects.create(
        name="tokens.tasks.issued_tokens_purge",
        interval_seconds=3600,
        last_started_at=timezone.now() - timedelta(hours=4),
        last_outcome="success",
        runs=1,
    )
    console_login(client, security_admin)
    content = client.get("/console/jobs/jobrun/").content.decode()
    assert (
        "Job tokens.tasks.issued_tokens_purge has not run for three of its intervals (3600 s)"
        in content
    )
    assert "Job audit.seal_pending has not run yet." in content


def test_the_deliveries_page_is_named_in_english(client, auditor):
    console_login(client, auditor)

    body = client.get("/console/notifications/delivery/").content.decode()

    assert '<a href="/console/notifications/delivery/" aria-current="page">Deliveries</a>' in body
    assert "Deliverys" not in body
