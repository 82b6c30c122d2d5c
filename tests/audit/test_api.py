"""GET /api/v1/audit/events: read-only, for auditors, admins and audit:read machines."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from audit.choices import Outcome
from audit.models import AuditCheckpoint, AuditEvent, AuditSeal
from audit.services import audit_seal_pending
from tests.audit.conftest import record_token_event
from tests.fixtures.core import console_login

URL = "/api/v1/audit/events"
EXPORT = "/api/v1/audit/export"
WITH_TEST_SCOPES = override_settings(
    AUDIT_API_AUTHENTICATION_CLASSES=[
        # First, so unauthenticated callers get 401 with its WWW-Authenticate.
        "tests.audit.scope_auth.TestOnlyScopeClaimsAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ]
)


@pytest.fixture
def sealed(make_events):
    make_events(3, machine="m-1")
    make_events(2, machine="m-2", outcome=Outcome.FAILURE)
    audit_seal_pending()
    record_token_event(99)  # unsealed: not served


def test_auditor_pages_through_sealed_events_by_position(sealed, client, auditor):
    console_login(client, auditor)

    first = client.get(URL, {"page_size": 2}).json()
    second = client.get(first["next"]).json()
    third = client.get(second["next"]).json()

    positions = [e["position"] for page in (first, second, third) for e in page["results"]]
    assert positions == [1, 2, 3, 4, 5]
    assert third["next"] is None
    event = first["results"][0]
    assert event["hash"] == AuditSeal.objects.get(position=1).hash
    assert event["actor_id"] == "m-1"
    assert event["occurred_at"].endswith("Z")


def test_filters_match_the_export_filters(sealed, client, auditor):
    console_login(client, auditor)

    by_machine = client.get(URL, {"machine": "m-2"}).json()["results"]
    by_type = client.get(URL, {"type": ["token.issued"]}).json()["results"]
    by_outcome = client.get(URL, {"outcome": "failure", "actor": "machine:m-2"}).json()["results"]

    assert [e["position"] for e in by_machine] == [4, 5]
    assert [e["position"] for e in by_type] == [1, 2, 3]
    assert [e["position"] for e in by_outcome] == [4, 5]


@pytest.mark.parametrize(
    "params",
    [{"since": "yesterday"}, {"type": "token.nope"}, {"outcome": "maybe"}, {"colour": "red"}],
)
def test_bad_filters_are_a_400(sealed, client, auditor, params):
    console_login(client, auditor)

    response = client.get(URL, params)

    assert response.status_code == 400


def test_admin_reads(sealed, client, admin_user):
    console_login(client, admin_user)

    assert len(client.get(URL).json()["results"]) == 5


def test_other_users_and_anonymous_are_refused(sealed, client, bystander):
    # Anonymous: 401 with the bearer challenge (the bearer class comes first).
    assert client.get(URL).status_code == 401
    console_login(client, bystander)
    assert client.get(URL).status_code == 403


def test_auditor_cannot_change_anything(sealed, client, auditor):
    console_login(client, auditor)
    before = list(AuditEvent.objects.order_by("id").values())

    for method in (client.post, client.put, client.patch, client.delete):
        assert method(URL, {}, content_type="application/json").status_code in (403, 405)

    assert list(AuditEvent.objects.order_by("id").values()) == before


@WITH_TEST_SCOPES
def test_machine_with_audit_read_scope_reads(sealed, client):
    response = client.get(URL, HTTP_X_TEST_SCOPE="openid audit:read")

    assert response.status_code == 200
    assert len(response.json()["results"]) == 5


@WITH_TEST_SCOPES
@pytest.mark.parametrize("scope", ["openid", "audit:reader", "audit:write", ""])
def test_machine_without_audit_read_scope_is_refused(sealed, client, scope):
    response = client.get(URL, HTTP_X_TEST_SCOPE=scope)

    assert response.status_code == 403


@WITH_TEST_SCOPES
def test_machine_without_credentials_gets_401(sealed, client):
    response = client.get(URL)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="audit"'


def _unzip(response, tmp_path):
    import io
    import zipfile

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        archive.extractall(tmp_path)
    return sorted(p.name for p in tmp_path.iterdir())


def test_auditor_downloads_a_signed_export_that_verifies_offline(sealed, client, auditor, tmp_path):
    import json

    from audit import chain

    console_login(client, auditor)

    response = client.post(EXPORT, {"format": "csv", "machine": "m-2"})

    names = _unzip(response, tmp_path)
    assert len(names) == 2
    export, manifest_file = (tmp_path / names[0]), (tmp_path / names[1])
    assert manifest_file.name == export.name + ".manifest.json"
    manifest = json.loads(manifest_file.read_text())
    assert (manifest["count"], manifest["filters"]["machine"]) == (2, "m-2")
    assert chain.verify_export(export, manifest) == []
    event = AuditEvent.objects.get(event_type="audit.exported")
    assert (event.actor_kind, event.actor_id) == ("user", str(auditor.pk))
    assert event.source_ip == "127.0.0.1"


@pytest.mark.parametrize("params", [{}, {"format": "xml"}, {"format": "csv", "since": "x"}])
def test_export_with_bad_parameters_is_a_400_and_writes_nothing(sealed, client, auditor, params):
    console_login(client, auditor)
    before = AuditEvent.objects.count()

    response = client.post(EXPORT, params)

    assert response.status_code == 400
    assert AuditEvent.objects.count() == before


def test_export_is_refused_to_other_users(sealed, client, bystander):
    console_login(client, bystander)
    before = AuditEvent.objects.count()

    assert client.post(EXPORT, {"format": "csv"}).status_code == 403
    assert AuditEvent.objects.count() == before


@WITH_TEST_SCOPES
def test_machine_with_audit_read_exports(sealed, client, tmp_path):
    response = client.post(EXPORT, {"format": "jsonl"}, HTTP_X_TEST_SCOPE="audit:read")

    assert len(_unzip(response, tmp_path)) == 2
    event = AuditEvent.objects.get(event_type="audit.exported")
    assert (event.actor_kind, event.actor_id) == ("machine", "machine-under-test")


def test_events_and_their_refusals_are_not_cacheable(sealed, client, auditor, bystander):
    console_login(client, auditor)
    assert client.get(URL)["Cache-Control"] == "no-store"
    console_login(client, bystander)
    assert client.get(URL)["Cache-Control"] == "no-store"


def test_export_is_not_cacheable(sealed, client, auditor):
    console_login(client, auditor)

    response = client.post(EXPORT, {"format": "jsonl"})

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"


@pytest.mark.parametrize("method", ["get", "head", "put", "patch", "delete"])
def test_export_answers_only_post(sealed, client, auditor, method):
    """A GET export would let a cross-site link make an auditor's browser write events."""
    console_login(client, auditor)
    before = (AuditEvent.objects.count(), AuditCheckpoint.objects.count())

    response = getattr(client, method)(EXPORT, {"format": "csv"})

    assert response.status_code == 405
    assert response["Allow"] == "POST, OPTIONS"
    assert (AuditEvent.objects.count(), AuditCheckpoint.objects.count()) == before


