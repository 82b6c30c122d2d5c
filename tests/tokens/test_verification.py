"""Token verification, check by check: each test fails when one check is removed.

Every algorithm's signature is verified (ES256, EdDSA, RS256); the ``typ``
and the stored checksum are compared; a keyring sees another process's key
change once its check interval has passed, and not before.
"""

import io
import json

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

import tokens.keyring as keyring_module
from audit.context import Actor
from core import jose
from tests.tokens.helpers import token_request
from tokens import key_material
from tokens import selectors as token_selectors
from tokens.keyring import keyring_current
from tokens.models import IssuedToken, SigningKey
from tokens.selectors import token_checksum, token_record_for, token_verify
from tokens.services import signing_key_create

pytestmark = pytest.mark.django_db
ACTOR = Actor.cli("test")
ALGORITHMS = ["ES256", "EdDSA", "RS256"]


def _issue(client, registered) -> str:
    response = token_request(client, registered)
    assert response.status_code == 200, response.content
    return json.loads(response.content)["access_token"]


def _tampered(token: str) -> str:
    head, claims, signature = token.split(".")
    raw = bytearray(jose.b64url_decode(signature))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{claims}.{jose.b64url(bytes(raw))}"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_token_of_each_algorithm_verifies_and_a_tampered_or_foreign_one_is_refused(
    algorithm, client, machine_factory
):
    key = signing_key_create(algorithm=algorithm, activate_now=True, actor=ACTOR)
    with override_settings(TOKEN_SIGNING_ALGORITHM=algorithm):
        token = _issue(client, machine_factory())
    parsed = jose.jws_parse(token)
    verifiers = keyring_current().verifiers
    # Same kid and algorithm in the header, signed by a key that is not ours.
    foreign = jose.Signer(
        kid=key.kid, algorithm=algorithm, private_key=key_material.private_key_generate(algorithm)
    ).sign(claims=parsed.claims, typ="at+jwt")

    assert parsed.header == {"alg": algorithm, "kid": key.kid, "typ": "at+jwt"}
    assert jose.jws_verify(parsed, verifiers).kid == key.kid
    assert token_verify(token=token).claims == parsed.claims
    for bad in (_tampered(token), foreign):
        with pytest.raises(jose.InvalidJWS, match="bad signature"):
            jose.jws_verify(jose.jws_parse(bad), verifiers)
        assert token_verify(token=bad) is None
        assert token_record_for(token=bad) is None


def _resigned(token: str, *, typ: str = "at+jwt", extra: dict | None = None) -> str:
    """The same claims (and jti), validly signed again by our own active key."""
    claims = {**jose.jws_parse(token).claims, **(extra or {})}
    return keyring_current().signer("ES256").sign(claims=claims, typ=typ)


def test_a_validly_signed_token_that_is_not_the_stored_one_is_refused(
    client, signing_key, machine_factory
):
    token = _issue(client, machine_factory())
    # Signed by our key with the stored jti: only the checksum tells it apart.
    twin = _resigned(token, extra={"scope": "orders:read orders:write"})

    assert token_verify(token=token) is not None
    assert token_record_for(token=token) is not None
    assert token_verify(token=twin) is None
    assert token_record_for(token=twin) is None


def test_a_token_of_another_type_is_not_an_access_token(client, signing_key, machine_factory):
    token = _issue(client, machine_factory())
    id_typed = _resigned(token, typ="JWT")
    # The record matches it exactly: only the typ check refuses it.
    IssuedToken.objects.update(checksum=token_checksum(id_typed))

    assert token_verify(token=id_typed) is None
    # The control: the same setup with the access token type verifies.
    at_typed = _resigned(token)
    IssuedToken.objects.update(checksum=token_checksum(at_typed))
    assert token_verify(token=at_typed).claims == jose.jws_parse(token).claims


@pytest.mark.parametrize("claim", ["exp", "iat"])
def test_a_stored_token_whose_exp_or_iat_is_not_an_integer_is_refused(
    client, signing_key, machine_factory, claim
):
    token = _issue(client, machine_factory())
    claims = jose.jws_parse(token).claims
    odd = _resigned(token, extra={claim: claims[claim] + 0.5})
    # The record matches it exactly: only the type check refuses it.
    IssuedToken.objects.update(checksum=token_checksum(odd))

    assert token_verify(token=odd) is None


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_keyring_sees_another_process_change_after_the_interval_and_not_before(
    signing_key, monkeypatch, settings
):
    settings.KEYRING_CHECK_INTERVAL = 1.0
    clock = _Clock()
    monkeypatch.setattr(keyring_module, "monotonic", clock)
    ring = keyring_current()
    assert ring.signer("ES256").kid == signing_key.kid

    # Another process rotates: the rows change, and after its commit it bumps
    # the shared version; this process's ring is not touched.
    with monkeypatch.context() as other_process:
        other_process.setattr("tokens.services.keyring_changed", lambda: None)
        rotated = signing_key_create(activate_now=True, actor=ACTOR)
    cache.set(keyring_module.VERSION_CACHE_KEY, int(ring.version) + 1, timeout=None)

    clock.now += 0.999
    assert keyring_current() is ring
    assert ring.signer("ES256").kid == signing_key.kid

    clock.now += 0.002
    reloaded = keyring_current()
    assert reloaded is not ring
    assert reloaded.signer("ES256").kid == rotated.kid
    assert sorted(reloaded.verifiers) == sorted([signing_key.kid, rotated.kid])


