"""Our tokens as outside libraries see them, over real HTTP against the live server."""

import time

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc.discovery import OpenIDProviderMetadata
from django.test import override_settings
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import KeySet

from audit.context import Actor
from clients.auth_methods import auth_methods_supported
from tests.fixtures.tokens import API, OTHER_API
from tokens.grants import grant_types_supported
from tokens.services import signing_key_create


@pytest.fixture
def issuer(live_server):
    with override_settings(ISSUER=live_server.url):
        yield live_server.url


def _discover(issuer: str, path: str = "/.well-known/oauth-authorization-server") -> dict:
    response = requests.get(issuer + path, timeout=10)
    assert response.status_code == 200
    return response.json()


def test_discovery_satisfies_rfc8414_validation_and_names_every_endpoint(issuer, signing_key):
    metadata = _discover(issuer)
    openid = _discover(issuer, "/.well-known/openid-configuration")

    AuthorizationServerMetadata(metadata).validate()
    OpenIDProviderMetadata(openid).validate()
    assert metadata == openid
    assert metadata["issuer"] == issuer
    assert metadata["token_endpoint"] == issuer + "/oauth/token"
    assert metadata["jwks_uri"] == issuer + "/.well-known/jwks.json"
    assert metadata["introspection_endpoint"] == issuer + "/oauth/introspect"
    assert metadata["revocation_endpoint"] == issuer + "/oauth/revoke"
    assert metadata["grant_types_supported"] == ["client_credentials"]
    assert metadata["token_endpoint_auth_methods_supported"] == auth_methods_supported()
    assert set(auth_methods_supported()) >= {
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "federated_jwt",
    }
    for endpoint in ("token", "introspection", "revocation"):
        assert metadata[f"{endpoint}_endpoint_auth_methods_supported"] == auth_methods_supported()
        assert metadata[f"{endpoint}_endpoint_auth_signing_alg_values_supported"] == [
            "ES256",
            "ES384",
            "EdDSA",
            "PS256",
            "RS256",
        ]
    assert metadata["grant_types_supported"] == grant_types_supported()
    assert metadata["id_token_signing_alg_values_supported"] == ["ES256", "EdDSA", "RS256"]
    assert "authorization_endpoint" not in metadata


def test_jwks_publishes_public_keys_only_with_a_short_cache(issuer, signing_key, settings):
    response = requests.get(issuer + "/.well-known/jwks.json", timeout=10)

    assert response.headers["Content-Type"] == "application/jwk-set+json"
    assert response.headers["Cache-Control"] == f"public, max-age={settings.JWKS_MAX_AGE}"
    assert settings.JWKS_MAX_AGE < settings.KEY_PUBLISH_DELAY
    (key,) = response.json()["keys"]
    assert sorted(key) == ["alg", "crv", "kid", "kty", "use", "x", "y"]
    assert key["kid"] == signing_key.kid


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA", "RS256"])
# joserfc prefers RFC 9864's "Ed25519" name; "EdDSA" is what the issue and most verifiers speak.
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
def test_authlib_performs_the_grant_from_discovery_and_pyjwkclient_verifies(
    issuer, machine_factory, settings, algorithm
):
    settings.TOKEN_SIGNING_ALGORITHM = algorithm
    signing_key_create(algorithm=algorithm, activate_now=True, actor=Actor.cli("test"))
    registered = machine_factory()
    metadata = _discover(issuer)
    session = OAuth2Session(
        client_id=registered.client_id,
        client_secret=registered.secret,
        token_endpoint_auth_method="client_secret_basic",
        scope="orders:read orders:write",
    )

    # Closing the session closes its keep-alive connection, so no live-server
    # thread is left waiting on it when the interpreter exits.
    with session:
        token = session.fetch_token(
            metadata["token_endpoint"], grant_type="client_credentials", resource=OTHER_API
        )

    assert token["token_type"] == "Bearer"
    assert token["scope"] == "orders:read orders:write"
    assert "refresh_token" not in token
    access_token = token["access_token"]
    signing = jwt.PyJWKClient(metadata["jwks_uri"]).get_signing_key_from_jwt(access_token)
    assert jwt.get_unverified_header(access_token)["typ"] == "at+jwt"
    claims = jwt.decode(
        access_token,
        key=signing,
        algorithms=[algorithm],
        audience=OTHER_API,
        issuer=issuer,
        options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
    )
    assert claims["client_id"] == registered.client_id
    assert claims["exp"] - claims["iat"] == 600
    # And authlib's JOSE library (joserfc) agrees.
    jwks = KeySet.import_key_set(requests.get(metadata["jwks_uri"], timeout=10).json())
    decoded = joserfc_jwt.decode(access_token, jwks, algorithms=[algorithm])
    joserfc_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": OTHER_API},
        exp={"essential": True},
    ).validate(decoded.claims)
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.claims["sub"] == str(registered.machine.subject)


