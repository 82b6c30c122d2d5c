"""POST /api/v1/machines/self/secret with a JWK: a machine replaces its own private_key_jwt key.

The machine signs the request with the key it replaces, as an outside client
would (PyJWT), and every check goes through real requests: the new key gets
tokens at the token endpoint, the old one is refused there at once. Every
refusal leaves the keys as they were and writes no ``client_key.*`` event.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from io import StringIO
from urllib.parse import quote_plus

import jwt
import pytest
import time_machine
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import call_command

from audit.context import Actor
from audit.models import AuditEvent
from clients.client_assertion import JWT_BEARER
from clients.federation.services import trust_add
from clients.models import ClientKey, ClientSecret, Machine
from clients.services import (
    client_key_add,
    client_key_self_replace,
    machine_update,
    secret_create,
)
from core import jose, remote_jwks
from tests.fixtures.issuer import GITHUB_AUDIENCE
from tests.tokens.helpers import FORM, basic
from tokens.views.protocol import INVALID_CLIENT_BODY

pytestmark = pytest.mark.django_db

URL = "/api/v1/machines/self/secret"
ACTOR = Actor.cli("pytest")
NEEDS_ASSERTION = (
    "A new key is sent with a private_key_jwt client_assertion signed by the key it replaces."
)


def _self_url() -> str:
    return settings.ISSUER + URL


def _token_url() -> str:
    return settings.ISSUER + "/oauth/token"


def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _public_jwk(private_key, **extra) -> dict:
    """The public JWK as a machine's own tooling makes it (PyJWT)."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        text = jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key())
    else:
        text = jwt.algorithms.ECAlgorithm.to_jwk(private_key.public_key())
    return {**json.loads(text), **extra}


def _assertion(client_id: str, private_key, *, aud, kid: str | None = None, **claims) -> str:
    now = int(time.time())
    payload = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(16),
        **claims,
    }
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, private_key, algorithm="ES256", headers=headers)


def _form(**params: str) -> str:
    return "&".join(f"{name}={quote_plus(value)}" for name, value in params.items())


@dataclass
class Keyed:
    machine: Machine
    client_id: str
    key: ec.EllipticCurvePrivateKey  # the registered key "k1"

    def assertion(self, key=None, **overrides) -> str:
        overrides.setdefault("aud", _self_url())
        return _assertion(self.client_id, key or self.key, **overrides)


@pytest.fixture
def committing(django_capture_on_commit_callbacks):
    """Run what waits for commit (the cache tombstones) as a real commit would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def keyed(machine_factory, signing_key, committing) -> Keyed:
    registered = machine_factory(name="signer")
    machine = machine_update(
        actor=ACTOR, machine=registered.machine, auth_methods=["private_key_jwt"]
    )
    key = _ec_key()
    with committing():
        client_key_add(actor=ACTOR, machine=machine, jwk=_public_jwk(key, kid="k1"))
    return Keyed(machine=machine, client_id=machine.client_id, key=key)


@pytest.fixture
def replace(client, committing):
    """The cron job's call: a form with the assertion and the new public JWK."""

    def call(assertion: str | None, jwk, **extra):
        params = dict(extra)
        if assertion is not None:
            params |= {"client_assertion_type": JWT_BEARER, "client_assertion": assertion}
        if jwk is not None:
            params["jwk"] = jwk if isinstance(jwk, str) else json.dumps(jwk)
        with committing():
            return client.post(URL, data=_form(**params), content_type=FORM)

    return call


def _token(client, client_id: str, private_key):
    assertion = _assertion(client_id, private_key, aud=_token_url())
    body = _form(
        grant_type="client_credentials",
        client_assertion_type=JWT_BEARER,
        client_assertion=assertion,
    )
    return client.post("/oauth/token", data=body, content_type=FORM)


def _keys(machine: Machine) -> list[tuple[str, str]]:
    return list(ClientKey.objects.filter(machine=machine).values_list("kid", "thumbprint"))


def _key_events() -> list[tuple[str, str, str, str, str]]:
    events = AuditEvent.objects.filter(event_type__startswith="client_key.").order_by("id")
    return [(e.event_type, e.actor_kind, e.actor_id, e.reason, e.details["kid"]) for e in events]


def _denials() -> list[str]:
    events = AuditEvent.objects.filter(event_type="token.denied").order_by("id")
    return [event.reason for event in events]


def _assert_invalid_request(response, description: str) -> None:
    assert response.status_code == 400
    assert json.loads(response.content) == {
        "error": "invalid_request",
        "error_description": description,
    }


