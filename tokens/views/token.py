"""POST /oauth/token: the grant types of ``tokens.grants`` (today RFC 6749 section 4.4).

Our own thin view in front of the token service (docs/design.md, decision 1, allows
it): the toolkit's oauthlib pipeline costs several statements and a
validator round per request, far over the hot path's budget. The protocol
behaviour is RFC 6749 sections 4.4, 5.1 and 5.2 with RFC 8707 resources, and
the tests in tests/tokens/test_token_endpoint.py pin it down.
"""

from __future__ import annotations

import dataclasses

from django.db import DatabaseError
from django.http import HttpResponse

from clients.auth_methods import CLIENT_AUTH_PARAMETERS
from core import metrics
from core.errors import InvalidRequest, OAuthError, ServerError, TemporarilyUnavailable
from tokens.constants import TOKEN_TYPE
from tokens.grants import grant_for
from tokens.services import token_issue
from tokens.views.protocol import (
    ClientRefused,
    form_parse,
    form_single,
    json_response,
    machine_authenticate,
    protocol_endpoint,
)


@protocol_endpoint
def token(request) -> HttpResponse:
    observed = TokenRequestObserved()
    try:
        response = _token(request, observed)
    except BaseException as exc:
        # Counted, not handled: protocol_endpoint answers it (or Django, for the unexpected).
        observed.count(exc)
        raise
    observed.count(None)
    return response


def _token(request, observed: TokenRequestObserved) -> HttpResponse:
    form = form_parse(request)
    grant_type = form_single(form, "grant_type")
    if grant_type is None:
        raise InvalidRequest("The grant_type parameter is missing.")
    grant = grant_for(grant_type)
    observed.grant = grant.grant_type
    # RFC 6749 section 3.2 (erratum 5708): the parameters the protocol defines may
    # not repeat; unknown ones are ignored, repeated or not.
    for name in (*grant.parameters, *CLIENT_AUTH_PARAMETERS):
        if len(form.get(name, ())) > 1:
            raise InvalidRequest(f"The parameter {name} is repeated.")
    authenticated, context = machine_authenticate(request, form)
    observed.auth_method = authenticated.method
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


class TokenRequestObserved:
    """What the metrics say about one token request: its grant, method and outcome.

    The grant is named only once the registry knows it and the method only once
    a registered method read the credentials, so no label value comes from the
    request as sent.
    """

    __slots__ = ("auth_method", "grant")

    def __init__(self) -> None:
        self.grant: str | None = None
        self.auth_method: str | None = None

    def count(self, exc: BaseException | None) -> None:
        if exc is None:
            metrics.token_issued(grant=self.grant, auth_method=self.auth_method)
            return
        if isinstance(exc, ClientRefused):
            reason, self.auth_method = exc.reason, exc.method
        elif isinstance(exc, OAuthError):
            reason = exc.error
        elif isinstance(exc, DatabaseError):
            reason = TemporarilyUnavailable.error
        else:
            reason = ServerError.error
        metrics.token_denied(grant=self.grant, auth_method=self.auth_method, reason=reason)
