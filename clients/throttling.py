"""Throttling of failed client authentication, shared by all processes through the cache.

Two counters per failure: one for the (client_id, source IP) pair, which stops
guessing one machine's secret, and one for the source IP, which stops
spraying many client_ids. Past a free allowance every further failure blocks
the key for a doubling time, capped at ``THROTTLE_MAX_DELAY``. Counts live in
a fixed window (the bucket is in the key), so they are forgotten after a
quiet window and nobody is ever locked out for good: a permanent lockout
would let anyone deny service to a machine by failing on its behalf.

An IPv6 client is counted by its /64, not its single address: one host
commonly holds a whole /64 (SLAAC, privacy addresses) and could otherwise
spread its guesses over 2**64 addresses. IPv4 stays per address.

Blocks store their end as a timestamp compared with the current time, so they
behave the same in every cache backend and under time travel in tests.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from dataclasses import dataclass

from django.core.cache import cache

from clients.constants import (
    THROTTLE_BASE_DELAY,
    THROTTLE_CLIENT_IP_FREE_FAILURES,
    THROTTLE_IP_FREE_FAILURES,
    THROTTLE_MAX_DELAY,
    THROTTLE_WINDOW,
)


@dataclass(frozen=True)
class ThrottleKeys:
    """The cache keys of one (client_id, IP) pair at one moment."""

    block_pair: str
    block_ip: str
    fail_pair: str
    fail_ip: str

    @property
    def blocks(self) -> tuple[str, str]:
        return (self.block_pair, self.block_ip)


def throttle_source(ip: str | None) -> str:
    """Who is counted: an IPv4 address, the /64 of an IPv6 one ("none" without one).

    An IPv4-mapped IPv6 address counts as its IPv4 address. A value that is no
    address (a WSGI server's oddity) is counted as itself.
    """
    if not ip:
        return "none"
    if ":" not in ip:
        return ip  # IPv4 (or no address at all): as before, no parsing on the hot path
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def throttle_keys(
    *, client_id: str, ip: str | None, now: float | None = None, realm: str = "clients"
) -> ThrottleKeys:
    """Keys for one (identity, IP) pair; ``realm`` keeps separate counts per door.

    The token endpoint counts under "clients"; console sign-in under "console"
    with the username as identity, so typos in the console never block the
    machines behind the same address, nor the other way round.
    """
    now = time.time() if now is None else now
    bucket = int(now // THROTTLE_WINDOW)
    address = throttle_source(ip)
    pair = hashlib.sha256(f"{client_id}\x00{address}".encode()).hexdigest()[:40]
    return ThrottleKeys(
        block_pair=f"{realm}:throttle:block:pair:{pair}",
        block_ip=f"{realm}:throttle:block:ip:{address}",
        fail_pair=f"{realm}:throttle:fail:pair:{pair}:{bucket}",
        fail_ip=f"{realm}:throttle:fail:ip:{address}:{bucket}",
    )


def throttle_retry_after(*, values: dict, keys: ThrottleKeys, now: float | None = None) -> int:
    """Seconds until the pair may try again (0: not throttled), from prefetched values."""
    now = time.time() if now is None else now
    until = max((float(values.get(key) or 0) for key in keys.blocks), default=0.0)
    return math.ceil(until - now) if until > now else 0


def _bump(key: str) -> int:
    cache.add(key, 0, 2 * THROTTLE_WINDOW)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, 2 * THROTTLE_WINDOW)
        return 1


def _delay(failures: int, free: int) -> int:
    if failures <= free:
        return 0
    return min(THROTTLE_BASE_DELAY * 2 ** min(failures - free - 1, 32), THROTTLE_MAX_DELAY)


def throttle_failure_record(*, keys: ThrottleKeys, now: float | None = None) -> int:
    """Count a failure; returns the block it started in seconds (0: none)."""
    now = time.time() if now is None else now
    delay = 0
    for fail_key, block_key, free in (
        (keys.fail_pair, keys.block_pair, THROTTLE_CLIENT_IP_FREE_FAILURES),
        (keys.fail_ip, keys.block_ip, THROTTLE_IP_FREE_FAILURES),
    ):
        key_delay = _delay(_bump(fail_key), free)
        if key_delay:
            cache.set(block_key, now + key_delay, key_delay + 1)
            delay = max(delay, key_delay)
    return delay


def throttle_success_record(*, values: dict, keys: ThrottleKeys) -> None:
    """A good secret clears the pair's count (the per-IP count stays)."""
    if values.get(keys.fail_pair):
        cache.delete(keys.fail_pair)
