"""The one place that decides a request's client IP address.

Audit events, throttling and IP allow-lists must agree on it, so every app
asks here: ``X-Forwarded-For`` is only believed when the direct peer is a
configured trusted proxy (``TRUSTED_PROXIES``), and then only up to the
rightmost hop that is not itself a trusted proxy.
"""

from __future__ import annotations

import ipaddress

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


def client_ip(request) -> str | None:
    """The caller's IP: the peer, or the rightmost untrusted X-Forwarded-For hop."""
    peer = request.META.get("REMOTE_ADDR") or None
    if peer is None or not settings.TRUSTED_PROXIES or not _trusted(peer):
        return peer
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a malformed chain is not believed at all
        if not _trusted(hop):
            return hop
    return peer