def test_the_keyring_does_not_reload_while_the_shared_version_is_unchanged(
    signing_key, monkeypatch, settings
):
    settings.KEYRING_CHECK_INTERVAL = 1.0
    clock = _Clock()
    monkeypatch.setattr(keyring_module, "monotonic", clock)
    ring = keyring_current()

    clock.now += 30
    assert keyring_current() is ring
    assert ring.checked_at == clock.now


def _keys(*args: str) -> dict:
    out = io.StringIO()
    call_command("keys", *args, stdout=out)
    return json.loads(out.getvalue())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_keys_rotate_without_alg_uses_the_configured_signing_algorithm(algorithm):
    with override_settings(TOKEN_SIGNING_ALGORITHM=algorithm):
        created = _keys("rotate")

    assert (created["algorithm"], created["state"]) == (algorithm, "pending")
    assert SigningKey.objects.get(kid=created["kid"]).algorithm == algorithm


def test_a_token_is_inactive_from_the_second_of_its_exp(client, signing_key, machine_factory):
    # RFC 7519 4.1.4: "on or after" exp the token must not be accepted.
    token = _issue(client, machine_factory())
    exp = json.loads(jose.b64url_decode(token.split(".")[1]))["exp"]

    assert token_verify(token=token, now=exp - 0.001) is not None
    assert token_verify(token=token, now=exp) is None


def test_the_associated_data_of_a_wrapped_key_is_a_fixed_format():
    # Rows wrapped today must unwrap in every later release: the bytes are a contract.
    assert key_material.signing_key_aad(kid="k1", algorithm="ES256") == (
        b'mip tokens.SigningKey wrap v2\x00{"alg":"ES256","kid":"k1"}'
    )


def _counting_verifications(monkeypatch) -> list[str]:
    """The kids ``jose.jws_verify`` checked a signature with, in order."""
    checked = []
    real = jose.jws_verify

    def counted(parsed, verifiers):
        checked.append(parsed.header.get("kid"))
        return real(parsed, verifiers)

    monkeypatch.setattr(jose, "jws_verify", counted)
    return checked


def test_a_token_verified_once_is_not_verified_again_while_the_ring_is_the_same(
    client, signing_key, machine_factory, monkeypatch
):
    token = _issue(client, machine_factory())
    checked = _counting_verifications(monkeypatch)

    first = token_verify(token=token)
    first.claims["scope"] = "changed by a caller"
    second = token_verify(token=token)

    assert checked == [signing_key.kid]
    assert second.claims["scope"] == "orders:read"  # each call gets its own claims


def test_a_remembered_signature_does_not_keep_a_revoked_or_expired_token_active(
    client, signing_key, machine_factory
):
    token = _issue(client, machine_factory())
    exp = json.loads(jose.b64url_decode(token.split(".")[1]))["exp"]
    assert token_verify(token=token, now=exp - 1) is not None

    expired = token_verify(token=token, now=exp)
    IssuedToken.objects.filter(checksum=token_checksum(token)).update(revoked_at=timezone.now())

    assert expired is None
    assert token_verify(token=token, now=exp - 1) is None


def test_a_new_ring_verifies_every_signature_again(
    client, signing_key, machine_factory, monkeypatch
):
    token = _issue(client, machine_factory())
    assert token_verify(token=token) is not None
    checked = _counting_verifications(monkeypatch)
    ring = keyring_current()
    monkeypatch.setattr(
        "tokens.selectors.keyring_current",
        lambda: type(ring)(**{**vars(ring), "verifiers": {}}),
    )

    assert token_verify(token=token) is None  # the new ring has no key that verifies it
    assert checked == [signing_key.kid]


def test_the_remembered_signatures_are_bounded(client, signing_key, machine_factory, monkeypatch):
    monkeypatch.setattr(token_selectors, "SIGNATURES_REMEMBERED_MAX", 2)
    registered = machine_factory()
    tokens = [_issue(client, registered) for _ in range(3)]
    for token in tokens:
        assert token_verify(token=token) is not None
    checked = _counting_verifications(monkeypatch)

    assert token_verify(token=tokens[2]) is not None  # the newest two are remembered
    assert token_verify(token=tokens[1]) is not None
    assert token_verify(token=tokens[0]) is not None  # the oldest was forgotten
    assert checked == [signing_key.kid]
    assert len(token_selectors._signatures) == 2


def test_a_token_of_another_issuer_setting_is_not_ours(client, signing_key, machine_factory):
    # After ISSUER changes, the tokens issued under the old name are no longer ours,
    # although their records and keys are.
    token = _issue(client, machine_factory())
    assert token_verify(token=token) is not None

    with override_settings(ISSUER="https://portal.elsewhere.example"):
        assert token_verify(token=token) is None
