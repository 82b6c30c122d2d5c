"""The WSGI application as the web server loads it: requests carry no process environment,
and bodies and hosts are framed as HTTP says before Django sees them.

granian (``identity_portal.web_server``) copies the whole process
environment into every request's WSGI environ, so ``request.META`` would
hold ``SECRET_KEY``, the peppers, ``DATABASE_URL`` with its password and
whatever else the host sets, one error report away from a log or an email.
Django's settings have read the environment by the time this module is
loaded; every variable inherited from it is dropped from each request.

A variable named like a request key (``HTTP_*``, a CGI name) is refused at
start: it would stand in for a header the client did not send (the
"httpoxy" confusion), and dropping it per request could drop the client's own.

Two gaps between granian's environ and what Django expects are closed here,
for every path (both lanes, the console too):

- a chunked body (RFC 9112 section 7.1, which a recipient must parse) comes
  without ``CONTENT_LENGTH``, so Django would read nothing: it is read here, at
  most one byte over Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (so an oversized
  body is refused as too large, never held whole), and given its length;
- an HTTP/1.0 request may omit ``Host`` (RFC 9112 section 3.2) and granian
  passes it empty, which the host check refuses: it is answered as a request
  for the issuer's host. An HTTP/1.1 request without ``Host`` stays a 400, as
  RFC 9112 requires.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from identity_portal.wsgi import application as portal_application

# What a request's environ holds besides HTTP_* headers (PEP 3333 and CGI 1.1).
REQUEST_KEYS = frozenset(
    {
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "REMOTE_ADDR",
        "REMOTE_HOST",
        "REMOTE_PORT",
        "REMOTE_USER",
        "AUTH_TYPE",
        "GATEWAY_INTERFACE",
        "SERVER_SOFTWARE",
        "RAW_URI",
        "REQUEST_URI",
        "HTTPS",
    }
)


def request_shaped(name: str) -> bool:
    return name.startswith(("HTTP_", "wsgi.")) or name in REQUEST_KEYS


def without_inherited_environment(application: Callable, inherited: Iterable[str]) -> Callable:
    """``application``, seeing none of the ``inherited`` variables in its environ."""
    names = tuple(inherited)
    clashing = sorted(name for name in names if request_shaped(name))
    if clashing:
        raise ImproperlyConfigured(
            "environment variables named like request keys would reach requests as if the "
            f"client had sent them; unset {', '.join(clashing)} for the web server"
        )

    def scrubbed(environ, start_response):
        pop = environ.pop
        for name in names:
            pop(name, None)
        return application(environ, start_response)

    return scrubbed


# When DATA_UPLOAD_MAX_MEMORY_SIZE is None (no limit) a chunked body is still bounded.
CHUNKED_BODY_FALLBACK_LIMIT = 2_621_440
_HTTP10 = frozenset({"HTTP/1.0", "HTTP/1"})  # granian says "HTTP/1" for HTTP/1.0


def with_request_framing(application: Callable, *, issuer: str, max_body: int) -> Callable:
    """``application``, seeing chunked bodies with a length and HTTP/1.0 requests with a host."""
    issuer_host = urlsplit(issuer).netloc

    def framed(environ, start_response):
        if (
            not environ.get("CONTENT_LENGTH")
            and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        ):
            body = environ["wsgi.input"].read(max_body + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        if not environ.get("HTTP_HOST") and environ.get("SERVER_PROTOCOL") in _HTTP10:
            environ["HTTP_HOST"] = issuer_host
        return application(environ, start_response)

    return framed


application = without_inherited_environment(
    with_request_framing(
        portal_application,
        issuer=settings.ISSUER,
        max_body=settings.DATA_UPLOAD_MAX_MEMORY_SIZE or CHUNKED_BODY_FALLBACK_LIMIT,
    ),
    os.environ.keys(),
)
