import dataclasses
import hashlib
import hmac
import json
from urllib.parse import quote_plus

import jwt
import pytest
import time_machine
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.utils import timezone

from audit.context import Actor
from audit.models import AuditEvent
from core import jose
from tests.tokens.helpers import FORM, basic, token_request
from tokens.keyring import keyring_current
from tokens.models import IssuedToken
from tokens.services import signing_key_create, signing_key_revoke, signing_keys_advance

pytestmark = pytest.mark.django_db


def _issue(client, registered, **params) -> str:
    response = token_request(client, registered, **params)
    assert response.status_code == 200, response.content
    return json.loads(response.content)["access_token"]


def _post(client, path, caller, **params):
    return client.post(
        path,
        data="&".join(f"{k}={quote_plus(v)}" for k, v in params.items()),
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(caller.client_id, caller.secret),
    )


def _introspect(client, caller, token) -> dict:
    response = _post(client, "/oauth/introspect", caller, token=token)
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    return json.loads(response.content)


def test_an_active_token_introspects_with_its_claims(
    client, signing_key, machine_factory, introspector
):
    registered = machine_factory()
    token = _issue(client, registered)

    answer = _introspect(client, introspector, token)

    claims = jwt.decode(token, options={"verify_signature": False})
    assert answer == {"active": True, "token_type": "Bearer", **claims}
    event = AuditEvent.objects.get(event_type="token.introspected")
    assert (event.actor_id, event.target_id, event.details) == (
        introspector.client_id,
        claims["jti"],
        {"active": True},
    )


def test_a_caller_without_the_introspect_scope_is_refused(client, signing_key, machine_factory):
    registered = machine_factory()
    token = _issue(client, registered)

    response = _post(client, "/oauth/introspect", registered, token=token)

    assert response.status_code == 403
    assert json.loads(response.content)["error"] == "insufficient_scope"
    assert not AuditEvent.objects.filter(event_type="token.introspected").exists()


def test_an_unauthenticated_caller_gets_invalid_client(client, signing_key, introspector):
    response = client.post(
        "/oauth/introspect",
        data="token=abc",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(introspector.client_id, "wrong"),
    )

    assert response.status_code == 401
    assert json.loads(response.content)["error"] == "invalid_client"


def _forged_tokens(token: str, signing_key) -> dict[str, str]:
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims
    public_pem = jwt.algorithms.ECAlgorithm.from_jwk(
        json.dumps(signing_key.public_jwk)
    ).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    segments = token.split(".")
    # The classic confusion: HMAC keyed with the (public) verification key.
    hs_header = jose.b64url(
        json.dumps({"alg": "HS256", "kid": header["kid"], "typ": "at+jwt"}).encode()
    )
    hs_input = f"{hs_header}.{segments[1]}".encode()
    hs256 = f"{hs_input.decode()}." + jose.b64url(
        hmac.new(public_pem, hs_input, hashlib.sha256).digest()
    )
    none_header = jose.b64url(json.dumps({"alg": "none", "kid": header["kid"]}).encode())
    wrong_kid = jose.b64url(json.dumps({**header, "kid": "not-a-key"}).encode())
    flipped = segments[2][:-2] + ("AA" if not segments[2].endswith("AA") else "BB")
    tampered_claims = jose.b64url(json.dumps({**claims, "scope": "orders:write"}).encode())
    return {
        "alg none": f"{none_header}.{segments[1]}.",
        "alg none with signature": f"{none_header}.{segments[1]}.{segments[2]}",
        "HS256 with the public key": hs256,
        "wrong kid": f"{wrong_kid}.{segments[1]}.{segments[2]}",
        "forged signature": f"{segments[0]}.{segments[1]}.{flipped}",
        "tampered claims": f"{segments[0]}.{tampered_claims}.{segments[2]}",
        "malformed": "not.a.jwt",
        "garbage": "x" * 5000,
        # json.loads refuses integers of more than 4300 digits with ValueError.
        "huge integer claim": f"{segments[0]}."
        + jose.b64url(b'{"a":' + b"1" * 4400 + b"}")
        + f".{segments[2]}",
        "non-ascii": "é.é.é",
    }


def test_forged_or_malformed_tokens_are_inactive(
    client, signing_key, machine_factory, introspector
):
    token = _issue(client, machine_factory())

    answers = {
        name: _introspect(client, introspector, forged)
        for name, forged in _forged_tokens(token, signing_key).items()
    }

    assert answers == {name: {"active": False} for name in answers}
    assert _introspect(client, introspector, token)["active"] is True


