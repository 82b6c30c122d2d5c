"""POST /api/v1/machines/self/secret: a machine rotates its own client secret.

Authenticated exactly as the token endpoint authenticates (``machine_authenticate``:
the same methods, the same throttling, the same 401 for a wrong, expired or
revoked credential, audited as a denial), so a fleet's cron job needs nothing
but its current credentials:

    curl -fsS -u "$CLIENT_ID:$CLIENT_SECRET" -X POST https://portal/api/v1/machines/self/secret

The answer is 201 with the new secret, shown this once (``Cache-Control:
no-store``); the previous secret keeps working for the machine's rotation
grace. The body may be empty or a form (``client_secret_post``); a JSON body
(a JWK replacing a ``private_key_jwt`` key) is refused until that method exists.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpResponse

from clients.services import secret_self_rotate
from core.errors import InvalidRequest
from tokens.views.protocol import form_parse, json_response, machine_authenticate, protocol_endpoint


def _epoch(value) -> int:
    # RFC 7591 section 3.2.1: client_secret_expires_at is 0 when the secret does not expire.
    return int(value.timestamp()) if value is not None else 0


@protocol_endpoint
def self_secret(request) -> HttpResponse:
    # An empty body, or a form (client_secret_post); anything else is refused.
    form = form_parse(request) if request.body else {}
    # Unknown parameters are ignored, as at the token endpoint (RFC 6749 section 3.2).
    authenticated, context = machine_authenticate(request, form)
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
