"""Template helpers of the console: roles for showing controls, times in UTC with seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django import template

from core.roles import can_read_audit, is_security_admin
from identity_portal.passkeys import passkeys_available

register = template.Library()


@register.filter
def reads_console(user) -> bool:
    """Auditors and security admins: who sees the console's pages."""
    return can_read_audit(user)


@register.filter
def changes_console(user) -> bool:
    """Security admins only: who is shown a control that changes something."""
    return is_security_admin(user)


@register.simple_tag
def passkeys_offered() -> bool:
    """Whether this host's RP ID and origins let browsers use passkeys (the user links)."""
    return passkeys_available()


@register.filter
def utc(value) -> str:
    """``2026-12-01 03:42:58 UTC``: every console time, to the second, with its zone."""
    if not isinstance(value, datetime):
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@register.filter
def age(value, now=None) -> str:
    """How long ago, coarse: ``3 d 4 h``, ``12 min``."""
    if not isinstance(value, datetime):
        return ""
    delta = (now or datetime.now(UTC)) - value
    return duration(delta)


@register.filter
def duration(delta) -> str:
    if isinstance(delta, int | float):
        delta = timedelta(seconds=delta)
    if not isinstance(delta, timedelta):
        return ""
    seconds = int(delta.total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        text = f"{days} d {hours} h" if hours else f"{days} d"
    elif hours:
        text = f"{hours} h {minutes} min" if minutes else f"{hours} h"
    elif minutes:
        text = f"{minutes} min"
    else:
        text = f"{seconds} s"
    return f"in {text}" if future else text


@register.filter
def details_line(details) -> str:
    """An event's details on one line (``key: value; ...``), for the log's table."""
    if not isinstance(details, dict) or not details:
        return ""
    parts = []
    for key, value in details.items():
        if isinstance(value, list | tuple):
            value = " ".join(str(item) for item in value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        parts.append(f"{key}: {value}")
    return "; ".join(parts)
