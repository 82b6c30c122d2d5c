"""Registering private_key_jwt keys and a jwks_uri: CLI, console, what is refused."""

from __future__ import annotations

import json
import secrets
import time
from io import StringIO
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from audit.choices import EventType
from audit.models import AuditEvent
from clients.client_assertion import JWT_BEARER
from clients.models import ClientKey, ClientSecret, Machine
from core import jose
from tests.fixtures.core import console_login

FORM = "application/x-www-form-urlencoded"


def _run(*args) -> dict:
    out = StringIO()
    call_command(*args, stdout=out)
    return json.loads(out.getvalue())


def _counts():
    return (ClientKey.objects.count(), AuditEvent.objects.count())


def _ec_jwk(kid="k1", private=False):
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = {**jose.public_jwk(key.public_key()), "kid": kid}
    if private:
        jwk["d"] = jose.b64url(key.private_numbers().private_value.to_bytes(32, "big"))
    return key, jwk


def _write(tmp_path, value) -> str:
    path = tmp_path / "key.json"
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return str(path)


@pytest.fixture
def keyless(db):
    _run("audience", "create", "https://api.example")
    return _run(
        "machine", "create", "--name", "keyless", "--auth-method", "private_key_jwt",
        "--audience", "https://api.example",
    )  # fmt: skip


def test_a_machine_with_only_private_key_jwt_has_no_secret(keyless):
    assert keyless["auth_methods"] == ["private_key_jwt"]
    assert "client_secret" not in keyless
    assert ClientSecret.objects.count() == 0
    with pytest.raises(CommandError) as raised:
        call_command("machine", "rotate-secret", keyless["client_id"], stdout=StringIO())
    assert raised.value.returncode == 2
    assert ClientSecret.objects.count() == 0


def test_add_key_and_remove_key_print_json_and_are_audited(keyless, tmp_path):
    _, jwk = _ec_jwk("k1")

    added = _run("machine", "add-key", keyless["client_id"], "--jwk", _write(tmp_path, jwk))
    listed = _run("machine", "list")
    removed = _run("machine", "remove-key", keyless["client_id"], "k1")

    thumbprint = jose.jwk_thumbprint(jwk)
    assert added["added"]["kid"] == "k1"
    assert added["added"]["thumbprint"] == thumbprint
    assert [key["kid"] for key in listed[0]["keys"]] == ["k1"]
    assert removed["removed"] == {"kid": "k1", "thumbprint": thumbprint, "kty": "EC", "alg": ""}
    assert ClientKey.objects.count() == 0
    events = AuditEvent.objects.filter(
        event_type__in=[EventType.CLIENT_KEY_ADDED, EventType.CLIENT_KEY_REMOVED]
    ).order_by("id")
    assert [(e.event_type, e.actor_kind, e.details["kid"]) for e in events] == [
        ("client_key.added", "cli", "k1"),
        ("client_key.removed", "cli", "k1"),
    ]


def _small_rsa_jwk():
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - refused
    return jose.public_jwk(key.public_key())


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(lambda: _ec_jwk(private=True)[1], id="private-ec"),
        pytest.param(lambda: {"kty": "oct", "k": "c2VjcmV0"}, id="symmetric"),
        pytest.param(_small_rsa_jwk, id="rsa-1024"),
        pytest.param(lambda: {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}, id="p-521"),
        pytest.param(lambda: {"keys": [_ec_jwk()[1]]}, id="a-key-set"),
        pytest.param(lambda: {**_ec_jwk()[1], "alg": "HS256"}, id="alg-hs256"),
        pytest.param(lambda: {**_ec_jwk()[1], "alg": "RS256"}, id="alg-not-fitting"),
        pytest.param(lambda: {**_ec_jwk()[1], "use": "enc"}, id="use-enc"),
        pytest.param(lambda: {**_ec_jwk()[1], "kid": "k\x00"}, id="kid-nul"),
        pytest.param(lambda: "not json", id="not-json"),
        pytest.param(lambda: [1, 2], id="json-array"),
    ],
)
def test_add_key_refuses_anything_but_one_public_signing_key(keyless, tmp_path, content):
    before = _counts()

    with pytest.raises(CommandError) as raised:
        call_command(
            "machine", "add-key", keyless["client_id"], "--jwk", _write(tmp_path, content()),
            stdout=StringIO(),
        )  # fmt: skip

    assert raised.value.returncode == 2
    assert '"d"' not in str(raised.value) and "private_value" not in str(raised.value)
    assert _counts() == before


def test_a_third_key_and_a_duplicate_are_refused(keyless, tmp_path):
    for kid in ("k1", "k2"):
        _run("machine", "add-key", keyless["client_id"], "--jwk", _write(tmp_path, _ec_jwk(kid)[1]))
    before = _counts()

    for jwk in (_ec_jwk("k3")[1], _ec_jwk("k1")[1]):
        with pytest.raises(CommandError):
            call_command(
                "machine", "add-key", keyless["client_id"], "--jwk", _write(tmp_path, jwk),
                stdout=StringIO(),
            )  # fmt: skip

    assert _counts() == before


