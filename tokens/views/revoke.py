"""POST /oauth/revoke: RFC 7009 revocation of a machine's own access tokens.

200 for the caller's own token and for a token that is unknown, invalid or
already revoked (RFC 7009 section 2.2); 400 ``unauthorized_client`` for a
token issued to another client (section 2.1: refused, and the client told).
The 200 carries no content, hence no ``Content-Type``: the client reads only
the status (section 2.2), and ``no-store`` keeps it out of caches.
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
    authenticated, context = machine_authenticate(request, form)
    machine = authenticated.machine
    token = form_single(form, "token")
    if token is None:
        raise InvalidRequest("The token parameter is missing.")
    form_single(form, "token_type_hint")
    token_revoke(machine=machine, token=token, context=context)
    response = HttpResponse(status=200)
    del response["Content-Type"]  # no content (RFC 9110 section 8.3), not an empty text/html page
    response["Cache-Control"] = "no-store"
    return response
