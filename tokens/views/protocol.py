"""What the protocol endpoints share: strict form parsing, client auth, RFC error bodies.

Parsing is ours rather than Django's ``request.POST`` because RFC 6749
section 3.2 wants duplicated parameters refused (Django keeps the last one)
and because a body that is not UTF-8 must be refused, not silently replaced.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from urllib.parse import parse_qsl

from django.db import DatabaseError
from django.http import HttpResponse
from django.http.multipartparser import parse_header_parameters
from django.views.decorators.csrf import csrf_exempt

from audit.context import RequestContext, request_context
from clients.authentication import (
    AuthenticatedClient,
    client_authenticate,
    client_credentials_from_request,
)
from core import metrics
from core.errors import (
    InvalidClient,
    InvalidRequest,
    OAuthError,
    SlowDown,
    TemporarilyUnavailable,
)
from tokens.constants import MAX_FORM_BYTES, MAX_FORM_FIELDS

logger = logging.getLogger(__name__)

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
BASIC_REALM = 'Basic realm="Machine Identity Portal"'
# One body for every client authentication failure: an unknown client and a
# wrong secret must be indistinguishable from outside.
INVALID_CLIENT_BODY = json.dumps(
    {"error": InvalidClient.error, "error_description": InvalidClient().description}
).encode("ascii")


# One encoder for every answer: ``json.dumps`` with ``separators`` builds a new one per call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def json_response(payload: dict, *, status: int = 200) -> HttpResponse:
    """JSON that no cache keeps (RFC 6749 section 5.1)."""
    response = HttpResponse(
        _COMPACT_JSON.encode(payload), status=status, content_type="application/json"
    )
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


def error_response(error: OAuthError) -> HttpResponse:
    payload = {"error": error.error}
    if error.description:
        payload["error_description"] = error.description
    response = json_response(payload, status=error.status)
    if error.status == 401:
        response["WWW-Authenticate"] = BASIC_REALM
    return response


def invalid_client_response() -> HttpResponse:
    """RFC 6749 section 5.2: 401 ``invalid_client``, always with a challenge.

    RFC 6749 requires the challenge when the client used Basic; RFC 9110
    section 15.5.2 requires one on every 401, so a client that sent its
    credentials in the body, or none, is told which scheme to use too.
    """
    response = HttpResponse(INVALID_CLIENT_BODY, status=401, content_type="application/json")
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    response["WWW-Authenticate"] = BASIC_REALM
    return response


def throttled_response(error: SlowDown) -> HttpResponse:
    response = error_response(error)
    response["Retry-After"] = str(max(1, int(error.retry_after)))
    return response


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def _has_control_characters(value: str) -> bool:
    return _CONTROL_CHARACTER.search(value) is not None


def form_parse(request) -> dict[str, list[str]]:
    """The form parameters of a POST, refusing anything that is not a clean form.

    Raises ``InvalidRequest`` for a wrong content type, an oversized body,
    bytes that are not UTF-8, control characters (NUL included) or more
    parameters than ``MAX_FORM_FIELDS``. Empty values are dropped: RFC 6749
    section 3.1 treats a parameter sent without a value as omitted. Repeated
    parameters are kept: only the protocol's own may not repeat (``form_single``
    and the token endpoint), unknown ones are ignored (RFC 6749 section 3.2).
    """
    content_type, params = parse_header_parameters(request.META.get("CONTENT_TYPE", ""))
    if content_type != FORM_CONTENT_TYPE:
        raise InvalidRequest(f"The body must be {FORM_CONTENT_TYPE}.")
    if params.get("charset", "utf-8").lower() != "utf-8":
        raise InvalidRequest("The body must be UTF-8.")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = MAX_FORM_BYTES + 1
    if declared > MAX_FORM_BYTES:
        raise InvalidRequest("The body is too large.")
    body = request.body
    if len(body) > MAX_FORM_BYTES:
        raise InvalidRequest("The body is too large.")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("The body is not a valid UTF-8 form.") from exc
    # Counted as parse_qsl's max_num_fields would, but answered with the real problem.
    if text.count("&") + 1 > MAX_FORM_FIELDS:
        raise InvalidRequest("The body has too many parameters.")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest("The body is not a valid UTF-8 form.") from exc
    form: dict[str, list[str]] = {}
    for name, value in pairs:
        if _has_control_characters(name) or _has_control_characters(value):
            raise InvalidRequest("Parameters must not contain control characters.")
        if value:
            form.setdefault(name, []).append(value)
    return form


def form_single(form: dict[str, list[str]], name: str) -> str | None:
    """One parameter's value; a repeated parameter is refused (RFC 6749 section 3.2)."""
    values = form.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidRequest(f"The parameter {name} is repeated.")
    return values[0]


