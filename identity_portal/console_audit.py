"""Console sign-in, failed sign-in and sign-out, recorded in the audit trail.

Django's auth signals are the library's integration point for this (STYLE.md
allows signals only to integrate with a library). A failed attempt names the
account when it exists and never the password (Django has already removed
it before the signal fires).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.dispatch import receiver

from audit.choices import ActorKind, EventType, Outcome
from audit.context import Actor, RequestContext, Target, request_context
from audit.services import audit_record
from identity_portal.middleware import loggable_path


def _context(request) -> RequestContext:
    return request_context(request) if request is not None else RequestContext()


@receiver(user_logged_in, dispatch_uid="audit_console_login")
def record_login(sender, request, user, **kwargs) -> None:
    actor = Actor.user(user)
    with transaction.atomic():
        audit_record(
            event_type=EventType.CONSOLE_LOGIN,
            actor=actor,
            target=Target(kind="user", id=actor.id, display=actor.display),
            context=_context(request),
        )


@receiver(user_logged_out, dispatch_uid="audit_console_logout")
def record_logout(sender, request, user, **kwargs) -> None:
    if user is None:  # the session had already expired
        return
    actor = Actor.user(user)
    # Signed out by the idle timeout (identity_portal.console_session) rather than by hand.
    reason = getattr(request, "console_logout_reason", "")
    with transaction.atomic():
        audit_record(
            event_type=EventType.CONSOLE_LOGOUT,
            actor=actor,
            target=Target(kind="user", id=actor.id, display=actor.display),
            details={"reason": reason} if reason else {},
            context=_context(request),
        )


@receiver(user_login_failed, dispatch_uid="audit_console_login_failed")
def record_login_failed(sender, credentials, request=None, **kwargs) -> None:
    """Name the account when it exists; otherwise record nothing typed.

    People type passwords into the username box. What does not match an
    account may be exactly that, and the trail is append-only: it keeps only
    the fact of the attempt and the length of what was typed.
    """
    typed = str(credentials.get("username", ""))
    user_model = get_user_model()
    exists = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: typed}).exists()
    display = typed[:150] if exists else "(unknown account)"
    with transaction.atomic():
        audit_record(
            event_type=EventType.CONSOLE_LOGIN_FAILED,
            actor=Actor(kind=ActorKind.ANONYMOUS, id="", display=display),
            target=Target(kind="user", id="", display=display),
            outcome=Outcome.FAILURE,
            reason="bad_credentials" if exists else "unknown_account",
            details={} if exists else {"typed_length": len(typed)},
            context=_context(request),
        )


# A refused path is recorded up to this many characters (it is the caller's input).
MAX_RECORDED_PATH = 300


class ConsoleRefusalMiddleware:
    """Record every console page or action refused to a signed-in user.

    Django's admin answers a forced URL (an auditor posting a change form, a
    security admin opening a superuser's page) by raising ``PermissionDenied``;
    that is the moment recorded, as ``console.access_denied`` (failure,
    ``forbidden``), before Django renders the 403 page. The view's own
    transaction has already rolled back, so the event commits on its own.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, PermissionDenied):
            return None
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        path = loggable_path(request.path)[:MAX_RECORDED_PATH]
        actor = Actor.user(user)
        with transaction.atomic():
            audit_record(
                event_type=EventType.CONSOLE_ACCESS_DENIED,
                actor=actor,
                target=Target(kind="console_page", id="", display=path),
                outcome=Outcome.FAILURE,
                reason="forbidden",
                details={"method": request.method[:16], "path": path},
                context=_context(request),
            )
        return None
