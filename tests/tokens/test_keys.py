import base64
import dataclasses
import io
import json

import pytest
import time_machine
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone
from jwcrypto import jwk as jwcrypto_jwk

from audit.context import Actor
from audit.models import AuditEvent
from core import jose
from tokens import key_material
from tokens.choices import KeyState
from tokens.keyring import keyring_current
from tokens.models import SigningKey
from tokens.selectors import jwks_document, token_record_for, token_verify
from tokens.services import (
    signing_key_create,
    signing_key_first_ensure,
    signing_key_revoke,
    signing_keys_advance,
    signing_keys_rewrap,
)

pytestmark = pytest.mark.django_db
ACTOR = Actor.cli("test")


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA", "RS256"])
def test_a_key_is_wrapped_under_the_newest_kek_with_its_thumbprint_as_kid(algorithm):
    key = signing_key_create(algorithm=algorithm, actor=ACTOR)

    assert key.kid == jwcrypto_jwk.JWK(**key.public_jwk).thumbprint()
    assert key.kek_id == "k2"
    assert key.state == KeyState.PENDING
    kek = settings.SERVER_SECRETS.key_encryption_keys["k2"]
    private = key_material.private_key_unwrap(
        bytes(key.private_key_wrapped), kek=kek, kid=key.kid, algorithm=algorithm
    )
    assert jose.public_jwk(private.public_key()) == key.public_jwk
    # The kid is bound as associated data: the blob does not decrypt as another key's.
    with pytest.raises(InvalidTag):
        key_material.private_key_unwrap(
            bytes(key.private_key_wrapped), kek=kek, kid="other", algorithm=algorithm
        )
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert der not in bytes(key.private_key_wrapped)
    if algorithm == "RS256":
        assert private.key_size >= 2048


def test_rotation_publishes_first_then_signs_then_retires_after_the_max_lifetime():
    first = signing_key_create(activate_now=True, actor=ACTOR)
    second = signing_key_create(actor=ACTOR)

    # Pending: published, not signing.
    assert [k["kid"] for k in jwks_document()["keys"]] == [first.kid, second.kid]
    assert keyring_current().signer("ES256").kid == first.kid
    signing_keys_advance()
    assert SigningKey.objects.get(pk=second.pk).state == KeyState.PENDING

    with time_machine.travel(
        timezone.now() + timezone.timedelta(seconds=settings.KEY_PUBLISH_DELAY)
    ):
        signing_keys_advance()
        assert keyring_current().signer("ES256").kid == second.kid
    first.refresh_from_db()
    assert first.state == KeyState.RETIRING
    assert [k["kid"] for k in jwks_document()["keys"]] == [first.kid, second.kid]

    later = timezone.now() + timezone.timedelta(
        seconds=settings.KEY_PUBLISH_DELAY + settings.ACCESS_TOKEN_MAX_TTL + 60
    )
    with time_machine.travel(later):
        signing_keys_advance()
    first.refresh_from_db()
    assert first.state == KeyState.RETIRED
    assert [k["kid"] for k in jwks_document()["keys"]] == [second.kid]
    events = list(
        AuditEvent.objects.filter(target_id=first.kid).values_list("event_type", "details")
    )
    assert [e[0] for e in events] == ["key.created", "key.activated", "key.retired", "key.retired"]
    assert [e[1].get("state") for e in events[2:]] == ["retiring", "retired"]


def test_revoking_the_active_key_withdraws_it_and_puts_a_fresh_key_in_its_place():
    key = signing_key_create(activate_now=True, actor=ACTOR)

    signing_key_revoke(kid=key.kid, actor=ACTOR)

    key.refresh_from_db()
    assert key.state == KeyState.REVOKED
    assert key.kid not in [k["kid"] for k in jwks_document()["keys"]]
    replacement = SigningKey.objects.get(state=KeyState.ACTIVE)
    assert replacement.algorithm == "ES256"
    assert keyring_current().signer("ES256").kid == replacement.kid
    assert key.kid not in keyring_current().verifiers
    assert AuditEvent.objects.filter(event_type="key.revoked", target_id=key.kid).count() == 1


def test_rewrap_moves_every_key_to_the_newest_kek():
    only_old = dataclasses.replace(
        settings.SERVER_SECRETS,
        key_encryption_keys={"k1": settings.SERVER_SECRETS.key_encryption_keys["k1"]},
    )
    with override_settings(SERVER_SECRETS=only_old):
        old = signing_key_create(activate_now=True, actor=ACTOR)
    assert old.kek_id == "k1"

    assert signing_keys_rewrap(actor=ACTOR) == 1
    assert signing_keys_rewrap(actor=ACTOR) == 0

    old.refresh_from_db()
    assert old.kek_id == "k2"
    assert keyring_current().signer("ES256").kid == old.kid
    assert AuditEvent.objects.filter(event_type="key.rewrapped").count() == 1


