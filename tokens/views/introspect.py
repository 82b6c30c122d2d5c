"""POST /oauth/introspect: RFC 7662 token introspection for machines allowed to ask.

The caller authenticates like at the token endpoint and must hold the scope
``tokens:introspect`` among its allowed scopes. Anything that is not an
active access token of ours answers ``{"active": false}`` and nothing more.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from tokens.constants import INTROSPECT_SCOPE
from tokens.errors import InsufficientScope, InvalidRequest, OAuthError
from tokens.selectors import machine_grants
from tokens.services import token_introspect
from tokens.views.protocol import (
    ClientRefused,
    error_response,
    form_parse,
    form_single,
    json_response,
    machine_authenticate,
)


@csrf_exempt
@require_POST
def introspect(request) -> HttpResponse:
    try:
        form = form_parse(request)
        machine, context = machine_authenticate(request)
        if INTROSPECT_SCOPE not in machine_grants(machine=machine).allowed_scopes:
            raise InsufficientScope(f"Introspection needs the scope {INTROSPECT_SCOPE}.")
        token = form_single(form, "token")
        if token is None:
            raise InvalidRequest("The token parameter is missing.")
        form_single(form, "token_type_hint")
    except ClientRefused as refused:
        return refused.response
    except OAuthError as error:
        return error_response(error)
    return json_response(token_introspect(machine=machine, token=token, context=context))
