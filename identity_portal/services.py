"""First-run setup: what a fresh installation needs before it can serve.

Idempotent by construction: each step checks for what it would create under
a lock, so a second ``make run`` (or two at once) creates nothing twice.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.api.permissions import AUDIT_READ_SCOPE
from audit.choices import EventType
from audit.context import Actor, RequestContext, Target
from audit.services import audit_record
from clients.models import Audience, Scope
from clients.services import audience_create, scope_create
from tokens.constants import INTROSPECT_SCOPE, OPENID_SCOPE
from tokens.models import SigningKey
from tokens.services import signing_key_first_ensure

FIRST_ADMIN_USERNAME = "admin"


@dataclass(frozen=True)
class FirstAdmin:
    username: str
    password: str  # shown once to the operator, never stored in clear


def first_admin_ensure() -> FirstAdmin | None:
    """Create the first console admin when no superuser exists.

    Returns the one-time password to print, or None when an admin exists.
    Two first runs at once agree through the unique username: the loser's
    insert fails and it creates nothing.
    """
    user_model = get_user_model()
    if user_model.objects.filter(is_superuser=True).exists():
        return None
    password = secrets.token_urlsafe(18)
    try:
        with transaction.atomic():
            user = user_model.objects.create_superuser(
                username=FIRST_ADMIN_USERNAME, email="", password=password
            )
            console_user_record(
                event_type=EventType.USER_CREATED,
                user=user,
                actor=Actor.cli("first_run"),
                context=RequestContext(),
                details={"superuser": True, "staff": True, "first_admin": True},
            )
    except IntegrityError:
        return None
    return FirstAdmin(username=FIRST_ADMIN_USERNAME, password=password)


def _user_target(user) -> Target:
    return Target(kind="user", id=str(user.pk), display=user.get_username())


def console_user_record(
    *, event_type: str, user, actor: Actor, context: RequestContext, details: dict[str, Any]
) -> None:
    """Record a change to a console account, inside the change's transaction."""
    with transaction.atomic():
        audit_record(
            event_type=event_type,
            actor=actor,
            target=_user_target(user),
            details=details,
            context=context,
        )


def console_roles_record(
    *, user, granted: list[str], revoked: list[str], actor: Actor, context: RequestContext
) -> None:
    """One event per role granted or revoked (a group, or the superuser/staff flag)."""
    with transaction.atomic():
        for event_type, roles in (
            (EventType.ROLE_GRANTED, granted),
            (EventType.ROLE_REVOKED, revoked),
        ):
            for role in roles:
                audit_record(
                    event_type=event_type,
                    actor=actor,
                    target=_user_target(user),
                    details={"role": role},
                    context=context,
                )


# The portal's own scopes: ID tokens about the machine, introspection, the audit API.
PORTAL_SCOPES = {
    OPENID_SCOPE: "An ID token describing the machine itself, next to its access token.",
    INTROSPECT_SCOPE: "Call /oauth/introspect (RFC 7662): for resource servers checking tokens.",
    AUDIT_READ_SCOPE: "Read and export the audit trail through /api/v1/audit (SIEM pull).",
}


def portal_scopes_ensure() -> list[str]:
    """Register the portal's own scopes that are missing; returns the names created.

    So that a fresh installation can allow them to machines at once. Each
    creation is a ``scope.created`` event with actor ``cli:first_run``. Two
    first runs at once: the loser's insert fails and it creates nothing.
    """
    created = []
    for name, description in PORTAL_SCOPES.items():
        if Scope.objects.filter(name=name).exists():
            continue
        try:
            scope_create(actor=Actor.cli("first_run"), name=name, description=description)
        except (IntegrityError, ValidationError):
            continue
        created.append(name)
    return created


METRICS_READ_SCOPE = "metrics:read"


def metrics_registry_ensure() -> list[str]:
    """Register what a ``/metrics`` scraper's machine asks for: the scope, the audience.

    ``metrics:read`` and ``METRICS_AUDIENCE``, each created (and audited) only when
    missing; returns what was created. A machine allowed both can get a token
    that reads the metrics from outside ``METRICS_ALLOWED_CIDRS``.
    """
    actor = Actor.cli("first_run")
    created = []
    if not Scope.objects.filter(name=METRICS_READ_SCOPE).exists():
        try:
            scope_create(
                actor=actor,
                name=METRICS_READ_SCOPE,
                description="Read the Prometheus metrics at /metrics",
            )
            created.append(f"scope {METRICS_READ_SCOPE}")
        except (IntegrityError, ValidationError):
            pass  # another first run created it meanwhile
    if not Audience.objects.filter(uri=settings.METRICS_AUDIENCE).exists():
        try:
            audience_create(actor=actor, uri=settings.METRICS_AUDIENCE, name="Metrics")
            created.append(f"audience {settings.METRICS_AUDIENCE}")
        except (IntegrityError, ValidationError):
            pass
    return created


def first_signing_key_ensure() -> SigningKey | None:
    """Create and activate the first signing key when no key of the configured algorithm signs.

    Returns the new key, or None when one exists.
    """
    return signing_key_first_ensure()


WORKER_HEARTBEAT_KEY = "portal:worker-heartbeat"


def worker_heartbeat_record() -> None:
    """Note that a Celery worker ran a task just now.

    Beat schedules this every 30 s, so ``/readyz`` can tell operators when the
    lifecycle tasks (purge, rotation, sealing) last had a worker, without
    making web readiness depend on it: tokens are issued with the broker down.
    """
    cache.set(WORKER_HEARTBEAT_KEY, timezone.now().isoformat(), timeout=24 * 3600)


def worker_heartbeat_last_seen() -> str | None:
    return cache.get(WORKER_HEARTBEAT_KEY)
