"""Who did it and from where: the parts of an event that describe the caller.

The client IP comes from ``core.client_address``, the one place that decides
it, so audit events, throttling and IP allow-lists agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit.choices import ActorKind
from core.client_address import client_ip


@dataclass(frozen=True)
class Actor:
    kind: str
    id: str = ""
    display: str = ""

    @classmethod
    def system(cls, display: str = "system") -> Actor:
        return cls(kind=ActorKind.SYSTEM, id="", display=display)

    @classmethod
    def cli(cls, display: str = "manage.py") -> Actor:
        return cls(kind=ActorKind.CLI, id="", display=display)

    @classmethod
    def user(cls, user) -> Actor:
        return cls(kind=ActorKind.USER, id=str(user.pk), display=user.get_username())


@dataclass(frozen=True)
class Target:
    kind: str
    id: str = ""
    display: str = ""


@dataclass(frozen=True)
class RequestContext:
    source_ip: str | None = None
    user_agent: str = ""
    request_id: str = ""


def request_context(request) -> RequestContext:
    user_agent = request.META.get("HTTP_USER_AGENT", "")
    return RequestContext(
        source_ip=client_ip(request),
        user_agent=user_agent[:512],
        request_id=getattr(request, "request_id", ""),
    )