def _assert_invalid_client(response) -> None:
    assert response.status_code == 401
    assert response.content == INVALID_CLIENT_BODY
    assert response["WWW-Authenticate"] == 'Basic realm="Machine Identity Portal"'


def test_a_machine_replaces_its_key_the_new_one_gets_tokens_the_old_one_is_refused(
    client, keyed, replace
):
    # The old key is in use: the machine's cache entry holds it until the replacement.
    assert _token(client, keyed.client_id, keyed.key).status_code == 200
    new_key = _ec_key()
    new_jwk = _public_jwk(new_key, kid="k2")
    events_before = len(_key_events())

    response = replace(keyed.assertion(kid="k1"), new_jwk)

    assert response.status_code == 201, response.content
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    thumbprint = jose.jwk_thumbprint(new_jwk)
    assert json.loads(response.content) == {
        "client_id": keyed.client_id,
        "kid": "k2",
        "thumbprint": thumbprint,
        "replaced_kid": "k1",
    }
    assert _keys(keyed.machine) == [("k2", thumbprint)]
    stored = ClientKey.objects.get(machine=keyed.machine).public_jwk
    assert "d" not in stored
    events = _key_events()[events_before:]
    assert events == [
        ("client_key.removed", "machine", keyed.client_id, "self_rotation", "k1"),
        ("client_key.added", "machine", keyed.client_id, "self_rotation", "k2"),
    ]
    # The token endpoint sees the change at once (the cache entry was invalidated).
    assert _token(client, keyed.client_id, new_key).status_code == 200
    _assert_invalid_client(_token(client, keyed.client_id, keyed.key))
    assert _denials() == ["bad_signature"]  # no kid named: the one key left does not verify
    # The old key cannot replace anything here either.
    _assert_invalid_client(replace(keyed.assertion(), _public_jwk(_ec_key(), kid="k3")))
    assert _keys(keyed.machine) == [("k2", thumbprint)]


def test_without_a_kid_the_new_key_is_named_by_its_thumbprint(client, keyed, replace):
    new_key = _ec_key()
    new_jwk = _public_jwk(new_key)  # no kid, and the assertion names none either

    response = replace(keyed.assertion(), new_jwk)

    thumbprint = jose.jwk_thumbprint(new_jwk)
    assert response.status_code == 201
    assert json.loads(response.content)["kid"] == thumbprint
    assert _keys(keyed.machine) == [(thumbprint, thumbprint)]
    assert _token(client, keyed.client_id, new_key).status_code == 200


def test_of_two_keys_only_the_one_that_signed_is_replaced(client, keyed, replace, committing):
    second = _ec_key()
    with committing():
        client_key_add(actor=ACTOR, machine=keyed.machine, jwk=_public_jwk(second, kid="k2"))
    new_key = _ec_key()
    new_jwk = _public_jwk(new_key, kid="k3")

    response = replace(keyed.assertion(), new_jwk)

    assert response.status_code == 201
    assert json.loads(response.content)["replaced_kid"] == "k1"
    assert [kid for kid, _ in _keys(keyed.machine)] == ["k2", "k3"]
    assert _token(client, keyed.client_id, second).status_code == 200
    assert _token(client, keyed.client_id, new_key).status_code == 200
    _assert_invalid_client(_token(client, keyed.client_id, keyed.key))


def _private_jwk() -> dict:
    key = _ec_key()
    return json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))  # carries "d"


def _p521_jwk() -> dict:
    return json.loads(
        jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP521R1()).public_key())
    )


KEY_REFUSALS = {
    "private": (
        lambda k: _private_jwk(),
        "Not a usable public key: a private or symmetric JWK: register the public key only.",
    ),
    "symmetric": (
        lambda k: {"kty": "oct", "k": jose.b64url(secrets.token_bytes(32))},
        "Not a usable public key: a private or symmetric JWK: register the public key only.",
    ),
    "alg_outside_the_allow_list": (
        lambda k: _public_jwk(_ec_key(), alg="HS256"),
        "alg must be one of ES256, ES384, EdDSA, PS256, RS256 and fit the key.",
    ),
    "alg_not_fitting_the_key": (
        lambda k: _public_jwk(_ec_key(), alg="RS256"),
        "alg must be one of ES256, ES384, EdDSA, PS256, RS256 and fit the key.",
    ),
    "curve_outside_the_allow_list": (
        lambda k: _p521_jwk(),
        "Not a usable public key: unsupported curve.",
    ),
    "small_rsa": (
        # A weak key on purpose: it must be refused.
        lambda k: _public_jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024)),  # noqa: S505
        "Not a usable public key: RSA keys of at least 2048 bits.",
    ),
    "encryption_key": (
        lambda k: _public_jwk(_ec_key(), use="enc"),
        'A signing key: "use" must be "sig".',
    ),
    "the_key_already_registered": (
        lambda k: _public_jwk(k.key),
        "The machine already has this key (or this kid): send a new one.",
    ),
    "a_registered_kid_for_another_key": (
        lambda k: _public_jwk(_ec_key(), kid="k1"),
        "The machine already has this key (or this kid): send a new one.",
    ),
    "not_a_key": (
        lambda k: {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
        "Not a usable public key: EC coordinates of the wrong length.",
    ),
}


