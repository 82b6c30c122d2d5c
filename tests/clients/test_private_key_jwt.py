"""private_key_jwt (RFC 7523 2.2, OpenID Connect Core 9) at the token endpoint.

A machine registers public keys and signs short assertions; every refusal is
the same ``invalid_client`` answer, throttled like a wrong secret, with the
precise reason only in the ``token.denied`` event.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.conf import settings

from audit.choices import EventType
from audit.context import Actor
from audit.models import AuditEvent
from clients.client_assertion import JWT_BEARER
from clients.constants import THROTTLE_CLIENT_IP_FREE_FAILURES
from clients.credentials import client_key_binding
from clients.models import ClientKey, Machine
from clients.services import client_key_add, machine_disable, machine_update
from core import jose
from tests.fixtures.oidc_issuer import hmac_token, unsigned_token
from tokens.models import IssuedToken
from tokens.views.protocol import INVALID_CLIENT_BODY

FORM = "application/x-www-form-urlencoded"
ACTOR = Actor.cli("pytest")


@dataclass
class Keyed:
    machine: Machine
    client_id: str
    signer: jose.Signer

    def assertion(self, *, signer: jose.Signer | None = None, **overrides) -> str:
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": settings.ISSUER + "/oauth/token",
            "iat": now,
            "exp": now + 120,
            "jti": secrets.token_urlsafe(16),
        }
        claims.update(overrides)
        claims = {name: value for name, value in claims.items() if value is not None}
        return (signer or self.signer).sign(claims=claims, typ="JWT")


def _ec_signer(kid: str) -> jose.Signer:
    return jose.Signer(
        kid=kid, algorithm="ES256", private_key=ec.generate_private_key(ec.SECP256R1())
    )


def _jwk(signer: jose.Signer, **extra) -> dict:
    return {**jose.public_jwk(signer.private_key.public_key()), "kid": signer.kid, **extra}


@pytest.fixture
def keyed(machine_factory, signing_key, clean_cache) -> Keyed:
    registered = machine_factory(name="signer")
    machine = machine_update(
        actor=ACTOR, machine=registered.machine, auth_methods=["private_key_jwt"]
    )
    signer = _ec_signer("k1")
    client_key_add(actor=ACTOR, machine=machine, jwk=_jwk(signer))
    return Keyed(machine=machine, client_id=machine.client_id, signer=signer)


def _post(client, assertion: str | None, **extra):
    form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER, **extra}
    if assertion is not None:
        form["client_assertion"] = assertion
    return client.post("/oauth/token", urlencode(form), content_type=FORM)


def _denials() -> list[str]:
    events = AuditEvent.objects.filter(event_type=EventType.TOKEN_DENIED).order_by("id")
    return [event.reason for event in events]


def _assert_invalid_client(response) -> None:
    assert response.status_code == 401
    assert response.content == INVALID_CLIENT_BODY
    assert response["WWW-Authenticate"].startswith("Basic")


def test_a_signed_assertion_gets_a_token_and_the_event_names_the_key(client, keyed):
    response = _post(client, keyed.assertion())

    assert response.status_code == 200, response.content
    assert response.json()["token_type"] == "Bearer"
    issued = AuditEvent.objects.get(event_type=EventType.TOKEN_ISSUED)
    assert (issued.details["auth_method"], issued.details["client_key"]) == (
        "private_key_jwt",
        "k1",
    )
    assert IssuedToken.objects.filter(machine=keyed.machine).count() == 1


@pytest.mark.parametrize("aud", ["issuer", ["https://elsewhere.example", "issuer"]])
def test_the_issuer_as_audience_is_accepted_alone_or_in_a_list(client, keyed, aud):
    aud = (
        [settings.ISSUER if a == "issuer" else a for a in aud]
        if isinstance(aud, list)
        else (settings.ISSUER)
    )

    assert _post(client, keyed.assertion(aud=aud)).status_code == 200


@pytest.mark.parametrize("algorithm", ["ES384", "EdDSA", "PS256", "RS256"])
def test_every_allowed_algorithm_verifies(client, keyed, algorithm):
    key = {
        "ES384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate,
        "PS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }[algorithm]()
    signer = jose.Signer(kid="k2", algorithm=algorithm, private_key=key)
    client_key_add(actor=ACTOR, machine=keyed.machine, jwk=_jwk(signer))

    assert _post(client, keyed.assertion(signer=signer)).status_code == 200


def _flip_signature(token: str) -> str:
    head, _, signature = token.rpartition(".")
    raw = bytearray(jose.b64url_decode(signature))
    raw[5] ^= 1
    return head + "." + jose.b64url(bytes(raw))


def _now() -> int:
    return int(time.time())


REFUSALS = {
    "wrong_iss": (lambda k: k.assertion(iss="someone-else"), "iss_sub_mismatch"),
    "wrong_sub": (lambda k: k.assertion(sub="someone-else"), "iss_sub_mismatch"),
    "wrong_aud": (lambda k: k.assertion(aud="https://elsewhere.example/token"), "wrong_audience"),
    "no_aud": (lambda k: k.assertion(aud=None), "wrong_audience"),
    "expired": (lambda k: k.assertion(exp=_now() - 1), "expired"),
    "exp_too_far": (lambda k: k.assertion(exp=_now() + 300 + 31), "exp_too_far"),
    "no_exp": (lambda k: k.assertion(exp=None), "exp_missing"),
    "nbf_future": (lambda k: k.assertion(nbf=_now() + 120), "not_yet_valid"),
    "iat_future": (lambda k: k.assertion(iat=_now() + 120), "issued_in_future"),
    "no_jti": (lambda k: k.assertion(jti=None), "jti_missing"),
    "alg_none": (
        # "x.y." has no signature segment: refused as it is decoded.
        lambda k: unsigned_token({"iss": k.client_id, "sub": k.client_id, "exp": _now() + 60}),
        "malformed_assertion",
    ),
    "hs256_with_public_key": (
        lambda k: hmac_token(
            {"iss": k.client_id, "sub": k.client_id, "aud": settings.ISSUER, "exp": _now() + 60,
             "jti": "x"},
            key=json.dumps(_jwk(k.signer)).encode(),
            kid="k1",
        ),
        "algorithm_not_allowed",
    ),
    "unknown_kid": (lambda k: k.assertion(signer=_ec_signer("k9")), "unknown_key"),
    "bad_signature": (lambda k: _flip_signature(k.assertion()), "bad_signature"),
    "another_key_same_kid": (lambda k: k.assertion(signer=_ec_signer("k1")), "bad_signature"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_each_refusal_is_the_same_invalid_client_with_its_reason_audited(client, keyed, case):
    make, reason = REFUSALS[case]

    response = _post(client, make(keyed), client_id=keyed.client_id)

    _assert_invalid_client(response)
    assert _denials() == [reason]
    assert IssuedToken.objects.count() == 0


def test_a_replayed_assertion_is_refused(client, keyed):
    assertion = keyed.assertion()

    first = _post(client, assertion)
    second = _post(client, assertion)

    assert first.status_code == 200
    _assert_invalid_client(second)
    assert _denials() == ["replayed"]
    # The key that verified the replay is named, as for every refusal after the signature.
    assert AuditEvent.objects.get(event_type=EventType.TOKEN_DENIED).details == {
        "method": "private_key_jwt",
        "kid": "k1",
    }
    assert IssuedToken.objects.count() == 1


def test_the_key_of_another_machine_is_refused(client, keyed, machine_factory):
    other = machine_factory(name="other")
    machine_update(actor=ACTOR, machine=other.machine, auth_methods=["private_key_jwt"])
    other_signer = _ec_signer("theirs")
    client_key_add(actor=ACTOR, machine=other.machine, jwk=_jwk(other_signer))

    response = _post(client, keyed.assertion(signer=other_signer))

    _assert_invalid_client(response)
    assert _denials() == ["unknown_key"]


def test_a_machine_not_allowed_the_method_is_refused(client, keyed):
    machine_update(actor=ACTOR, machine=keyed.machine, auth_methods=["client_secret_basic"])

    response = _post(client, keyed.assertion())

    _assert_invalid_client(response)
    assert _denials() == ["method_not_allowed"]


def test_a_key_planted_in_the_database_verifies_nothing(client, keyed, caplog):
    planted = _ec_signer("planted")
    ClientKey.objects.create(
        machine=keyed.machine,
        kid="planted",
        thumbprint="t" * 43,
        public_jwk=_jwk(planted),
        binding="0" * 64,
        pepper_id=ClientKey.objects.get().pepper_id,
        created_at=keyed.machine.created,
    )

    response = _post(client, keyed.assertion(signer=planted))

    _assert_invalid_client(response)
    assert _denials() == ["unknown_key"]
    assert "client key 'planted'" in caplog.text and "fails its binding" in caplog.text


def test_a_key_moved_from_another_machine_verifies_nothing(client, keyed, machine_factory):
    other = machine_factory(name="other")
    other_signer = _ec_signer("moved")
    key = client_key_add(actor=ACTOR, machine=other.machine, jwk=_jwk(other_signer))
    ClientKey.objects.filter(pk=key.pk).update(machine=keyed.machine)  # one UPDATE in SQL

    response = _post(client, keyed.assertion(signer=other_signer))

    _assert_invalid_client(response)
    assert _denials() == ["unknown_key"]


def test_a_binding_computed_by_the_server_is_what_makes_the_key_count(client, keyed):
    # The same planted row with the binding only the server's pepper can compute works:
    # the binding, not the row's presence, is what the check rests on.
    planted = _ec_signer("planted")
    jwk = _jwk(planted)
    pepper_id = ClientKey.objects.get().pepper_id
    ClientKey.objects.create(
        machine=keyed.machine,
        kid="planted",
        thumbprint=jose.jwk_thumbprint(jwk),
        public_jwk=jwk,
        binding=client_key_binding(client_id=keyed.client_id, public_jwk=jwk, pepper_id=pepper_id),
        pepper_id=pepper_id,
        created_at=keyed.machine.created,
    )

    assert _post(client, keyed.assertion(signer=planted)).status_code == 200


MALFORMED = [
    "",
    "abc",
    "a.b.c",
    "..",
    "a.b",
    "x" * 9000,
    jose.b64url(b"[]") + "." + jose.b64url(b"{}") + ".AA",
    jose.b64url(b'{"alg":"ES256"}') + "." + jose.b64url(b"not json") + ".AA",
    jose.b64url(b'{"alg":"ES256","kid":7}') + "." + jose.b64url(b'{"iss":"x","sub":"x"}') + ".AA",
    jose.b64url(b'{"alg":"ES256","crit":["b64"]}') + "." + jose.b64url(b'{"iss":1,"sub":1}') + ".A",
    jose.b64url(b'{"alg":"ES256"}') + "." + jose.b64url(b'{"exp":NaN,"iss":"a","sub":"a"}') + ".AA",
    jose.b64url(b'{"alg":"ES256"}') + "." + jose.b64url(b'{"iss":["a"],"sub":["a"]}') + ".AA",
    "é.é.é",
    "a.b.c\x00",
    jose.b64url(b'{"alg":"ES256"}') + "." + jose.b64url(b"[" * 5000) + ".AA",
]


@pytest.mark.parametrize("assertion", MALFORMED)
def test_a_malformed_assertion_of_any_shape_is_a_4xx_that_issues_nothing(client, keyed, assertion):
    response = _post(client, assertion, client_id=keyed.client_id)

    assert response.status_code in (400, 401), response.content
    assert response.json()["error"] in ("invalid_request", "invalid_client")
    assert IssuedToken.objects.count() == 0


@pytest.mark.parametrize("assertion", MALFORMED[1:5])
def test_a_malformed_assertion_with_a_client_id_is_audited(client, keyed, assertion):
    _assert_invalid_client(_post(client, assertion, client_id=keyed.client_id))

    assert _denials() in (["malformed_assertion"], ["assertion_too_large"])


@pytest.mark.parametrize(
    ("form", "status", "answer"),
    [
        (
            {"client_assertion": "a.b.c", "client_assertion_type": None},
            400,
            {
                "error": "invalid_request",
                "error_description": "client_assertion and client_assertion_type go together",
            },
        ),
        (
            {"client_assertion_type": "urn:example:other"},
            401,
            {"error": "invalid_client", "error_description": "Client authentication failed."},
        ),
    ],
)
def test_half_an_assertion_or_another_type_is_refused(client, keyed, form, status, answer):
    body = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER, **form}
    body = {name: value for name, value in body.items() if value is not None}
    if "client_assertion" not in body:
        body["client_assertion"] = keyed.assertion()

    response = client.post("/oauth/token", urlencode(body), content_type=FORM)

    assert (response.status_code, response.json()) == (status, answer)
    assert IssuedToken.objects.count() == 0


def test_an_assertion_and_a_secret_together_are_refused(client, keyed, machine_factory):
    response = _post(client, keyed.assertion(), client_id=keyed.client_id, client_secret="s")

    assert response.status_code == 400
    assert response.json()["error_description"] == "use one client authentication method, not two"


def test_failures_are_throttled_like_a_wrong_secret(client, keyed):
    for _ in range(THROTTLE_CLIENT_IP_FREE_FAILURES + 1):
        _assert_invalid_client(_post(client, keyed.assertion(aud="https://elsewhere.example")))

    blocked = _post(client, keyed.assertion())

    assert blocked.status_code == 429
    assert blocked.json()["error"] == "slow_down"
    assert int(blocked["Retry-After"]) >= 1
    assert IssuedToken.objects.count() == 0


def test_the_jti_replay_cache_falls_back_to_the_database_when_the_cache_is_down(keyed):
    from unittest import mock

    from redis.exceptions import ConnectionError as RedisConnectionError

    from clients.client_assertion import assertion_jti_consume
    from clients.models import UsedAssertion

    now = time.time()
    with mock.patch("clients.client_assertion.cache.add", side_effect=RedisConnectionError()):
        first = assertion_jti_consume(issuer="m", jti="j", expires_at=now + 60, now=now)
        again = assertion_jti_consume(issuer="m", jti="j", expires_at=now + 60, now=now)
        after_expiry = assertion_jti_consume(
            issuer="m", jti="j", expires_at=now + 200, now=now + 61
        )

    assert (first, again, after_expiry) == (True, False, True)
    assert UsedAssertion.objects.count() == 1


def test_the_purge_deletes_the_replay_rows_of_expired_assertions_only(db):
    from datetime import UTC, datetime, timedelta

    from clients.client_assertion import used_assertions_purge
    from clients.models import UsedAssertion

    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    for key, expires_at in (
        ("a", now - timedelta(seconds=1)),
        ("b", now),
        ("c", now + timedelta(seconds=1)),
    ):
        UsedAssertion.objects.create(key=key * 48, expires_at=expires_at)

    deleted = used_assertions_purge(now=now)

    assert deleted == 2
    assert list(UsedAssertion.objects.values_list("key", flat=True)) == ["c" * 48]


@pytest.mark.parametrize(("length", "recorded"), [(255, 128), (256, 0)])
def test_an_issuer_longer_than_a_client_id_names_no_machine(client, keyed, length, recorded):
    """With no form client_id the machine is the assertion's issuer, if it can be a client_id
    (at most 255 printable characters); a longer one names no machine, so none is recorded."""
    issuer = "m" * length

    _assert_invalid_client(_post(client, keyed.assertion(iss=issuer, sub=issuer)))

    denied = AuditEvent.objects.get(event_type=EventType.TOKEN_DENIED)
    assert (denied.reason, denied.actor_id, denied.target_id) == (
        "unknown_client",
        issuer[:recorded],
        issuer[:recorded],
    )


def test_a_disabled_machines_denial_keeps_the_key_that_verified(client, keyed):
    machine_disable(actor=ACTOR, machine=keyed.machine)

    _assert_invalid_client(_post(client, keyed.assertion()))

    denied = AuditEvent.objects.get(event_type=EventType.TOKEN_DENIED)
    assert (denied.reason, denied.details) == (
        "machine_disabled",
        {"method": "private_key_jwt", "auth_method": "private_key_jwt", "client_key": "k1"},
    )
