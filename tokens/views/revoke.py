"""POST /oauth/revoke: RFC 7009 revocation of a machine's own access tokens.

The answer is 200 whether or not the token was the caller's, known or
valid (RFC 7009 section 2.2), so it tells nothing about other machines.
"""

from __future__ import annotations

from django.http import HttpResponse

from core.errors import InvalidRequest
from tokens.services import token_revoke
from tokens.views.protocol import (
    form_parse,
    form_single,
    machine_authenticate,
    protocol_endpoint,
)


@protocol_endpoint
def revoke(request) -> HttpResponse:
    form = form_parse(request)
    machine, context = machine_authenticate(request, form)
    token = form_single(form, "token")
    if token is None:
        raise InvalidRequest("The token parameter is missing.")
    form_single(form, "token_type_hint")
    token_revoke(machine=machine, token=token, context=context)
    response = HttpResponse(status=200)
    response["Cache-Control"] = "no-store"
    return response