@pytest.mark.parametrize("case", sorted(KEY_REFUSALS))
def test_a_key_that_cannot_be_registered_is_refused_and_nothing_changes(
    client, keyed, replace, case
):
    make, description = KEY_REFUSALS[case]
    keys_before, events_before = _keys(keyed.machine), AuditEvent.objects.count()

    response = replace(keyed.assertion(), make(keyed))

    _assert_invalid_request(response, description)
    assert not any(
        "d" in jwk or "k" in jwk for jwk in ClientKey.objects.values_list("public_jwk", flat=True)
    )
    assert _keys(keyed.machine) == keys_before
    assert AuditEvent.objects.count() == events_before
    assert _token(client, keyed.client_id, keyed.key).status_code == 200


SHAPE_REFUSALS = {
    "not_json": ("{not json", "The jwk parameter is not JSON."),
    "an_array": ("[{}]", "The jwk parameter is one JWK: a JSON object, not a key set."),
    "a_string": ('"EC"', "The jwk parameter is one JWK: a JSON object, not a key set."),
    "nested_too_deep": ("[" * 3000 + "]" * 3000, "The jwk parameter is not JSON."),
}


@pytest.mark.parametrize("case", sorted(SHAPE_REFUSALS))
def test_a_jwk_parameter_that_is_no_json_object_is_refused_before_authentication(
    client, keyed, replace, case
):
    jwk_text, description = SHAPE_REFUSALS[case]
    assertion = keyed.assertion()
    keys_before, events_before = _keys(keyed.machine), AuditEvent.objects.count()

    response = client.post(
        URL,
        data=_form(client_assertion_type=JWT_BEARER, client_assertion=assertion)
        + "&jwk="
        # Sent unencoded where the form allows it, so the body stays under its limit.
        + (jwk_text if case == "nested_too_deep" else quote_plus(jwk_text)),
        content_type=FORM,
    )

    _assert_invalid_request(response, description)
    assert _keys(keyed.machine) == keys_before
    assert AuditEvent.objects.count() == events_before
    # Refused before authentication: the assertion was not spent.
    assert replace(assertion, _public_jwk(_ec_key(), kid="k2")).status_code == 201


def test_a_repeated_jwk_one_in_the_url_or_a_json_body_is_refused(client, keyed, replace):
    jwk = json.dumps(_public_jwk(_ec_key()))
    repeated = client.post(
        URL,
        data=_form(client_assertion_type=JWT_BEARER, client_assertion=keyed.assertion(), jwk=jwk)
        + "&jwk="
        + quote_plus(jwk),
        content_type=FORM,
    )
    as_json = client.post(
        URL,
        data=json.dumps(
            {
                "client_assertion_type": JWT_BEARER,
                "client_assertion": keyed.assertion(),
                "jwk": json.loads(jwk),
            }
        ),
        content_type="application/json",
    )

    in_the_url = client.post(
        URL + "?jwk=" + quote_plus(jwk),
        data=_form(client_assertion_type=JWT_BEARER, client_assertion=keyed.assertion()),
        content_type=FORM,
    )

    _assert_invalid_request(repeated, "The parameter jwk is repeated.")
    _assert_invalid_request(in_the_url, "Send the jwk in the form body, not in the URL.")
    _assert_invalid_request(as_json, "The body must be application/x-www-form-urlencoded.")
    assert [kid for kid, _ in _keys(keyed.machine)] == ["k1"]
    assert AuditEvent.objects.filter(event_type__startswith="client_key.").count() == 1


