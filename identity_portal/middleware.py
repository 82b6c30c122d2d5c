"""Request ids, the access log and the per-response metrics.

A request id is accepted from the caller when well-formed, else generated,
and echoed in the response. The access line is written here rather than by
the web server: gunicorn's access logger, when we ran it, assembled every
header and environ entry per request (about 0.25 ms of CPU, more than
signing a token), while this line costs a few microseconds and carries the
request id (``identity_portal.access_log`` hands it to logging off the request's
path, within a tenth of a second). The path is
logged without its query string: credentials never belong in a URL, and if
a client puts them there anyway they must not reach the log. The path is
decoded, so ``%0A`` in a URL is a real line break: control characters (and
the quote and backslash) are escaped so a caller cannot forge a log line.

Both lanes (Django's handler and the token lane) pass here, so it is also where
each response is counted by endpoint and status class and the token endpoint's
latency observed (``core.metrics``): two counter increments, a few microseconds.
"""

from __future__ import annotations

import re
import time
import uuid

from django.conf import settings

from core import metrics
from identity_portal.access_log import access_line
from identity_portal.log import request_id_var

REQUEST_ID_HEADER = "X-Request-ID"
# Bounded and plain so a caller cannot inject log lines or huge values.
_WELL_FORMED = re.compile(r"^[A-Za-z0-9._\-]{8,128}$")
# C0 and C1 controls, the Unicode line and paragraph separators, and the characters
# that would make the quoted path ambiguous.
_UNSAFE_IN_LOG = re.compile(r'[\x00-\x1f\x7f-\x9f\u2028\u2029"\\]')


def _escape_char(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# The web server admits request lines up to its 64 KiB header buffer; a log
# line needs no more than this of the path.
MAX_LOGGED_PATH = 2048


def loggable_path(path: str) -> str:
    """``path`` with anything that could end or fake a log line escaped, and bounded."""
    if len(path) > MAX_LOGGED_PATH:
        return _UNSAFE_IN_LOG.sub(_escape_char, path[:MAX_LOGGED_PATH]) + "...[truncated]"
    return _UNSAFE_IN_LOG.sub(_escape_char, path)


# The endpoint label of ``portal_http_responses_total``: a fixed set, whatever the path.
_ENDPOINTS = {
    "/oauth/token": "token",
    "/oauth/token/": "token",
    "/oauth/introspect": "introspect",
    "/oauth/revoke": "revoke",
    "/metrics": "metrics",
    "/healthz": "health",
    "/readyz": "health",
}
_ENDPOINT_PREFIXES = (
    ("/console/", "console"),
    ("/api/", "api"),
    ("/.well-known/", "discovery"),
)


def endpoint_of(path: str) -> str:
    endpoint = _ENDPOINTS.get(path)
    if endpoint is not None:
        return endpoint
    for prefix, name in _ENDPOINT_PREFIXES:
        if path.startswith(prefix):
            return name
    return "other"


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.access_log = settings.ACCESS_LOG

    def __call__(self, request):
        started = time.perf_counter()
        offered = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = offered if _WELL_FORMED.match(offered) else uuid.uuid4().hex
        request.request_id = request_id
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id
            elapsed = time.perf_counter() - started
            metrics.response_counted(
                endpoint=endpoint_of(request.path_info),
                status=response.status_code,
                seconds=elapsed,
            )
            if self.access_log:
                access_line(
                    remote=request.META.get("REMOTE_ADDR", "-"),
                    method=request.method,
                    path=loggable_path(request.path),
                    status=response.status_code,
                    milliseconds=elapsed * 1000,
                )
        finally:
            request_id_var.reset(token)
        return response


class SecurityHeadersMiddleware:
    """``Content-Security-Policy`` and ``Permissions-Policy`` on every response.

    Both are fixed strings from settings (``CONTENT_SECURITY_POLICY``,
    ``PERMISSIONS_POLICY``): the console has no inline script or style
    anywhere, so no nonce or hash is needed and nothing varies per request.
    A view that sets its own header keeps it. The token lane applies this too,
    so both lanes answer with the same headers.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.content_security_policy = settings.CONTENT_SECURITY_POLICY
        self.permissions_policy = settings.PERMISSIONS_POLICY

    def __call__(self, request):
        return self.process_response(request, self.get_response(request))

    def process_response(self, request, response):
        if self.content_security_policy:
            response.headers.setdefault("Content-Security-Policy", self.content_security_policy)
        if self.permissions_policy:
            response.headers.setdefault("Permissions-Policy", self.permissions_policy)
        return response