def test_wrong_scope_and_wrong_audience_are_refused_with_rfc_codes(
    issuer, signing_key, machine_factory
):
    registered = machine_factory()
    token_endpoint = _discover(issuer)["token_endpoint"]
    auth = (registered.client_id, registered.secret)

    bad_scope = requests.post(
        token_endpoint,
        data={"grant_type": "client_credentials", "scope": "admin"},
        auth=auth,
        timeout=10,
    )
    bad_target = requests.post(
        token_endpoint,
        data={"grant_type": "client_credentials", "resource": "https://nope.example.test"},
        auth=auth,
        timeout=10,
    )

    assert (bad_scope.status_code, bad_scope.json()["error"]) == (400, "invalid_scope")
    assert (bad_target.status_code, bad_target.json()["error"]) == (400, "invalid_target")


def test_a_token_signed_before_a_rotation_still_verifies_from_jwks_while_retiring(
    issuer, signing_key, machine_factory
):
    registered = machine_factory()
    metadata = _discover(issuer)
    auth = (registered.client_id, registered.secret)
    old = requests.post(
        metadata["token_endpoint"], data={"grant_type": "client_credentials"}, auth=auth, timeout=10
    ).json()["access_token"]

    signing_key_create(activate_now=True, actor=Actor.cli("test"))
    new = requests.post(
        metadata["token_endpoint"], data={"grant_type": "client_credentials"}, auth=auth, timeout=10
    ).json()["access_token"]

    client = jwt.PyJWKClient(metadata["jwks_uri"], cache_keys=False)
    kids = set()
    for token in (old, new):
        key = client.get_signing_key_from_jwt(token)
        jwt.decode(token, key=key, algorithms=["ES256"], audience=API, issuer=issuer)
        kids.add(key.key_id)
    assert len(kids) == 2
    assert signing_key.kid in kids


def test_authlib_private_key_jwt_obtains_a_token(issuer, signing_key, machine_factory):
    from authlib.oauth2.rfc7523 import PrivateKeyJWT
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from clients.services import client_key_add, machine_update
    from core import jose

    registered = machine_factory(name="keyed")
    machine_update(
        actor=Actor.cli("test"), machine=registered.machine, auth_methods=["private_key_jwt"]
    )
    # authlib's PrivateKeyJWT reads its private key as RSA (RS256, its default).
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**jose.public_jwk(private_key.public_key()), "kid": "authlib-key"}
    client_key_add(actor=Actor.cli("test"), machine=registered.machine, jwk=jwk)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    metadata = _discover(issuer)
    assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]
    session = OAuth2Session(
        client_id=registered.client_id,
        client_secret=pem,
        # authlib's assertions live an hour by default; ours refuse more than five minutes.
        token_endpoint_auth_method=PrivateKeyJWT(
            metadata["token_endpoint"],
            headers={"kid": "authlib-key"},
            claims={"exp": int(time.time()) + 120},
        ),
        scope="orders:read",
    )

    with session:
        token = session.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")

    assert token["token_type"] == "Bearer"
    assert token["scope"] == "orders:read"
    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == registered.client_id
