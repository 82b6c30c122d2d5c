"""POST /oauth/token: the grant types of ``tokens.grants`` (today RFC 6749 section 4.4).

Our own thin view in front of the token service (docs/design.md, decision 1, allows
it): the toolkit's oauthlib pipeline costs several statements and a
validator round per request, far over the hot path's budget. The protocol
behaviour is RFC 6749 sections 4.4, 5.1 and 5.2 with RFC 8707 resources, and
the tests in tests/tokens/test_token_endpoint.py pin it down.
"""

from __future__ import annotations

import dataclasses

from django.http import HttpResponse

from clients.auth_methods import CLIENT_AUTH_PARAMETERS
from core.errors import InvalidRequest
from tokens.constants import TOKEN_TYPE
from tokens.grants import grant_for
from tokens.services import token_issue
from tokens.views.protocol import (
    form_parse,
    form_single,
    json_response,
    machine_authenticate,
    protocol_endpoint,
)


@protocol_endpoint
def token(request) -> HttpResponse:
    form = form_parse(request)
    grant_type = form_single(form, "grant_type")
    if grant_type is None:
        raise InvalidRequest("The grant_type parameter is missing.")
    grant = grant_for(grant_type)
    # RFC 6749 section 3.2 (erratum 5708): the parameters the protocol defines may
    # not repeat; unknown ones are ignored, repeated or not.
    for name in (*grant.parameters, *CLIENT_AUTH_PARAMETERS):
        if len(form.get(name, ())) > 1:
            raise InvalidRequest(f"The parameter {name} is repeated.")
    authenticated, context = machine_authenticate(request, form)
    decision = grant.decide(
        machine=authenticated.machine, params=grant.parse(form), context=context
    )
    if authenticated.details:  # what the credential adds to the token.issued event
        decision = dataclasses.replace(
            decision, details={**authenticated.details, **decision.details}
        )
    issued = token_issue(decision=decision, context=context)
    payload = {
        "access_token": issued.access_token,
        "token_type": TOKEN_TYPE,
        "expires_in": issued.expires_in,
    }
    if issued.scope:  # "" is not a scope (RFC 6749 section 3.3): no scopes, no member
        payload["scope"] = issued.scope
    if issued.id_token is not None:
        payload["id_token"] = issued.id_token
    return json_response(payload)