@pytest.mark.parametrize("aud", ["token_endpoint", "issuer", "elsewhere"])
def test_an_assertion_not_made_for_this_endpoint_is_refused(client, keyed, replace, aud):
    # One made to get a token, if intercepted, can never replace the machine's key.
    audience = {
        "token_endpoint": _token_url(),
        "issuer": settings.ISSUER,
        "elsewhere": "https://elsewhere.example/api/v1/machines/self/secret",
    }[aud]
    keys_before = _keys(keyed.machine)

    response = replace(keyed.assertion(aud=audience), _public_jwk(_ec_key()))

    _assert_invalid_client(response)
    assert _denials() == ["wrong_audience"]
    assert _keys(keyed.machine) == keys_before
    assert AuditEvent.objects.filter(event_type__startswith="client_key.").count() == 1


def test_a_replayed_or_forged_assertion_gets_401_and_nothing_changes(client, keyed, replace):
    # An assertion for both endpoints, used at the token endpoint first: one use in all.
    both = keyed.assertion(aud=[_token_url(), _self_url()])
    token = client.post(
        "/oauth/token",
        data=_form(
            grant_type="client_credentials", client_assertion_type=JWT_BEARER, client_assertion=both
        ),
        content_type=FORM,
    )
    assert token.status_code == 200
    forged = keyed.assertion(key=_ec_key(), kid="k1")  # signed by someone else's key
    keys_before = _keys(keyed.machine)

    replayed = replace(both, _public_jwk(_ec_key()))
    wrong = replace(forged, _public_jwk(_ec_key()))

    _assert_invalid_client(replayed)
    _assert_invalid_client(wrong)
    assert _denials() == ["replayed", "bad_signature"]
    assert _keys(keyed.machine) == keys_before
    assert AuditEvent.objects.filter(event_type__startswith="client_key.").count() == 1


def test_an_assertion_refused_for_its_key_is_spent(client, keyed, replace):
    assertion = keyed.assertion()
    _assert_invalid_request(
        replace(assertion, _private_jwk()),
        "Not a usable public key: a private or symmetric JWK: register the public key only.",
    )

    _assert_invalid_client(replace(assertion, _public_jwk(_ec_key())))
    assert _denials() == ["replayed"]


def test_repeated_failures_are_throttled_like_the_token_endpoint(client, keyed, replace):
    with time_machine.travel(time.time(), tick=False):
        statuses = [
            replace(keyed.assertion(key=_ec_key()), _public_jwk(_ec_key())).status_code
            for _ in range(6)
        ]
        throttled = replace(keyed.assertion(), _public_jwk(_ec_key()))
        token = _token(client, keyed.client_id, keyed.key)

    assert statuses == [401] * 6
    assert throttled.status_code == 429
    assert json.loads(throttled.content)["error"] == "slow_down"
    assert throttled["Retry-After"] == "1"
    assert token.status_code == 429  # the token endpoint shares the count
    assert [kid for kid, _ in _keys(keyed.machine)] == ["k1"]
    assert AuditEvent.objects.filter(event_type__startswith="client_key.").count() == 1


def test_a_secret_sending_a_jwk_is_refused_before_its_use_is_counted(
    client, machine_factory, cli_actor, committing
):
    registered = machine_factory()
    machine_update(
        actor=cli_actor,
        machine=registered.machine,
        auth_methods=["client_secret_basic", "private_key_jwt"],
    )
    ClientSecret.objects.filter(machine=registered.machine).delete()
    with committing():
        bootstrap, raw = secret_create(actor=cli_actor, machine=registered.machine, max_uses=1)
    events_before = AuditEvent.objects.count()

    response = client.post(
        URL,
        data=_form(jwk=json.dumps(_public_jwk(_ec_key()))),
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(registered.client_id, raw),
    )

    _assert_invalid_request(response, NEEDS_ASSERTION)
    bootstrap.refresh_from_db()
    assert bootstrap.use_count == 0
    assert ClientKey.objects.count() == 0
    assert ClientSecret.objects.filter(machine=registered.machine).count() == 1
    assert AuditEvent.objects.count() == events_before


def test_a_machine_with_both_methods_rotates_its_secret_with_an_assertion_and_no_jwk(
    client, keyed, replace, cli_actor
):
    machine_update(
        actor=cli_actor,
        machine=keyed.machine,
        auth_methods=["client_secret_basic", "private_key_jwt"],
    )
    secrets_before = ClientSecret.objects.filter(machine=keyed.machine).count()

    response = replace(keyed.assertion(), None)

    assert response.status_code == 201
    assert json.loads(response.content)["client_secret"].startswith("mip_cs_")
    assert ClientSecret.objects.filter(machine=keyed.machine).count() == secrets_before + 1
    assert [kid for kid, _ in _keys(keyed.machine)] == ["k1"]


