"""Small request builders shared by the tokens tests."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote_plus

import jwt
from django.conf import settings

from tokens.selectors import jwks_document

FORM = "application/x-www-form-urlencoded"


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def token_request(client, registered, *, path="/oauth/token", **params):
    body = {"grant_type": "client_credentials", **params}
    return client.post(
        path,
        data="&".join(f"{k}={quote_plus(v)}" for k, v in body.items()),
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
    )


def form_body(**params: str) -> bytes:
    return "&".join(f"{k}={quote_plus(v)}" for k, v in params.items()).encode()


def issue_token(client, registered, **params) -> str:
    response = token_request(client, registered, **params)
    assert response.status_code == 200, response.content
    return json.loads(response.content)["access_token"]


def verify(token: str, *, audience: str, typ: str = "at+jwt") -> dict:
    """Verify with PyJWT against our JWKS document, as a resource server would."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == typ
    keys = jwt.PyJWKSet.from_dict(jwks_document())
    key = next(k for k in keys.keys if k.key_id == header["kid"])
    return jwt.decode(
        token,
        key=key,
        algorithms=[header["alg"]],
        audience=audience,
        issuer=settings.ISSUER,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )
