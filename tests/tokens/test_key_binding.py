"""Signing keys bound to the KEK: only an authentic row is published, signs or verifies.

The attacker of issue 10 writes to the database but holds no KEK. These tests
write rows through the ORM (any database); tests/tokens/test_red_team_keys.py
runs the same attacks with raw SQL on PostgreSQL.
"""

import importlib
import io
import json
import logging
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from audit.context import Actor
from audit.models import AuditEvent
from core import jose
from tokens import key_material
from tokens.keyring import keyring_current, keyring_reload, keyring_reset
from tokens.models import SigningKey
from tokens.selectors import jwks_document
from tokens.services import signing_key_create, signing_key_revoke, signing_keys_rewrap

pytestmark = pytest.mark.django_db
ACTOR = Actor.cli("test")
KEK_K2 = settings.SERVER_SECRETS.key_encryption_keys["k2"]


def _attacker_key() -> tuple[ec.EllipticCurvePrivateKey, dict[str, str], str]:
    private = ec.generate_private_key(ec.SECP256R1())
    public = jose.public_jwk(private.public_key())
    return private, public, jose.jwk_thumbprint(public)


def _forged_row(*, public: dict, kid: str, wrapped: bytes, state="pending", kek_id="k2"):
    return SigningKey.objects.create(
        kid=kid,
        algorithm="ES256",
        state=state,
        public_jwk=public,
        private_key_wrapped=wrapped,
        kek_id=kek_id,
        created_at=timezone.now(),
        activate_after=timezone.now(),
    )


def _jwk(key: SigningKey) -> dict[str, str]:
    return {**key.public_jwk, "kid": key.kid, "alg": key.algorithm, "use": "sig"}


def _rejections() -> list[tuple[str, str, str, dict]]:
    return list(
        AuditEvent.objects.filter(event_type="key.rejected")
        .order_by("id")
        .values_list("target_id", "reason", "outcome", "details")
    )


def _problems() -> list[tuple[str, str, bool]]:
    return [(p.kid, p.reason, p.trusted) for p in keyring_current().problems]


def test_a_forged_pending_row_is_not_published_never_verifies_and_is_recorded_once(
    signing_key, client, caplog
):
    private, public, kid = _attacker_key()
    _forged_row(public=public, kid=kid, wrapped=os.urandom(200))
    keyring_reset()

    with caplog.at_level(logging.WARNING, logger="tokens.keyring"):
        ring = keyring_current()
        keyring_reload()  # a later load in this process: not logged again
        keyring_reset()  # a load in another process: logged there, no second event
        keyring_current()

    assert jwks_document() == {"keys": [_jwk(signing_key)]}
    assert list(ring.verifiers) == [signing_key.kid]
    assert {a: s.kid for a, s in ring.signers.items()} == {"ES256": signing_key.kid}
    forged = jose.Signer(kid=kid, algorithm="ES256", private_key=private)
    with pytest.raises(jose.InvalidJWS):
        jose.jws_verify(jose.jws_parse(forged.sign(claims={}, typ="at+jwt")), ring.verifiers)
    assert _problems() == [(kid, "not_authentic", False)]
    assert _rejections() == [
        (
            kid,
            "not_authentic",
            "failure",
            {"kid": kid, "reason": "not_authentic", "still_trusted": False},
        )
    ]
    assert [r.getMessage() for r in caplog.records] == [
        f"keyring: signing key {kid!r} is not trusted: not_authentic"
    ] * 2
    response = client.get("/readyz")
    assert response.status_code == 503
    body = json.loads(response.content)
    assert body["checks"]["signing_keys_authentic"] is False
    assert body["checks"]["signing_key"] is True
    assert body["key_problems"] == [{"kid": kid, "reason": "not_authentic"}]
    assert len(_rejections()) == 1


def test_a_copy_of_another_rows_blob_does_not_authenticate_under_another_kid(signing_key):
    _private, public, kid = _attacker_key()
    _forged_row(public=public, kid=kid, wrapped=bytes(signing_key.private_key_wrapped))
    keyring_reset()

    assert _problems() == [(kid, "not_authentic", False)]
    assert list(keyring_current().verifiers) == [signing_key.kid]


