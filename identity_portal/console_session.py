"""What a console session must be before it reaches a page: verified, and not idle.

Runs after Django's and django-otp's authentication middleware, on every request:

- **idle timeout** (``CONSOLE_IDLE_TIMEOUT`` seconds, default 30 minutes): a
  signed-in session that made no request for that long is signed out
  (``console.logout`` with reason ``idle``) before anything else happens;
- **second factor** (``CONSOLE_REQUIRE_MFA``, on by default): a session that
  passed the password but not the second factor reaches only the second-factor
  pages and sign-out. Console pages redirect there; anywhere else (the audit
  API's session authentication) the session counts as signed out, so no
  path exists around the second step.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone

LAST_SEEN_SESSION_KEY = "console_last_seen"


def _mfa_exempt_paths() -> tuple[str, ...]:
    return (
        reverse("console-mfa"),
        reverse("admin:login"),
        reverse("admin:logout"),
    )


class ConsoleSessionMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.console_prefix = reverse("admin:index")

    def __call__(self, request):
        # Without a session cookie nobody is signed in, and the session (hence
        # ``Vary: Cookie``) stays untouched: machines' requests never carry one.
        if settings.SESSION_COOKIE_NAME not in request.COOKIES:
            return self.get_response(request)
        if request.user.is_authenticated:
            response = self._idle_check(request)
            if response is not None:
                return response
            response = self._mfa_check(request)
            if response is not None:
                return response
        return self.get_response(request)

    def _idle_check(self, request):
        timeout = settings.CONSOLE_IDLE_TIMEOUT
        if timeout <= 0:
            return None
        now = int(timezone.now().timestamp())
        last_seen = request.session.get(LAST_SEEN_SESSION_KEY)
        if isinstance(last_seen, int) and now - last_seen > timeout:
            request.console_logout_reason = "idle"
            logout(request)
            if request.path.startswith(self.console_prefix):
                return HttpResponseRedirect(
                    f"{reverse('admin:login')}?{urlencode({'next': request.get_full_path()})}"
                )
            return None
        request.session[LAST_SEEN_SESSION_KEY] = now
        return None

    def _mfa_check(self, request):
        if not settings.CONSOLE_REQUIRE_MFA or request.user.is_verified():
            return None
        if request.path.startswith(_mfa_exempt_paths()):
            return None
        if request.path.startswith(self.console_prefix):
            return HttpResponseRedirect(
                f"{reverse('console-mfa')}?{urlencode({'next': request.get_full_path()})}"
            )
        request.user = AnonymousUser()
        return None
