"""Writes to the audit trail.

``audit_record`` is called inside the transaction of the change it records,
so neither commits without the other. It is a plain INSERT with no lock and
no read of the chain head: the token endpoint writes concurrently, and the
sealer orders committed events afterwards.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from audit.choices import Outcome
from audit.context import Actor, RequestContext, Target
from audit.models import AuditEvent

# Keys that must never appear in an event's details, at any depth.
FORBIDDEN_DETAIL_KEYS = frozenset(
    {
        "secret",
        "client_secret",
        "password",
        "token",
        "access_token",
        "id_token",
        "refresh_token",
        "private_key",
        "key_material",
    }
)


def _check_details(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key).lower() in FORBIDDEN_DETAIL_KEYS:
                raise ValueError(f"audit details must not carry {key!r}")
            _check_details(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_details(item)


def audit_event_build(
    *,
    event_type: str,
    actor: Actor,
    target: Target | None = None,
    outcome: str = Outcome.SUCCESS,
    reason: str = "",
    details: dict[str, Any] | None = None,
    context: RequestContext | None = None,
    occurred_at: datetime | None = None,
) -> AuditEvent:
    """An unsaved event, for callers that insert it with other rows in one statement."""
    details = details or {}
    _check_details(details)
    target = target or Target(kind="")
    context = context or RequestContext()
    return AuditEvent(
        occurred_at=occurred_at or timezone.now(),
        event_type=event_type,
        actor_kind=actor.kind,
        actor_id=actor.id,
        actor_display=actor.display[:255],
        target_kind=target.kind,
        target_id=target.id,
        target_display=target.display[:255],
        outcome=outcome,
        reason=reason,
        source_ip=context.source_ip,
        user_agent=context.user_agent[:512],
        request_id=context.request_id,
        details=details,
    )


def audit_record(**kwargs: Any) -> AuditEvent:
    """Insert one event (same keywords as ``audit_event_build``)."""
    event = audit_event_build(**kwargs)
    event.save(force_insert=True)
    return event