class ClientRefused(Exception):
    """Client authentication did not succeed; ``response`` says how to answer.

    ``reason`` and ``method`` are for the metrics (code words, never input):
    the audit reason of a failed authentication, ``throttled``, or the RFC 6749
    code of credentials that could not be read; the registered authentication
    method, or ``none`` when no method's credentials could be read.
    """

    def __init__(self, response: HttpResponse, *, reason: str, method: str = "none") -> None:
        super().__init__("client refused")
        self.response = response
        self.reason = reason
        self.method = method


def machine_authenticate(
    request,
    form: dict[str, list[str]],
    *,
    assertion_audiences: frozenset[str] | None = None,
) -> tuple[AuthenticatedClient, RequestContext]:
    """The calling machine, through the clients app's authentication contract.

    ``form`` is the body from ``form_parse``; ``assertion_audiences``, what a
    machine's own assertion must name in ``aud`` when not the token endpoint's
    rule (``clients.client_assertion.assertion_audiences``). Returns ``(authenticated,
    context)``; raises ``ClientRefused`` carrying the RFC 6749 answer (400, 401
    with a challenge, or 429). Every ``invalid_client``, malformed or not,
    gets the same bytes.
    """
    context = request_context(request)
    method = "none"
    try:
        credentials = client_credentials_from_request(
            request, form, assertion_audiences=assertion_audiences
        )
        method = credentials.method
        authenticated = client_authenticate(credentials=credentials, context=context)
    except InvalidClient as exc:
        # ClientAuthError carries the audit reason; unreadable credentials do not.
        reason = getattr(exc, "reason", None) or exc.error
        raise ClientRefused(invalid_client_response(), reason=reason, method=method) from exc
    except SlowDown as exc:
        raise ClientRefused(throttled_response(exc), reason="throttled", method=method) from exc
    except OAuthError as exc:
        raise ClientRefused(error_response(exc), reason=exc.error, method=method) from exc
    return authenticated, context


def protocol_endpoint(view):
    """What every protocol endpoint answers besides its own success.

    POST only (405 in JSON with ``Allow``); every refusal raised by the view
    (``ClientRefused``, an ``OAuthError``) becomes its RFC 6749 section 5.2
    answer; a database that is away (restart, failover) becomes 503
    ``temporarily_unavailable``, never an HTML 500. Machines send no cookies,
    so CSRF does not apply.
    """

    @csrf_exempt
    @functools.wraps(view)
    def endpoint(request) -> HttpResponse:
        if request.method != "POST":
            response = error_response(InvalidRequest("Use POST."))
            response.status_code = 405
            response["Allow"] = "POST"
            return response
        try:
            return view(request)
        except ClientRefused as refused:
            return refused.response
        except OAuthError as error:
            return error_response(error)
        except DatabaseError:
            # The persistent connection is dropped at the end of this request.
            logger.warning("%s: database unavailable", request.path, exc_info=True)
            metrics.database_error(where=view.__name__)
            return error_response(TemporarilyUnavailable("The service is briefly unavailable."))

    return endpoint
