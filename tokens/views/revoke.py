"""POST /oauth/revoke: RFC 7009 revocation of a machine's own access tokens.

The answer is 200 whether or not the token was the caller's, known or
valid (RFC 7009 section 2.2), so it tells nothing about other machines.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from tokens.errors import InvalidRequest, OAuthError
from tokens.services import token_revoke
from tokens.views.protocol import (
    ClientRefused,
    error_response,
    form_parse,
    form_single,
    machine_authenticate,
)


@csrf_exempt
@require_POST
def revoke(request) -> HttpResponse:
    try:
        form = form_parse(request)
        machine, context = machine_authenticate(request)
        token = form_single(form, "token")
        if token is None:
            raise InvalidRequest("The token parameter is missing.")
        form_single(form, "token_type_hint")
    except ClientRefused as refused:
        return refused.response
    except OAuthError as error:
        return error_response(error)
    token_revoke(machine=machine, token=token, context=context)
    response = HttpResponse(status=200)
    response["Cache-Control"] = "no-store"
    return response