def test_an_expired_token_is_inactive(client, signing_key, machine_factory, introspector):
    token = _issue(client, machine_factory(ttl=60))

    with time_machine.travel(timezone.now() + timezone.timedelta(seconds=61)):
        assert _introspect(client, introspector, token) == {"active": False}


def test_a_disabled_machines_tokens_are_inactive(
    client, signing_key, machine_factory, introspector
):
    registered = machine_factory()
    token = _issue(client, registered)

    type(registered.machine).objects.filter(pk=registered.machine.pk).update(enabled=False)

    assert _introspect(client, introspector, token) == {"active": False}


def test_a_machine_revokes_its_own_token_and_nobody_elses(
    client, signing_key, machine_factory, introspector
):
    owner = machine_factory(name="owner")
    other = machine_factory(name="other")
    token = _issue(client, owner)

    by_other = _post(client, "/oauth/revoke", other, token=token)
    still_active = _introspect(client, introspector, token)["active"]
    by_owner = _post(client, "/oauth/revoke", owner, token=token, token_type_hint="access_token")
    again = _post(client, "/oauth/revoke", owner, token=token)
    junk = _post(client, "/oauth/revoke", owner, token="junk")

    assert [r.status_code for r in (by_other, by_owner, again, junk)] == [400, 200, 200, 200]
    assert json.loads(by_other.content)["error"] == "unauthorized_client"
    assert still_active is True
    assert _introspect(client, introspector, token) == {"active": False}
    assert IssuedToken.objects.get().revoked_at is not None
    events = AuditEvent.objects.filter(event_type="token.revoked").order_by("id")
    assert [(e.actor_id, e.outcome, e.reason) for e in events] == [
        (other.client_id, "failure", "not_own_token"),
        (owner.client_id, "success", ""),
        (owner.client_id, "success", ""),
        (owner.client_id, "failure", "unknown_token"),
    ]


def test_revocation_needs_client_authentication(client, signing_key, machine_factory):
    owner = machine_factory()
    token = _issue(client, owner)

    response = client.post("/oauth/revoke", data=f"token={token}", content_type=FORM)

    assert response.status_code == 401
    assert IssuedToken.objects.get().revoked_at is None


def test_a_token_of_a_revoked_key_is_inactive_even_in_a_process_that_still_holds_the_key(
    client, signing_key, machine_factory, introspector
):
    token = _issue(client, machine_factory())
    stale_ring = keyring_current()

    # Another process revokes the key; this one has not reloaded its ring yet.
    signing_key_revoke(kid=signing_key.kid, actor=Actor.cli("test"))
    import tokens.keyring as keyring_module

    keyring_module._ring = stale_ring
    keyring_module.cache.set(keyring_module.VERSION_CACHE_KEY, int(stale_ring.version), None)

    assert keyring_current() is stale_ring
    assert _introspect(client, introspector, token) == {"active": False}


def test_a_token_signed_before_a_rotation_verifies_while_its_key_is_retiring(
    client, signing_key, machine_factory, introspector
):
    registered = machine_factory()
    token = _issue(client, registered)

    signing_key_create(activate_now=True, actor=Actor.cli("test"))
    new_token = _issue(client, registered)

    signing_key.refresh_from_db()
    assert signing_key.state == "retiring"
    assert jwt.get_unverified_header(token)["kid"] == signing_key.kid
    assert jwt.get_unverified_header(new_token)["kid"] != signing_key.kid
    assert _introspect(client, introspector, new_token)["active"] is True
    assert _introspect(client, introspector, token)["active"] is True
    # Once retired (every token it signed has expired), it verifies nothing.
    later = timezone.now() + timezone.timedelta(seconds=settings.ACCESS_TOKEN_MAX_TTL + 61)
    with time_machine.travel(later):
        signing_keys_advance()
    signing_key.refresh_from_db()
    assert signing_key.state == "retired"
    assert signing_key.kid not in keyring_current().verifiers


def test_alg_confusion_in_the_keyring_dataclass_is_not_possible(signing_key):
    verifier = keyring_current().verifiers[signing_key.kid]
    assert dataclasses.is_dataclass(verifier)
    assert verifier.algorithm == "ES256"


def test_introspect_and_revoke_answer_405_in_json_to_other_methods(client, introspector):
    for path in ("/oauth/introspect", "/oauth/revoke", "/oauth/token"):
        response = client.get(path)

        assert response.status_code == 405
        assert response["Allow"] == "POST"
        assert response["Content-Type"] == "application/json"
        assert json.loads(response.content) == {
            "error": "invalid_request",
            "error_description": "Use POST.",
        }