def test_session_export_without_the_csrf_token_is_refused(sealed, auditor):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    console_login(browser, auditor)
    before = (AuditEvent.objects.count(), AuditCheckpoint.objects.count())

    forged = browser.post(EXPORT, {"format": "csv"})

    assert forged.status_code == 403
    assert "CSRF" in forged.json()["detail"]
    assert (AuditEvent.objects.count(), AuditCheckpoint.objects.count()) == before
    token = "k" * 32  # a well-formed secret, as the console's cookie would hold
    browser.cookies[settings.CSRF_COOKIE_NAME] = token
    allowed = browser.post(EXPORT, {"format": "csv"}, HTTP_X_CSRFTOKEN=token)
    assert allowed.status_code == 200


def test_export_takes_a_json_object_and_refuses_other_shapes(sealed, client, auditor):
    console_login(client, auditor)
    before = AuditEvent.objects.count()

    for body in (["csv"], {"format": ["csv", 1]}, {"format": "csv", "machine": {"a": 1}}, "x"):
        response = client.post(EXPORT, body, content_type="application/json")
        assert response.status_code == 400, body
    assert AuditEvent.objects.count() == before
    ok = client.post(
        EXPORT, {"format": "jsonl", "type": ["token.issued"]}, content_type="application/json"
    )
    assert ok.status_code == 200


@WITH_TEST_SCOPES
@pytest.mark.parametrize(
    "aud",
    [
        '"https://api.test"',
        '["https://api.test", "https://other.test"]',
        "null",
        "[]",
        '"http://127.0.0.1:8000/api/v1/audit/"',
        '{"aud": "http://127.0.0.1:8000/api/v1/audit"}',
    ],
)
def test_machine_token_for_another_audience_is_refused(sealed, client, aud):
    before = AuditEvent.objects.count()

    listed = client.get(URL, HTTP_X_TEST_SCOPE="audit:read", HTTP_X_TEST_AUD=aud)
    exported = client.post(
        EXPORT, {"format": "csv"}, HTTP_X_TEST_SCOPE="audit:read", HTTP_X_TEST_AUD=aud
    )

    assert (listed.status_code, exported.status_code) == (403, 403)
    assert AuditEvent.objects.count() == before


@WITH_TEST_SCOPES
@override_settings(AUDIT_API_AUDIENCE="https://audit.example.test")
@pytest.mark.parametrize(
    "aud", ['"https://audit.example.test"', '["https://api.test", "https://audit.example.test"]']
)
def test_machine_token_for_the_audit_audience_reads(sealed, client, aud):
    response = client.get(URL, HTTP_X_TEST_SCOPE="audit:read", HTTP_X_TEST_AUD=aud)

    assert response.status_code == 200


def test_export_parameters_in_the_query_string_are_refused_not_ignored(sealed, client, auditor):
    console_login(client, auditor)
    before = (AuditEvent.objects.count(), AuditCheckpoint.objects.count())

    response = client.post(f"{EXPORT}?machine=m-2", {"format": "csv"})

    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["send the parameters in the body"]}
    assert (AuditEvent.objects.count(), AuditCheckpoint.objects.count()) == before
