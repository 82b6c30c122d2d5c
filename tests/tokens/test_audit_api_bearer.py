"""Machines read the audit API with an access token holding ``audit:read``."""

import json

import pytest

from audit.services import audit_seal_pending
from tests.tokens.helpers import FORM, basic, token_request

pytestmark = pytest.mark.django_db
URL = "/api/v1/audit/events"


def _token(client, registered) -> str:
    response = token_request(client, registered)
    assert response.status_code == 200
    return json.loads(response.content)["access_token"]


def test_a_machine_with_audit_read_lists_sealed_events(client, signing_key, machine_factory):
    reader = machine_factory(scopes=("audit:read",), default_scopes=("audit:read",))
    token = _token(client, reader)
    audit_seal_pending()

    response = client.get(URL, {"type": "token.issued"}, HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 200
    events = response.json()["results"]
    assert [e["event_type"] for e in events] == ["token.issued"]
    assert events[0]["actor_id"] == reader.client_id


def test_without_the_scope_or_with_a_revoked_token_the_machine_is_refused(
    client, signing_key, machine_factory
):
    other = machine_factory(name="other")
    reader = machine_factory(scopes=("audit:read",), default_scopes=("audit:read",))
    no_scope = _token(client, other)
    revoked = _token(client, reader)
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
