"""Every 401 carries a challenge (RFC 9110 15.5.2); an empty scope is omitted (RFC 6749 3.3)."""

from __future__ import annotations

import json

import pytest

from tests.tokens.helpers import FORM, token_request
from tokens.models import IssuedToken

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/introspect", "/oauth/revoke"])
@pytest.mark.parametrize(
    "body",
    [
        "grant_type=client_credentials&token=t",
        "grant_type=client_credentials&token=t&client_id=nobody&client_secret=mip_cs_x",
        "grant_type=client_credentials&token=t&client_id=nobody",
    ],
    ids=["no credentials", "wrong form credentials", "client_id only"],
)
def test_every_401_carries_a_challenge(client, signing_key, path, body):
    response = client.post(path, data=body, content_type=FORM)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Basic realm="Machine Identity Portal"'
    assert json.loads(response.content)["error"] == "invalid_client"


# --- scope (RFC 6749 section 3.3, 5.1) --------------------------------------------


def test_a_success_without_scopes_omits_scope(client, signing_key, machine_factory):
    registered = machine_factory(default_scopes=())

    response = token_request(client, registered)

    assert response.status_code == 200
    assert sorted(json.loads(response.content)) == ["access_token", "expires_in", "token_type"]
    assert IssuedToken.objects.get().scope == ""