def test_remove_key_of_an_unknown_kid_exits_2(keyless):
    with pytest.raises(CommandError) as raised:
        call_command("machine", "remove-key", keyless["client_id"], "nope", stdout=StringIO())

    assert raised.value.returncode == 2


@pytest.mark.parametrize(
    "url",
    ["http://keys.example/jwks", "https://user:pw@keys.example/jwks", "ftp://keys.example/jwks"],
)
def test_a_jwks_uri_we_would_not_fetch_is_refused(keyless, url):
    with pytest.raises(CommandError) as raised:
        call_command("machine", "set-jwks-uri", keyless["client_id"], url, stdout=StringIO())

    assert raised.value.returncode == 2
    assert Machine.objects.get(client_id=keyless["client_id"]).jwks_uri == ""


def _assertion(signer: jose.Signer, client_id: str) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": settings.ISSUER,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(8),
    }
    return signer.sign(claims=claims, typ="JWT")


def _token(client, client_id: str, assertion: str):
    body = {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
        "client_id": client_id,
    }
    return client.post("/oauth/token", urlencode(body), content_type=FORM)


def test_keys_published_at_a_jwks_uri_verify_and_a_rotation_is_picked_up(
    client, keyless, oidc_issuer, signing_key, clean_cache, settings
):
    from core import remote_jwks

    settings.JWKS_URI_ALLOW_PRIVATE = True  # the loopback issuer stands in for the machine
    remote_jwks.reset()
    client_id = keyless["client_id"]
    result = _run("machine", "set-jwks-uri", client_id, oidc_issuer.url + "/jwks")
    first = _token(client, client_id, _assertion(oidc_issuer.signer, client_id))
    oidc_issuer.rotate()
    rotated = _token(client, client_id, _assertion(oidc_issuer.signer, client_id))

    assert result["jwks_uri"] == oidc_issuer.url + "/jwks"
    assert (first.status_code, rotated.status_code) == (200, 200), first.content
    assert oidc_issuer.requests.count("/jwks") == 2


def test_a_jwks_uri_row_written_in_the_database_is_never_fetched(
    client, keyless, oidc_issuer, signing_key, clean_cache, settings
):
    settings.JWKS_URI_ALLOW_PRIVATE = True
    client_id = keyless["client_id"]
    Machine.objects.filter(client_id=client_id).update(jwks_uri=oidc_issuer.url + "/jwks")

    response = _token(client, client_id, _assertion(oidc_issuer.signer, client_id))

    assert response.status_code == 401
    assert oidc_issuer.requests == []
    denial = AuditEvent.objects.get(event_type=EventType.TOKEN_DENIED)
    assert denial.reason == "no_registered_key"


def test_without_allow_private_a_loopback_jwks_uri_is_refused(keyless, oidc_issuer):
    with pytest.raises(CommandError):
        call_command(
            "machine", "set-jwks-uri", keyless["client_id"], oidc_issuer.url + "/jwks",
            stdout=StringIO(),
        )  # fmt: skip


def test_the_console_uploads_and_removes_a_key(client, keyless):
    admin = get_user_model().objects.create_superuser("root", "root@example.test", "pw-unused-1")
    console_login(client, admin)
    machine = Machine.objects.get(client_id=keyless["client_id"])
    _, jwk = _ec_jwk("console-key")
    _, private = _ec_jwk("leaky", private=True)

    refused = client.post(
        f"/console/clients/machine/{machine.pk}/keys/add/", {"jwk": json.dumps(private)}
    )
    added = client.post(
        f"/console/clients/machine/{machine.pk}/keys/add/", {"jwk": json.dumps(jwk)}
    )
    page = client.get(f"/console/clients/machine/{machine.pk}/change/").content.decode()
    key = ClientKey.objects.get()
    removed = client.post(f"/console/clients/machine/{machine.pk}/keys/{key.pk}/remove/")

    assert refused.status_code == 200
    assert "register the public key only" in refused.content.decode()
    assert added.status_code == 302
    assert "console-key" in page and "private_key_jwt" in page
    assert removed.status_code == 302
    assert ClientKey.objects.count() == 0
    actors = AuditEvent.objects.filter(event_type__startswith="client_key.").values_list(
        "actor_id", flat=True
    )
    assert list(actors) == [str(admin.pk), str(admin.pk)]


def test_an_auditor_cannot_add_a_key(client, keyless):
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user(username="aud", password="x", is_staff=True)
    user.groups.add(Group.objects.get(name="auditors"))
    console_login(client, user)
    machine = Machine.objects.get(client_id=keyless["client_id"])

    response = client.post(
        f"/console/clients/machine/{machine.pk}/keys/add/", {"jwk": json.dumps(_ec_jwk()[1])}
    )

    assert response.status_code == 403
    assert ClientKey.objects.count() == 0
