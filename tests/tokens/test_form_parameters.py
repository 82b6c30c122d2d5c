"""Unknown parameters are ignored, even repeated; protocol parameters may not repeat.

RFC 6749 section 3.2 and its erratum 5708.
"""

from __future__ import annotations

import json
from urllib.parse import quote_plus

import pytest

from tests.tokens.helpers import FORM, basic, form_body, issue_token
from tokens.constants import MAX_FORM_FIELDS
from tokens.models import IssuedToken

pytestmark = pytest.mark.django_db


def test_unknown_parameters_are_ignored_however_many_and_even_repeated(
    client, signing_key, machine_factory
):
    registered = machine_factory()
    unknown = "&".join(f"x{n}=v" for n in range(40)) + "&extra=1&extra=2"

    response = client.post(
        "/oauth/token",
        data=f"grant_type=client_credentials&scope=orders%3Aread&{unknown}",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
    )

    assert response.status_code == 200, response.content
    assert json.loads(response.content)["scope"] == "orders:read"


@pytest.mark.parametrize(
    "name", ["grant_type", "scope", "client_id", "client_secret", "client_assertion"]
)
def test_a_repeated_protocol_parameter_is_refused_and_changes_nothing(
    client, signing_key, machine_factory, name
):
    registered = machine_factory()
    values = {
        "grant_type": "client_credentials",
        "scope": "orders:read",
        "client_id": registered.client_id,
        "client_secret": registered.secret,
        "client_assertion": "x",
    }

    response = client.post(
        "/oauth/token",
        data=form_body(**values) + f"&{name}={quote_plus(values[name])}".encode(),
        content_type=FORM,
    )

    assert response.status_code == 400
    assert json.loads(response.content)["error"] == "invalid_request"
    assert IssuedToken.objects.count() == 0


def test_unknown_parameters_are_ignored_at_introspection_and_revocation(
    client, signing_key, machine_factory, introspector
):
    owner = machine_factory(name="owner")
    token = issue_token(client, owner)
    noise = "&".join(f"x{n}=v" for n in range(20)) + "&extra=1&extra=2"

    introspected = client.post(
        "/oauth/introspect",
        data=f"token={token}&{noise}",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(introspector.client_id, introspector.secret),
    )
    revoked = client.post(
        "/oauth/revoke",
        data=f"token={token}&{noise}",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(owner.client_id, owner.secret),
    )

    assert introspected.status_code == 200 and json.loads(introspected.content)["active"] is True
    assert revoked.status_code == 200
    assert IssuedToken.objects.get().revoked_at is not None


def test_a_body_of_more_parameters_than_the_bound_is_refused_by_name(
    client, signing_key, machine_factory
):
    registered = machine_factory()
    body = "grant_type=client_credentials" + "&x=1" * MAX_FORM_FIELDS

    response = client.post(
        "/oauth/token",
        data=body,
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
    )

    assert response.status_code == 400
    assert json.loads(response.content) == {
        "error": "invalid_request",
        "error_description": "The body has too many parameters.",
    }
    assert IssuedToken.objects.count() == 0


def test_exactly_the_bound_of_parameters_is_accepted(client, signing_key, machine_factory):
    registered = machine_factory()
    body = "grant_type=client_credentials" + "&x=1" * (MAX_FORM_FIELDS - 1)

    response = client.post(
        "/oauth/token",
        data=body,
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
    )

    assert response.status_code == 200
