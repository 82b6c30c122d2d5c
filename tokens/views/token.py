"""POST /oauth/token: the client credentials grant (RFC 6749 section 4.4).

Our own thin view in front of the token service (DESIGN.md decision 1 allows
it): the toolkit's oauthlib pipeline costs several statements and a
validator round per request, far over the hot path's budget. The protocol
behaviour is RFC 6749 sections 4.4, 5.1 and 5.2 with RFC 8707 resources, and
the tests in tests/tokens/test_token_endpoint.py pin it down.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.http import HttpResponse

from core.errors import (
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    UnsupportedGrantType,
)
from tokens.constants import GRANT_CLIENT_CREDENTIALS, TOKEN_TYPE
from tokens.services import token_issue
from tokens.views.protocol import (
    form_parse,
    form_single,
    json_response,
    machine_authenticate,
    protocol_endpoint,
)

# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]{1,64}$")
MAX_SCOPES = 32


def _scopes(form) -> list[str] | None:
    value = form_single(form, "scope")
    if value is None:
        return None
    scopes = [item for item in value.split(" ") if item]
    if not scopes or len(scopes) > MAX_SCOPES or not all(map(_SCOPE_TOKEN.match, scopes)):
        raise InvalidScope("The scope parameter is malformed.")
    return scopes


def _resource(form) -> str | None:
    values = form.get("resource") or []
    if not values:
        return None
    if len(values) > 1:
        raise InvalidTarget("One resource per token.")
    resource = values[0]
    # RFC 8707 section 2: an absolute URI without a fragment.
    try:
        parts = urlsplit(resource)
    except ValueError as exc:  # e.g. "http://[::1": an unclosed IPv6 literal
        raise InvalidTarget("The resource must be an absolute URI without a fragment.") from exc
    if not parts.scheme or not (parts.netloc or parts.path) or "#" in resource:
        raise InvalidTarget("The resource must be an absolute URI without a fragment.")
    return resource


@protocol_endpoint
def token(request) -> HttpResponse:
    form = form_parse(request)
    grant_type = form_single(form, "grant_type")
    if grant_type is None:
        raise InvalidRequest("The grant_type parameter is missing.")
    if grant_type != GRANT_CLIENT_CREDENTIALS:
        raise UnsupportedGrantType("Only client_credentials is supported.")
    for name, values in form.items():
        if name != "resource" and len(values) > 1:
            raise InvalidRequest(f"The parameter {name} is repeated.")
    machine, context = machine_authenticate(request, form)
    issued = token_issue(
        machine=machine, scopes=_scopes(form), resource=_resource(form), context=context
    )
    payload = {
        "access_token": issued.access_token,
        "token_type": TOKEN_TYPE,
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    }
    if issued.id_token is not None:
        payload["id_token"] = issued.id_token
    return json_response(payload)