def test_a_row_planted_after_another_is_recorded_at_the_next_reload(signing_key):
    # The first planted row is already reported: that must not stop the second.
    _private, public, first = _attacker_key()
    _forged_row(public=public, kid=first, wrapped=bytes(signing_key.private_key_wrapped))
    keyring_reset()
    keyring_current()
    _private, public, second = _attacker_key()
    _forged_row(public=public, kid=second, wrapped=bytes(signing_key.private_key_wrapped))

    keyring_reload()

    assert [(kid, reason) for kid, reason, *_ in _rejections()] == [
        (first, "not_authentic"),
        (second, "not_authentic"),
    ]


def test_an_edited_public_jwk_is_ignored_the_derived_key_is_published_and_reported(
    signing_key, client
):
    true_jwk = dict(signing_key.public_jwk)
    _private, attacker_public, _ = _attacker_key()
    SigningKey.objects.filter(pk=signing_key.pk).update(public_jwk=attacker_public)
    keyring_reset()

    assert jwks_document() == {
        "keys": [{**true_jwk, "kid": signing_key.kid, "alg": "ES256", "use": "sig"}]
    }
    ring = keyring_current()
    assert ring.signers["ES256"].kid == signing_key.kid
    assert jose.public_jwk(ring.verifiers[signing_key.kid].public_key) == true_jwk
    assert _problems() == [(signing_key.kid, "public_jwk_mismatch", True)]
    assert _rejections() == [
        (
            signing_key.kid,
            "public_jwk_mismatch",
            "failure",
            {"kid": signing_key.kid, "reason": "public_jwk_mismatch", "still_trusted": True},
        )
    ]
    body = json.loads(client.get("/readyz").content)
    assert body["key_problems"] == [{"kid": signing_key.kid, "reason": "public_jwk_mismatch"}]


def test_swapped_blobs_are_both_rejected(signing_key):
    pending = signing_key_create(actor=ACTOR)
    first, second = bytes(signing_key.private_key_wrapped), bytes(pending.private_key_wrapped)
    SigningKey.objects.filter(pk=signing_key.pk).update(private_key_wrapped=second)
    SigningKey.objects.filter(pk=pending.pk).update(private_key_wrapped=first)
    keyring_reset()

    ring = keyring_current()
    assert _problems() == [
        (signing_key.kid, "not_authentic", False),
        (pending.kid, "not_authentic", False),
    ]
    assert (ring.verifiers, ring.signers, ring.jwks) == ({}, {}, ())
    # Every distrusted row of one load is recorded, not just the first.
    assert [(kid, reason) for kid, reason, *_ in _rejections()] == [
        (signing_key.kid, "not_authentic"),
        (pending.kid, "not_authentic"),
    ]


def test_a_row_that_claims_another_algorithm_is_rejected(signing_key):
    SigningKey.objects.filter(pk=signing_key.pk).update(algorithm="EdDSA")
    keyring_reset()

    assert _problems() == [(signing_key.kid, "not_authentic", False)]


def _wrap(private, *, kid: str, algorithm: str) -> bytes:
    return key_material.private_key_wrap(private, kek=KEK_K2, kid=kid, algorithm=algorithm)


def test_a_wrapped_key_of_the_wrong_type_or_kid_is_rejected_even_under_our_kek(db):
    # Rows that only a bug of ours (holding the KEK) could write: pinned all the same.
    ed = ed25519.Ed25519PrivateKey.generate()
    ed_kid = jose.jwk_thumbprint(jose.public_jwk(ed.public_key()))
    _forged_row(
        public=jose.public_jwk(ed.public_key()),
        kid=ed_kid,
        wrapped=_wrap(ed, kid=ed_kid, algorithm="ES256"),
    )
    private, public, _kid = _attacker_key()
    _forged_row(
        public=public,
        kid="not-its-thumbprint",
        wrapped=_wrap(private, kid="not-its-thumbprint", algorithm="ES256"),
    )
    _forged_row(public=public, kid="unknown-kek", wrapped=b"x" * 64, kek_id="k9")
    keyring_reset()

    assert _problems() == [
        (ed_kid, "wrong_key_type", False),
        ("not-its-thumbprint", "kid_mismatch", False),
        ("unknown-kek", "unknown_kek", False),
    ]
    assert keyring_current().jwks == ()


