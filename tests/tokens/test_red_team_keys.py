"""Red team: forged signing keys, scripted as the attacker of issue 10 would run them.

The attacker holds the application's database credentials, not the KEK. Each
attack is raw SQL over the application's own connection; the attacker also
inserts the ``IssuedToken`` record of every token they forge, so that the
only thing standing between them and an accepted token is the key's
authenticity. Expected: the forged or edited key is never published, never
verifies, ``/readyz`` names its kid, and one ``key.rejected`` event records it.
"""

import json
import os
import secrets
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.db import connection

from audit.models import AuditEvent
from core import jose
from tests.fixtures.tokens import API
from tests.tokens.helpers import FORM, basic, token_request
from tokens import key_material
from tokens.keyring import keyring_current, keyring_reset
from tokens.selectors import token_checksum, token_verify

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def _sql(statement: str, params: tuple = ()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


@pytest.fixture
def introspector(machine_factory):
    return machine_factory(name="gateway", scopes=("tokens:introspect",), default_scopes=())


class Attacker:
    """A P-256 key of the attacker's own, and the tokens they sign with it."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.public_jwk = jose.public_jwk(self.private.public_key())
        self.kid = jose.jwk_thumbprint(self.public_jwk)

    def made_up_blob(self) -> bytes:
        """Their private key encrypted under a KEK of their own: all they can make."""
        der = self.private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        nonce = os.urandom(12)
        aad = key_material.signing_key_aad(kid=self.kid, algorithm="ES256")
        return nonce + AESGCM(AESGCM.generate_key(bit_length=256)).encrypt(nonce, der, aad)

    def token(self, *, kid: str, machine) -> str:
        """An access token for ``machine`` with every scope, and its record planted."""
        now = int(time.time())
        jti = secrets.token_urlsafe(18)
        token = jose.Signer(kid=kid, algorithm="ES256", private_key=self.private).sign(
            typ="at+jwt",
            claims={
                "iss": settings.ISSUER,
                "sub": str(machine.subject),
                "aud": API,
                "client_id": machine.client_id,
                "scope": "orders:read orders:write admin",
                "iat": now,
                "exp": now + 600,
                "jti": jti,
            },
        )
        _sql(
            "INSERT INTO tokens_issuedtoken"
            " (jti, checksum, machine_id, scope, audience, issued_at, expires_at, kid)"
            " VALUES (%s, %s, %s, %s, %s, now(), now() + interval '10 minutes', %s)",
            (jti, token_checksum(token), machine.pk, "orders:read orders:write admin", API, kid),
        )
        return token


def _jwks(client) -> dict:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    return json.loads(response.content)


def _introspect(client, caller, token: str) -> dict:
    response = client.post(
        "/oauth/introspect",
        data=f"token={token}",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(caller.client_id, caller.secret),
    )
    assert response.status_code == 200
    return json.loads(response.content)


def _readyz(client) -> tuple[int, dict]:
    response = client.get("/readyz")
    return response.status_code, json.loads(response.content)


def _issue(client, registered) -> str:
    response = token_request(client, registered)
    assert response.status_code == 200, response.content
    return json.loads(response.content)["access_token"]


def _published(key) -> dict:
    return {**key.public_jwk, "kid": key.kid, "alg": key.algorithm, "use": "sig"}


def _rejections() -> list[tuple[str, str]]:
    return list(
        AuditEvent.objects.filter(event_type="key.rejected")
        .order_by("target_id")
        .values_list("target_id", "reason")
    )


def _another_process_loads() -> None:
    keyring_reset()
    keyring_current()


@pytest.mark.parametrize("blob", ["made_up", "copied_from_the_active_row"])
def test_a_pending_row_with_the_attackers_key_is_never_trusted(
    blob, client, signing_key, machine_factory, introspector
):
    attacker = Attacker()
    victim = machine_factory()
    keyring_current()  # this process has its ring; the INSERT below bumps no version
    if blob == "made_up":
        _sql(
            "INSERT INTO tokens_signingkey"
            " (kid, algorithm, state, public_jwk, private_key_wrapped, kek_id, created_at,"
            "  activate_after)"
            " VALUES (%s, 'ES256', 'pending', %s::jsonb, %s, 'k2', now(), now())",
            (attacker.kid, json.dumps(attacker.public_jwk), attacker.made_up_blob()),
        )
    else:
        _sql(
            "INSERT INTO tokens_signingkey"
            " (kid, algorithm, state, public_jwk, private_key_wrapped, kek_id, created_at,"
            "  activate_after)"
            " SELECT %s, 'ES256', 'pending', %s::jsonb, private_key_wrapped, kek_id, now(), now()"
            " FROM tokens_signingkey WHERE state = 'active'",
            (attacker.kid, json.dumps(attacker.public_jwk)),
        )
    forged = attacker.token(kid=attacker.kid, machine=victim.machine)

    # The probe reloads from the database, so it names the row at once.
    status, body = _readyz(client)
    assert status == 503
    assert body["checks"]["signing_keys_authentic"] is False
    assert body["key_problems"] == [{"kid": attacker.kid, "reason": "not_authentic"}]
    assert _jwks(client) == {"keys": [_published(signing_key)]}
    assert _introspect(client, introspector, forged) == {"active": False}
    assert token_verify(token=forged) is None
    keyring_reset()  # the next key change reloads every process: still not trusted
    assert _jwks(client) == {"keys": [_published(signing_key)]}
    assert _introspect(client, introspector, forged) == {"active": False}
    _another_process_loads()
    _jwks(client)
    assert _rejections() == [(attacker.kid, "not_authentic")]
    # The portal itself goes on: its own key signs and its tokens verify.
    own = _issue(client, victim)
    assert _introspect(client, introspector, own)["active"] is True


def test_the_active_rows_public_key_swapped_for_the_attackers(
    client, signing_key, machine_factory, introspector
):
    attacker = Attacker()
    victim = machine_factory()
    before = _issue(client, victim)
    _sql(
        "UPDATE tokens_signingkey SET public_jwk = %s::jsonb WHERE state = 'active'",
        (json.dumps(attacker.public_jwk),),
    )
    keyring_reset()
    forged = attacker.token(kid=signing_key.kid, machine=victim.machine)

    # The true public key, derived from the private half, not the edited column.
    assert _jwks(client) == {"keys": [_published(signing_key)]}
    assert _introspect(client, introspector, forged) == {"active": False}
    assert token_verify(token=forged) is None
    after = _issue(client, victim)
    for own in (before, after):
        assert _introspect(client, introspector, own)["active"] is True
        assert token_verify(token=own).record.signing_key_id == signing_key.kid
    status, body = _readyz(client)
    assert status == 503
    assert body["key_problems"] == [{"kid": signing_key.kid, "reason": "public_jwk_mismatch"}]
    _another_process_loads()
    assert _rejections() == [(signing_key.kid, "public_jwk_mismatch")]


def _two_keys(signing_key):
    from audit.context import Actor
    from tokens.services import signing_key_create

    pending = signing_key_create(actor=Actor.cli("test"))
    return sorted([signing_key.kid, pending.kid])


def test_blobs_swapped_between_two_rows_are_both_detected(
    client, signing_key, machine_factory, introspector
):
    own = _issue(client, machine_factory())
    first, second = _two_keys(signing_key)
    _sql(
        "UPDATE tokens_signingkey AS a SET private_key_wrapped = b.private_key_wrapped"
        " FROM tokens_signingkey AS b WHERE (a.kid, b.kid) IN ((%s, %s), (%s, %s))",
        (first, second, second, first),
    )
    keyring_reset()

    assert _jwks(client) == {"keys": []}
    assert _introspect(client, introspector, own) == {"active": False}
    status, body = _readyz(client)
    assert status == 503
    assert sorted(p["kid"] for p in body["key_problems"]) == [first, second]
    assert {p["reason"] for p in body["key_problems"]} == {"not_authentic"}
    assert body["checks"]["signing_key"] is False
    _another_process_loads()
    assert _rejections() == [(first, "not_authentic"), (second, "not_authentic")]


def test_kids_swapped_between_two_rows_are_both_detected(client, signing_key):
    first, second = _two_keys(signing_key)
    _sql("UPDATE tokens_signingkey SET kid = 'swap' WHERE kid = %s", (first,))
    _sql("UPDATE tokens_signingkey SET kid = %s WHERE kid = %s", (first, second))
    _sql("UPDATE tokens_signingkey SET kid = %s WHERE kid = 'swap'", (second,))
    keyring_reset()

    assert _jwks(client) == {"keys": []}
    status, body = _readyz(client)
    assert status == 503
    assert sorted((p["kid"], p["reason"]) for p in body["key_problems"]) == [
        (first, "not_authentic"),
        (second, "not_authentic"),
    ]
    assert _rejections() == [(first, "not_authentic"), (second, "not_authentic")]
