"""Introspection answers only for tokens meant for an audience the caller may address.

RFC 7662 section 4 and RFC 9068 section 4: a resource server must not probe
tokens meant for another. The probe answers like an unknown token and is audited.
"""

import json
from urllib.parse import quote_plus

import jwt
import pytest

from audit.models import AuditEvent
from tests.fixtures.tokens import API, OTHER_API
from tests.tokens.helpers import FORM, basic, token_request
from tokens.models import IssuedToken

pytestmark = pytest.mark.django_db

EVENT_FIELDS = (
    "actor_kind",
    "actor_id",
    "target_kind",
    "target_id",
    "outcome",
    "reason",
    "details",
)


@pytest.fixture
def billing_gateway(machine_factory):
    """A resource server for the billing API only."""
    return machine_factory(
        name="billing-gateway",
        scopes=("tokens:introspect",),
        default_scopes=(),
        audiences=(OTHER_API,),
        default_audience=None,
    )


def _issue(client, registered, **params) -> str:
    response = token_request(client, registered, **params)
    assert response.status_code == 200, response.content
    return json.loads(response.content)["access_token"]


def _introspect(client, caller, token):
    return client.post(
        "/oauth/introspect",
        data=f"token={quote_plus(token)}",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(caller.client_id, caller.secret),
    )


def _events():
    return list(
        AuditEvent.objects.filter(event_type="token.introspected")
        .order_by("id")
        .values_list(*EVENT_FIELDS)
    )


def test_a_token_for_another_audience_is_inactive_and_the_probe_audited(
    client, signing_key, machine_factory, billing_gateway
):
    token = _issue(client, machine_factory(), resource=API)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    record_before = IssuedToken.objects.values().get()

    response = _introspect(client, billing_gateway, token)

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    assert response.content == b'{"active":false}'
    assert _events() == [
        (
            "machine",
            billing_gateway.client_id,
            "token",
            jti,
            "failure",
            "audience_not_allowed",
            {"active": False},
        )
    ]
    # Nothing about the token leaks into the event, and the token itself is untouched.
    event = AuditEvent.objects.get(event_type="token.introspected")
    assert API not in json.dumps(event.details)
    assert IssuedToken.objects.values().get() == record_before


def test_a_token_for_an_audience_the_caller_addresses_gets_the_full_answer(
    client, signing_key, machine_factory, billing_gateway
):
    token = _issue(client, machine_factory(), resource=OTHER_API)
    claims = jwt.decode(token, options={"verify_signature": False})

    response = _introspect(client, billing_gateway, token)

    assert response.status_code == 200
    assert json.loads(response.content) == {"active": True, "token_type": "Bearer", **claims}
    assert claims["aud"] == OTHER_API
    assert _events() == [
        (
            "machine",
            billing_gateway.client_id,
            "token",
            claims["jti"],
            "success",
            "",
            {"active": True},
        )
    ]


def test_a_caller_with_only_a_default_audience_addresses_it(client, signing_key, machine_factory):
    gateway = machine_factory(
        name="orders-gateway",
        scopes=("tokens:introspect",),
        default_scopes=(),
        audiences=(),
        default_audience=API,
    )
    for_orders = _issue(client, machine_factory(), resource=API)
    for_billing = _issue(client, machine_factory(name="other-worker"), resource=OTHER_API)

    answers = [
        json.loads(_introspect(client, gateway, t).content)["active"]
        for t in (
            for_orders,
            for_billing,
        )
    ]

    assert answers == [True, False]
    assert [(e[4], e[5]) for e in _events()] == [
        ("success", ""),
        ("failure", "audience_not_allowed"),
    ]


def test_a_caller_without_any_audience_learns_nothing(client, signing_key, machine_factory):
    gateway = machine_factory(
        name="no-audience-gateway",
        scopes=("tokens:introspect",),
        default_scopes=(),
        audiences=(),
        default_audience=None,
    )
    token = _issue(client, machine_factory())

    response = _introspect(client, gateway, token)

    assert json.loads(response.content) == {"active": False}
    assert [(e[4], e[5], e[6]) for e in _events()] == [
        ("failure", "audience_not_allowed", {"active": False})
    ]


def test_an_unknown_token_stays_a_plain_inactive_answer(
    client, signing_key, machine_factory, billing_gateway
):
    response = _introspect(client, billing_gateway, "not.a.jwt")

    assert json.loads(response.content) == {"active": False}
    assert _events() == [
        ("machine", billing_gateway.client_id, "token", "", "success", "", {"active": False})
    ]