def test_a_revoked_key_brought_back_by_an_update_is_not_trusted(signing_key):
    old = signing_key
    signing_key_revoke(kid=old.kid, actor=ACTOR)
    SigningKey.objects.filter(state="active").update(state="retired")
    SigningKey.objects.filter(pk=old.pk).update(state="active", revoked_at=None)
    keyring_reset()

    assert _problems() == [(old.kid, "not_authentic", False)]
    assert keyring_current().signers == {}


def test_rewrap_never_launders_a_forged_row(signing_key):
    _private, public, kid = _attacker_key()
    # Under the old KEK, so rewrap would pick it up if it re-encrypted blindly.
    _forged_row(public=public, kid=kid, wrapped=os.urandom(200), kek_id="k1")

    assert signing_keys_rewrap(actor=ACTOR) == 0

    forged = SigningKey.objects.get(kid=kid)
    assert forged.kek_id == "k1"
    assert _problems() == [(kid, "not_authentic", False)]
    assert not AuditEvent.objects.filter(event_type="key.rewrapped").exists()


# --- the migration path ------------------------------------------------------------


def _wrap_format_1(private, *, kid: str) -> bytes:
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    nonce = os.urandom(12)
    return nonce + AESGCM(KEK_K2).encrypt(nonce, der, kid.encode("ascii"))


_MIGRATION = importlib.import_module("tokens.migrations.0003_signing_key_identity_binding")


def _rebind():
    _MIGRATION.rebind(apps, None)


def test_a_format_1_row_is_not_trusted_until_the_migration_rebinds_it(db):
    private = ec.generate_private_key(ec.SECP256R1())
    public = jose.public_jwk(private.public_key())
    kid = jose.jwk_thumbprint(public)
    legacy = _forged_row(public=public, kid=kid, wrapped=_wrap_format_1(private, kid=kid))
    legacy_revoked = ec.generate_private_key(ec.SECP256R1())
    revoked_kid = jose.jwk_thumbprint(jose.public_jwk(legacy_revoked.public_key()))
    revoked = _forged_row(
        public=jose.public_jwk(legacy_revoked.public_key()),
        kid=revoked_kid,
        wrapped=_wrap_format_1(legacy_revoked, kid=revoked_kid),
        state="revoked",
    )
    _attacker, attacker_public, attacker_kid = _attacker_key()
    _forged_row(public=attacker_public, kid=attacker_kid, wrapped=os.urandom(200))
    keyring_reset()
    assert _problems() == [(kid, "not_authentic", False), (attacker_kid, "not_authentic", False)]

    _rebind()
    keyring_reset()

    assert _problems() == [(attacker_kid, "not_authentic", False)]
    assert [j["kid"] for j in keyring_current().jwks] == [kid]
    legacy.refresh_from_db()
    assert (
        jose.public_jwk(
            key_material.private_key_unwrap(
                bytes(legacy.private_key_wrapped), kek=KEK_K2, kid=kid, algorithm="ES256"
            ).public_key()
        )
        == public
    )
    # Never to be trusted again, so not re-bound.
    assert bytes(SigningKey.objects.get(pk=revoked.pk).private_key_wrapped) == bytes(
        revoked.private_key_wrapped
    )


def test_the_migration_reverses_to_format_1_and_forward_again(signing_key):
    _MIGRATION.unbind(apps, None)
    keyring_reset()
    assert _problems() == [(signing_key.kid, "not_authentic", False)]

    _rebind()
    keyring_reset()
    assert _problems() == []
    assert keyring_current().signer("ES256").kid == signing_key.kid


def test_keys_list_names_the_problem_of_a_distrusted_row(signing_key):
    _private, public, kid = _attacker_key()
    _forged_row(public=public, kid=kid, wrapped=os.urandom(200))
    keyring_reset()
    out = io.StringIO()

    call_command("keys", "list", stdout=out)

    listed = json.loads(out.getvalue())
    assert [(k["kid"], k["state"], k["problem"]) for k in listed] == [
        (signing_key.kid, "active", None),
        (kid, "pending", "not_authentic"),
    ]
