"""Machines read the audit API with an access token holding ``audit:read`` for its audience."""

import json

import pytest
from django.conf import settings

from audit.models import AuditEvent
from audit.services import audit_seal_pending
from tests.fixtures.tokens import API
from tests.tokens.helpers import FORM, basic, token_request

pytestmark = pytest.mark.django_db
URL = "/api/v1/audit/events"


def _token(client, registered, **params) -> str:
    response = token_request(client, registered, **params)
    assert response.status_code == 200
    return json.loads(response.content)["access_token"]


def _reader(machine_factory, **kwargs):
    return machine_factory(
        scopes=("audit:read",),
        default_scopes=("audit:read",),
        audiences=(API, settings.AUDIT_API_AUDIENCE),
        **kwargs,
    )


def test_a_machine_with_audit_read_lists_sealed_events(client, signing_key, machine_factory):
    reader = _reader(machine_factory)
    token = _token(client, reader, resource=settings.AUDIT_API_AUDIENCE)
    audit_seal_pending()

    response = client.get(URL, {"type": "token.issued"}, HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 200
    events = response.json()["results"]
    assert [e["event_type"] for e in events] == ["token.issued"]
    assert events[0]["actor_id"] == reader.client_id


def test_without_the_scope_or_with_a_revoked_token_the_machine_is_refused(
    client, signing_key, machine_factory
):
    other = machine_factory(name="other", audiences=(API, settings.AUDIT_API_AUDIENCE))
    reader = _reader(machine_factory)
    no_scope = _token(client, other, resource=settings.AUDIT_API_AUDIENCE)
    revoked = _token(client, reader, resource=settings.AUDIT_API_AUDIENCE)
    client.post(
        "/oauth/revoke",
        data=f"token={revoked}",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(reader.client_id, reader.secret),
    )

    forbidden = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {no_scope}")
    refused = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {revoked}")
    anonymous = client.get(URL)

    assert forbidden.status_code == 403
    assert refused.status_code == 401
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"] == 'Bearer realm="Machine Identity Portal"'


def test_a_token_with_audit_read_for_another_audience_is_refused(
    client, signing_key, machine_factory
):
    """RFC 9068 section 4: the audit API accepts only tokens issued for it."""
    reader = _reader(machine_factory)
    for_api = _token(client, reader)  # the machine's default audience
    audit_seal_pending()

    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {for_api}")
    export = client.post(
        "/api/v1/audit/export", {"format": "csv"}, HTTP_AUTHORIZATION=f"Bearer {for_api}"
    )

    assert (response.status_code, export.status_code) == (403, 403)
    assert not AuditEvent.objects.filter(event_type="audit.exported").exists()
