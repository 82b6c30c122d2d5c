"""Console sign-in, failed sign-in and sign-out, recorded in the audit trail.

Django's auth signals are the library's integration point for this (STYLE.md
allows signals only to integrate with a library). A failed attempt names the
username that was tried, never the password: Django has already replaced
sensitive credentials before the signal fires, and we keep only the username.
"""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.dispatch import receiver

from audit.choices import ActorKind, EventType, Outcome
from audit.context import Actor, RequestContext, Target, request_context
from audit.services import audit_record


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
    with transaction.atomic():
        audit_record(
            event_type=EventType.CONSOLE_LOGOUT,
            actor=actor,
            target=Target(kind="user", id=actor.id, display=actor.display),
            context=_context(request),
        )


@receiver(user_login_failed, dispatch_uid="audit_console_login_failed")
def record_login_failed(sender, credentials, request=None, **kwargs) -> None:
    username = str(credentials.get("username", ""))[:150]
    with transaction.atomic():
        audit_record(
            event_type=EventType.CONSOLE_LOGIN_FAILED,
            actor=Actor(kind=ActorKind.ANONYMOUS, id="", display=username),
            target=Target(kind="user", id="", display=username),
            outcome=Outcome.FAILURE,
            reason="bad_credentials",
            context=_context(request),
        )