def test_a_key_only_machine_without_a_jwk_is_told_it_has_no_secret(client, keyed, replace):
    response = replace(keyed.assertion(), None)

    assert response.status_code == 400
    assert json.loads(response.content)["error"] == "invalid_request"
    assert ClientSecret.objects.filter(machine=keyed.machine).count() == 1  # the fixture's
    assert [kid for kid, _ in _keys(keyed.machine)] == ["k1"]


def test_a_machine_publishing_its_keys_at_a_jwks_uri_cannot_replace_one(
    client, machine_factory, signing_key, oidc_issuer, settings, replace, cli_actor
):
    settings.JWKS_URI_ALLOW_PRIVATE = True  # the loopback issuer stands in for the machine
    remote_jwks.reset()
    registered = machine_factory(name="published")
    machine = machine_update(
        actor=cli_actor,
        machine=registered.machine,
        auth_methods=["private_key_jwt"],
        jwks_uri=oidc_issuer.url + "/jwks",
    )
    signer = oidc_issuer.signer
    assertion = signer.sign(
        claims={
            "iss": machine.client_id,
            "sub": machine.client_id,
            "aud": _self_url(),
            "exp": int(time.time()) + 60,
            "jti": secrets.token_urlsafe(16),
        },
        typ="JWT",
    )
    events_before = AuditEvent.objects.count()

    response = replace(assertion, _public_jwk(_ec_key()))

    _assert_invalid_request(
        response, "The machine publishes its keys at its jwks_uri: replace the key there."
    )
    assert ClientKey.objects.count() == 0
    assert Machine.objects.get(pk=machine.pk).jwks_uri == oidc_issuer.url + "/jwks"
    assert AuditEvent.objects.count() == events_before
    remote_jwks.reset()


def test_a_federated_machine_has_no_key_to_replace(
    client, signing_key, oidc_issuer, settings, replace, scope_read, audience_api, cli_actor
):
    settings.FEDERATION_ALLOW_PRIVATE_ISSUERS = True  # the test issuer is on loopback
    remote_jwks.reset()
    out = StringIO()
    call_command(
        "machine", "create", "--name", "deploy", "--scope", "read",
        "--audience", "https://api.example", "--auth-method", "federated_jwt", stdout=out,
    )  # fmt: skip
    machine = Machine.objects.get(client_id=json.loads(out.getvalue())["client_id"])
    trust_add(
        actor=cli_actor,
        machine=machine,
        issuer=oidc_issuer.url,
        audience=GITHUB_AUDIENCE,
        condition='claims.repository == "acme/billing"',
        template="github",
    )
    events_before = AuditEvent.objects.count()

    response = replace(
        oidc_issuer.github_token(), _public_jwk(_ec_key()), client_id=machine.client_id
    )

    _assert_invalid_request(response, NEEDS_ASSERTION)
    assert ClientKey.objects.count() == 0
    assert AuditEvent.objects.count() == events_before
    remote_jwks.reset()


def test_a_secret_only_machine_is_refused_a_key_assertion(client, machine_factory, replace):
    registered = machine_factory()
    assertion = _assertion(registered.client_id, _ec_key(), aud=_self_url())

    response = replace(assertion, _public_jwk(_ec_key()))

    _assert_invalid_client(response)
    assert _denials() == ["method_not_allowed"]
    assert ClientKey.objects.count() == 0
    assert ClientSecret.objects.filter(machine=registered.machine).count() == 1


def test_a_key_replaced_meanwhile_cannot_be_replaced_again(keyed, committing):
    # Two instances sharing k1 rotate at once: the second, serialised behind the first's
    # row lock, finds k1 gone.
    with committing():
        client_key_self_replace(
            machine=keyed.machine, signed_with="k1", jwk=_public_jwk(_ec_key(), kid="k2")
        )
    events_before = AuditEvent.objects.count()

    with pytest.raises(ValidationError) as refused:
        client_key_self_replace(
            machine=keyed.machine, signed_with="k1", jwk=_public_jwk(_ec_key(), kid="k3")
        )

    assert refused.value.messages == [
        "The key that signed this request is no longer registered (replaced meanwhile)."
    ]
    assert [kid for kid, _ in _keys(keyed.machine)] == ["k2"]
    assert AuditEvent.objects.count() == events_before