def test_first_signing_key_is_created_once():
    first = signing_key_first_ensure()
    second = signing_key_first_ensure()

    assert first is not None
    assert second is None
    assert list(SigningKey.objects.values_list("state", "algorithm")) == [("active", "ES256")]


def _keys(*args: str):
    out = io.StringIO()
    call_command("keys", *args, stdout=out)
    return out.getvalue()


def test_keys_command_rotates_lists_revokes_and_never_prints_private_material():
    created = json.loads(_keys("rotate", "--alg", "EdDSA", "--now"))
    pending = json.loads(_keys("rotate"))
    listed_out = _keys("list")
    wrapped = bytes(SigningKey.objects.get(kid=created["kid"]).private_key_wrapped)
    revoked = json.loads(_keys("revoke", created["kid"]))

    assert (created["algorithm"], created["state"]) == ("EdDSA", "active")
    assert (pending["algorithm"], pending["state"]) == ("ES256", "pending")
    listed = json.loads(listed_out)
    assert [(k["kid"], k["algorithm"], k["state"]) for k in listed] == [
        (created["kid"], "EdDSA", "active"),
        (pending["kid"], "ES256", "pending"),
    ]
    assert all("private_key_wrapped" not in k and "d" not in k for k in listed)
    assert base64.b64encode(wrapped).decode() not in listed_out
    assert wrapped.hex() not in listed_out
    assert revoked == {"kid": created["kid"], "state": "revoked"}
    # A revoked key's private half is erased: no UPDATE of its state revives it.
    assert bytes(SigningKey.objects.get(kid=created["kid"]).private_key_wrapped) == b""


def test_alg_confusion_never_verifies():
    key = signing_key_create(activate_now=True, actor=ACTOR)
    verifiers = keyring_current().verifiers
    signer = keyring_current().signer("ES256")
    good = jose.jws_parse(signer.sign(claims={"a": 1}, typ="at+jwt"))
    assert jose.jws_verify(good, verifiers).kid == key.kid

    for header in ({"alg": "none", "kid": key.kid}, {"alg": "HS256", "kid": key.kid}):
        forged = dataclasses.replace(good, header=header)
        with pytest.raises(jose.InvalidJWS):
            jose.jws_verify(forged, verifiers)
    with pytest.raises(jose.InvalidJWS):
        jose.jws_verify(dataclasses.replace(good, signature=b"\0" * 64), verifiers)


def test_of_two_due_pending_keys_the_newest_signs_and_the_other_never_does():
    signing_key_create(activate_now=True, actor=ACTOR)
    older = signing_key_create(actor=ACTOR)
    newer = signing_key_create(actor=ACTOR)

    later = timezone.now() + timezone.timedelta(seconds=settings.KEY_PUBLISH_DELAY + 1)
    with time_machine.travel(later):
        signing_keys_advance()
        signing_keys_advance()  # idempotent

    states = dict(SigningKey.objects.values_list("kid", "state"))
    assert states[newer.kid] == "active"
    assert states[older.kid] == "retired"
    assert sorted(states.values()) == ["active", "retired", "retiring"]


@pytest.mark.parametrize(
    "token",
    [
        "",
        "..",
        "a.b.c",
        "a.b",
        "a.b.c.d.e",
        "e30.e30.",
        "bnVsbA.e30.AA",  # header is JSON null
        "W10.e30.AA",  # header is a list
        "eyJhbGciOiJFUzI1NiIsImtpZCI6MX0.e30.AA",  # kid is a number
        "eyJhbGciOiJFUzI1NiJ9.gA.AA",  # claims are not UTF-8
        "eyJhbGciOiJFUzI1NiJ9.W1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tb.AA",  # deep nesting
        "eyJhbGciOiJFUzI1NiJ9.e30.A",  # impossible base64 length
        "é.é.é",
        "x" * 9000,
    ],
)
def test_junk_never_verifies_and_never_raises(token):
    signing_key_create(activate_now=True, actor=ACTOR)

    assert token_verify(token=token) is None
    assert token_record_for(token=token) is None


@pytest.mark.django_db
def test_keys_revoke_takes_a_kid_that_starts_with_a_dash(signing_key):
    # One kid in 64 starts with "-": argparse must not take it for an option.
    kid = "-" + signing_key.kid[1:]
    SigningKey.objects.filter(pk=signing_key.pk).update(kid=kid)
    out = io.StringIO()

    with pytest.raises(CommandError) as raised:
        call_command("keys", "revoke", "-" + "x" * 42, stdout=out)
    call_command("keys", "revoke", kid, stdout=out)

    assert str(raised.value) == f"No key {'-' + 'x' * 42!r}."
    assert json.loads(out.getvalue()) == {"kid": kid, "state": KeyState.REVOKED}
