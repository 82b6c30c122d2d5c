"""POST /api/v1/machines/self/secret: a machine rotates its own credentials.

Authenticated exactly as the token endpoint authenticates (``machine_authenticate``:
the same methods, the same throttling, the same 401 for a wrong, expired or
revoked credential, audited as a denial), so a fleet's cron job needs nothing
but its current credentials. The body is empty or a form, as at the token
endpoint; a JSON body is refused (400).

Without a ``jwk`` parameter the machine's client secret rotates:

    curl -fsS -u "$CLIENT_ID:$CLIENT_SECRET" -X POST https://portal/api/v1/machines/self/secret

The answer is 201 with the new secret, shown this once (``Cache-Control:
no-store``); the previous secret keeps working for the machine's rotation grace.

With ``jwk`` (one public JWK as a JSON string) the request must be a
``private_key_jwt`` assertion (``client_assertion_type`` and
``client_assertion`` in the same form), and the key that signed it is
replaced by the new one at once (``clients.services.client_key_self_replace``
says why without a grace); the answer is 201 with the new key's kid and
thumbprint. A ``jwk`` with any other authentication is refused with 400
before the credentials are checked, so a single-use secret is not spent on it.

At this endpoint a machine's own assertion must name this endpoint's URL in
``aud`` (``$ISSUER/api/v1/machines/self/secret``), not the token endpoint or
the issuer: an assertion made to get a token, if intercepted, can never
change the machine's credentials.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.urls import reverse

from clients.auth_methods.private_key_jwt import PRIVATE_KEY_JWT
from clients.services import client_key_self_replace, secret_self_rotate
from core.errors import InvalidRequest
from tokens.views.protocol import (
    form_parse,
    form_single,
    json_response,
    machine_authenticate,
    protocol_endpoint,
)

JWK_PARAMETER = "jwk"

# Per process: issuer -> the audiences (``reverse`` is not free; the answer changes
# only with the ISSUER setting).
_audiences: dict[str, frozenset[str]] = {}


def self_audiences() -> frozenset[str]:
    """What a machine's own assertion names in ``aud`` here: this endpoint's URL alone."""
    issuer = settings.ISSUER
    audiences = _audiences.get(issuer)
    if audiences is None:
        audiences = _audiences[issuer] = frozenset({issuer + reverse("machine-self-secret")})
    return audiences


def _epoch(value) -> int:
    # RFC 7591 section 3.2.1: client_secret_expires_at is 0 when the secret does not expire.
    return int(value.timestamp()) if value is not None else 0


def _jwk_read(text: str) -> dict[str, Any]:
    """The ``jwk`` parameter as a JSON object; its key is checked by the service.

    Its size is bounded by the form's (``MAX_FORM_BYTES``).
    """
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest("The jwk parameter is not JSON.") from exc
    if not isinstance(value, dict):
        raise InvalidRequest("The jwk parameter is one JWK: a JSON object, not a key set.")
    return value


def _replace_key(request, form: dict[str, list[str]], jwk_text: str) -> HttpResponse:
    jwk = _jwk_read(jwk_text)
    if not form.get("client_assertion"):
        # Refused before authentication: a bootstrap secret's single use is not spent.
        raise InvalidRequest(
            "A new key is sent with a private_key_jwt client_assertion signed by the key it "
            "replaces."
        )
    authenticated, context = machine_authenticate(
        request, form, assertion_audiences=self_audiences()
    )
    if authenticated.method != PRIVATE_KEY_JWT or authenticated.key_kid is None:
        # A federated assertion names no key of the machine's: there is none to replace.
        raise InvalidRequest(
            "A new key is sent with a private_key_jwt client_assertion signed by the key it "
            "replaces."
        )
    machine = authenticated.machine
    try:
        replacement = client_key_self_replace(
            machine=machine, signed_with=authenticated.key_kid, jwk=jwk, context=context
        )
    except ValidationError as exc:
        raise InvalidRequest(" ".join(exc.messages)) from exc
    return json_response(
        {
            "client_id": machine.client_id,
            "kid": replacement.key.kid,
            "thumbprint": replacement.key.thumbprint,
            "replaced_kid": replacement.replaced["kid"],
        },
        status=201,
    )


@protocol_endpoint
def self_secret(request) -> HttpResponse:
    # An empty body, or a form (client_secret_post, an assertion); anything else is refused.
    form = form_parse(request) if request.body else {}
    if JWK_PARAMETER in request.GET:
        # Ignored, it would rotate the secret instead of the key the caller meant.
        raise InvalidRequest("Send the jwk in the form body, not in the URL.")
    jwk_text = form_single(form, JWK_PARAMETER)
    if jwk_text is not None:
        return _replace_key(request, form, jwk_text)
    # Unknown parameters are ignored, as at the token endpoint (RFC 6749 section 3.2).
    authenticated, context = machine_authenticate(
        request, form, assertion_audiences=self_audiences()
    )
    machine = authenticated.machine
    try:
        rotation = secret_self_rotate(
            machine=machine, secret_id=authenticated.credential_id, context=context
        )
    except ValidationError as exc:
        # A machine allowed no secret method has no secret to rotate.
        raise InvalidRequest(" ".join(exc.messages)) from exc
    return json_response(
        {
            "client_id": machine.client_id,
            "client_secret": rotation.raw,
            "client_secret_expires_at": _epoch(rotation.expires_at),
            "previous_secret_expires_at": _epoch(rotation.previous_expire_at),
        },
        status=201,
    )
