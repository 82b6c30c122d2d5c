"""Grants as a registry: what is registered is served and advertised, through one issuing path."""

from __future__ import annotations

import json

import pytest

from audit.models import AuditEvent
from tests.fixtures.tokens import API, OTHER_API
from tests.tokens.helpers import FORM, basic, verify
from tokens import grants as grants_module
from tokens.grants import Grant, grant_types_supported
from tokens.models import IssuedToken
from tokens.selectors import discovery_document
from tokens.services import TokenDecision, token_claims

pytestmark = pytest.mark.django_db


class FixedGrant(Grant):
    """A stand-in for a future grant: decides a fixed audience and adds audit details."""

    grant_type = "urn:test:fixed"
    parameters = frozenset({"grant_type", "label"})

    def parse(self, form):
        return (form.get("label") or ["none"])[0]

    def decide(self, *, machine, params, context):
        return TokenDecision(
            machine=machine,
            scopes=(),
            audience=OTHER_API,
            grant_type=self.grant_type,
            details={"label": params},
        )


@pytest.fixture
def fixed_grant_registered(monkeypatch):
    monkeypatch.setattr(
        grants_module,
        "GRANT_CLASSES",
        (*grants_module.GRANT_CLASSES, f"{__name__}.FixedGrant"),
    )
    grants_module.grants.cache_clear()
    yield
    grants_module.grants.cache_clear()


def test_discovery_lists_the_registered_grants():
    assert grant_types_supported() == ["client_credentials"]
    assert discovery_document()["grant_types_supported"] == ["client_credentials"]


def test_an_unregistered_grant_type_is_unsupported_and_changes_nothing(client, machine_factory):
    registered = machine_factory()

    response = client.post(
        "/oauth/token",
        data="grant_type=urn:test:fixed",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
    )

    assert response.status_code == 400
    assert json.loads(response.content) == {
        "error": "unsupported_grant_type",
        "error_description": "Supported grant types: client_credentials.",
    }
    assert IssuedToken.objects.count() == 0


def test_a_registered_grant_is_advertised_and_issued_through_the_one_path(
    client, signing_key, machine_factory, fixed_grant_registered
):
    registered = machine_factory()
    assert discovery_document()["grant_types_supported"] == ["client_credentials", "urn:test:fixed"]

    response = client.post(
        "/oauth/token",
        data="grant_type=urn:test:fixed&label=ci",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
    )

    assert response.status_code == 200
    body = json.loads(response.content)
    claims = verify(body["access_token"], audience=OTHER_API)
    assert claims["client_id"] == registered.client_id
    record = IssuedToken.objects.get()
    assert (record.jti, record.audience, record.scope) == (claims["jti"], OTHER_API, "")
    event = AuditEvent.objects.get(event_type="token.issued")
    assert event.details["label"] == "ci"
    assert event.details["jti"] == claims["jti"]
    assert event.details["audience"] == OTHER_API


def test_token_claims_of_a_decision(settings, machine_factory):
    machine = machine_factory().machine
    decision = TokenDecision(
        machine=machine,
        scopes=("openid", "orders:read"),
        audience=API,
        grant_type="client_credentials",
    )

    claims = token_claims(decision=decision, now=1000, lifetime=600, jti="j1")

    assert claims.access == {
        "iss": settings.ISSUER,
        "sub": str(machine.subject),
        "aud": API,
        "client_id": machine.client_id,
        "scope": "openid orders:read",
        "iat": 1000,
        "exp": 1600,
        "jti": "j1",
    }
    assert claims.id_token == {
        "iss": settings.ISSUER,
        "sub": str(machine.subject),
        "aud": machine.client_id,
        "iat": 1000,
        "exp": 1600,
        "name": machine.name,
        "owner_team": machine.owner_team,
        "owner_email": machine.owner_email,
    }
