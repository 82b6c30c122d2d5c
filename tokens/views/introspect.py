"""POST /oauth/introspect: RFC 7662 token introspection for machines allowed to ask.

The caller authenticates like at the token endpoint and must hold the scope
``tokens:introspect`` among its allowed scopes. Anything that is not an
active access token of ours answers ``{"active": false}`` and nothing more;
so does an active token none of whose audiences the caller may itself address
(RFC 7662 section 4, RFC 9068 section 4), and that probe is audited as a failure.
"""

from __future__ import annotations

from django.http import HttpResponse

from core.errors import InsufficientScope, InvalidRequest
from tokens.constants import INTROSPECT_SCOPE
from tokens.selectors import machine_grants
from tokens.services import token_introspect
from tokens.views.protocol import (
    form_parse,
    form_single,
    json_response,
    machine_authenticate,
    protocol_endpoint,
)


@protocol_endpoint
def introspect(request) -> HttpResponse:
    form = form_parse(request)
    authenticated, context = machine_authenticate(request, form)
    machine = authenticated.machine
    if INTROSPECT_SCOPE not in machine_grants(machine=machine).allowed_scopes:
        raise InsufficientScope(f"Introspection needs the scope {INTROSPECT_SCOPE}.")
    token = form_single(form, "token")
    if token is None:
        raise InvalidRequest("The token parameter is missing.")
    form_single(form, "token_type_hint")
    return json_response(token_introspect(machine=machine, token=token, context=context))
