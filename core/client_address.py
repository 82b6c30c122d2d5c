"""The one place that decides a request's client IP address.

Audit events, throttling and IP allow-lists must agree on it, so every app
asks here: ``X-Forwarded-For`` is only believed when the direct peer is a
configured trusted proxy (``TRUSTED_PROXIES``), and then only up to the
rightmost hop that is not itself a trusted proxy.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings


def _trusted(peer: str) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    for entry in settings.TRUSTED_PROXIES:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


# The longest text form of an IP address without a zone (an IPv4-mapped IPv6).
_ADDRESS_MAX_LENGTH = len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")


def _address(value: str) -> str | None:
    """``value`` if it is an IP address an ``inet`` column stores, else None.

    A server may hand over a peer that is no address (a unix socket path, an
    empty string) or an IPv6 address with a zone (``fe80::1%eth0``), which
    PostgreSQL refuses: stored as is, the audit insert would fail and the
    request answer 500. Anything longer than an address is refused before the
    cache, so ``X-Forwarded-For`` hops of any size cannot fill it.
    """
    if len(value) > _ADDRESS_MAX_LENGTH:
        return None
    return _address_parsed(value)


@lru_cache(maxsize=4096)
def _address_parsed(value: str) -> str | None:
    """Cached, because the token path asks once per request."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    return None if getattr(address, "scope_id", None) else value


def client_ip(request) -> str | None:
    """The caller's IP: the peer, or the rightmost untrusted X-Forwarded-For hop."""
    peer = _address(request.META.get("REMOTE_ADDR") or "")
    if peer is None or not settings.TRUSTED_PROXIES or not _trusted(peer):
        return peer
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if _address(hop) is None:
            return peer  # a malformed chain is not believed at all
        if not _trusted(hop):
            return hop
    return peer
