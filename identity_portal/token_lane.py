"""The machine endpoints' own WSGI lane: Django's request, our view, no handler stack.

Machines ask for tokens all day (and resource servers introspect them), and
Django's handler with its middleware chain costs about 0.3 ms of CPU per
request here, a sixth of the whole request, more than signing the token and
writing its record. For the token and introspection paths only, this lane
builds Django's ``WSGIRequest``, applies by hand exactly what the middleware
stack would apply to these endpoints, and calls the same view:

- request id and access line (``RequestIdMiddleware`` itself);
- ``SecurityMiddleware``: HTTPS redirect when configured, HSTS, nosniff,
  referrer and opener policies;
- ``CommonMiddleware``: host validation (``ALLOWED_HOSTS``), refused user
  agents, ``Content-Length``;
- ``XFrameOptionsMiddleware``: ``X-Frame-Options``;
- ``SecurityHeadersMiddleware``: ``Content-Security-Policy``, ``Permissions-Policy``.

What the rest of the stack does not apply here: sessions, CSRF (both views are
exempt), authentication and messages are never read by a machine's request.
Database connections are handled by the same ``request_started`` /
``request_finished`` signals as Django's handler. A host or other suspicious
request answers 400 and anything unexpected 500, both in RFC 6749 JSON.
``tests/identity_portal/test_token_lane.py`` holds both lanes to the same
answers.
"""

from __future__ import annotations

import logging

from django.core import signals
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.security import SecurityMiddleware

from core.errors import OAuthError, ServerError
from identity_portal.middleware import RequestIdMiddleware, SecurityHeadersMiddleware
from tokens.views.introspect import introspect
from tokens.views.protocol import error_response
from tokens.views.token import token

TOKEN_PATHS = frozenset({"/oauth/token", "/oauth/token/"})
# The paths the lane answers, and the view of each (as identity_portal.urls routes them).
LANE_VIEWS = {**dict.fromkeys(TOKEN_PATHS, token), "/oauth/introspect": introspect}

logger = logging.getLogger("django.request")


def _unused(request):  # the middleware below is called method by method
    raise AssertionError("not a chain")


class TokenLane:
    def __init__(self, view=token) -> None:
        self.view = view
        self.security = SecurityMiddleware(_unused)
        self.common = CommonMiddleware(_unused)
        self.xframe = XFrameOptionsMiddleware(_unused)
        self.headers = SecurityHeadersMiddleware(_unused)
        self.respond = RequestIdMiddleware(self._respond)
        self.added_plain = self._added(secure=False)
        self.added_secure = self._added(secure=True)
        self.secure_differs = self.added_secure != self.added_plain

    def _respond(self, request):
        try:
            response = (
                self.security.process_request(request)
                or self.common.process_request(request)
                or self.view(request)
            )
        except SuspiciousOperation as exc:  # a disallowed Host header, among others
            logger.warning("token lane: %s", exc.__class__.__name__)
            response = error_response(_refused(400))
        except PermissionDenied:  # a user agent listed in DISALLOWED_USER_AGENTS
            response = error_response(_refused(403))
        except Exception:
            logger.exception("token lane: unexpected error")
            response = error_response(ServerError("Internal error."))
        response = self.common.process_response(request, response)
        return self._secured(request, response)

    def _secured(self, request, response):
        """The three header middleware's work, from headers they were asked for once.

        Unless the view set it, the same as calling ``XFrameOptionsMiddleware``,
        ``SecurityHeadersMiddleware`` and ``SecurityMiddleware`` in turn, for a
        fraction of their CPU: their six headers are the same for every answer
        (``Strict-Transport-Security`` too, on HTTPS), so their names and values
        were checked and encoded once, when the lane was built (``_added``), as
        the middleware read their settings when built (``X_FRAME_OPTIONS`` too,
        which its middleware reads per answer: settings do not change while a
        server runs). ``_store`` is Django's storage behind ``response.headers``
        (lower-cased name -> (name, value)); ``tests/identity_portal/
        test_token_lane.py`` compares both lanes' headers, so a Django release
        that changes it fails there, not in production.
        """
        store = response.headers._store
        added = self.added_plain
        # Asked only when the answer differs (HSTS configured): like SecurityMiddleware,
        # which checks SECURE_HSTS_SECONDS before asking the request.
        if self.secure_differs and request.is_secure():
            added = self.added_secure
        for key, item in added:
            if key == "x-frame-options" and getattr(response, "xframe_options_exempt", False):
                continue
            if key not in store:
                store[key] = item
        return response

    def _added(self, *, secure: bool) -> tuple[tuple[str, tuple[str, str]], ...]:
        """What the three header middleware add to an answer that has none of their headers."""
        probe = HttpResponse()
        before = set(probe.headers)
        request = _Probe(secure=secure)
        probe = self.xframe.process_response(request, probe)
        probe = self.headers.process_response(request, probe)
        probe = self.security.process_response(request, probe)
        return tuple(
            (key, item) for key, item in probe.headers._store.items() if item[0] not in before
        )

    def __call__(self, environ, start_response):
        signals.request_started.send(sender=self.__class__, environ=environ)
        request = WSGIRequest(environ)
        response = self.respond(request)
        # Closing the response sends request_finished (connection clean-up).
        response._handler_class = self.__class__
        start_response(
            f"{response.status_code} {response.reason_phrase}",
            [
                *response.items(),
                *(("Set-Cookie", c.output(header="")) for c in response.cookies.values()),
            ],
        )
        return response


class _Probe:
    """All the header middleware read of a request: whether it came over HTTPS."""

    def __init__(self, *, secure: bool) -> None:
        self.secure = secure

    def is_secure(self) -> bool:
        return self.secure


def _refused(status: int) -> OAuthError:
    error = OAuthError("The request was refused.")
    error.error, error.status = "invalid_request", status
    return error


def with_token_lane(application):
    """Send token and introspection requests down the lean lane, the rest to ``application``."""
    lanes = {path: TokenLane(view) for path, view in LANE_VIEWS.items()}

    def dispatch(environ, start_response):
        lane = lanes.get(environ.get("PATH_INFO"))
        if lane is not None:
            return lane(environ, start_response)
        return application(environ, start_response)

    return dispatch
