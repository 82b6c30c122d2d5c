"""Failed authentications back off per (client_id, IP) and per IP; nothing is permanent."""

import pytest
from django.core.cache import cache

from audit.choices import EventType
from audit.context import RequestContext
from audit.models import AuditEvent
from clients.authentication import (
    ClientAuthError,
    ClientCredentials,
    client_authenticate,
)
from clients.constants import (
    THROTTLE_CLIENT_IP_FREE_FAILURES,
    THROTTLE_IP_FREE_FAILURES,
    THROTTLE_MAX_DELAY,
    THROTTLE_WINDOW,
)
from clients.throttling import throttle_failure_record, throttle_keys, throttle_retry_after
from core.errors import SlowDown

START = "2030-01-01 12:00:00+00:00"


def _try(client_id, secret, ip="198.51.100.9"):
    client_authenticate(
        credentials=ClientCredentials(
            client_id=client_id, secret=secret, method="client_secret_post"
        ),
        context=RequestContext(source_ip=ip),
    )


def _fail(client_id, ip="198.51.100.9"):
    with pytest.raises(ClientAuthError):
        _try(client_id, "wrong", ip)


def _throttled(client_id, attempt="wrong", ip="198.51.100.9") -> int:
    with pytest.raises(SlowDown) as raised:
        _try(client_id, attempt, ip)
    return raised.value.retry_after


def test_backoff_grows_and_expires(machine_and_secret, time_machine):
    machine, raw = machine_and_secret
    time_machine.move_to(START, tick=False)
    for _ in range(THROTTLE_CLIENT_IP_FREE_FAILURES):
        _fail(machine.client_id)

    delays = []
    for _ in range(4):
        _fail(machine.client_id)  # each failure past the allowance blocks for twice as long
        delays.append(_throttled(machine.client_id))
        time_machine.shift(delays[-1])

    assert delays == [1, 2, 4, 8]
    # The block is over: the good secret works again, and clears the pair's count.
    _try(machine.client_id, raw)
    for _ in range(THROTTLE_CLIENT_IP_FREE_FAILURES):
        _fail(machine.client_id)


def test_even_the_good_secret_waits_while_blocked(machine_and_secret, time_machine):
    machine, raw = machine_and_secret
    time_machine.move_to(START, tick=False)
    for _ in range(THROTTLE_CLIENT_IP_FREE_FAILURES + 1):
        _fail(machine.client_id)
    denials = AuditEvent.objects.filter(event_type=EventType.TOKEN_DENIED).count()

    retry_after = _throttled(machine.client_id, raw)

    assert retry_after == 1
    # A throttled request is not counted or audited: a flood cannot fill the trail.
    assert AuditEvent.objects.filter(event_type=EventType.TOKEN_DENIED).count() == denials


def test_the_block_that_starts_is_in_the_denial_event(machine_and_secret, time_machine):
    machine, _ = machine_and_secret
    time_machine.move_to(START, tick=False)
    for _ in range(THROTTLE_CLIENT_IP_FREE_FAILURES + 1):
        _fail(machine.client_id)

    events = AuditEvent.objects.filter(event_type=EventType.TOKEN_DENIED).order_by("id")
    assert [e.details.get("throttled_for") for e in events] == [None] * 5 + [1]


def test_backoff_is_capped(time_machine):
    time_machine.move_to(START, tick=False)
    keys = throttle_keys(client_id="cid", ip="198.51.100.9")

    delays = [
        throttle_failure_record(keys=keys) for _ in range(THROTTLE_CLIENT_IP_FREE_FAILURES + 14)
    ]

    assert delays[THROTTLE_CLIENT_IP_FREE_FAILURES :] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 512, THROTTLE_MAX_DELAY, THROTTLE_MAX_DELAY,
        THROTTLE_MAX_DELAY, THROTTLE_MAX_DELAY,
    ]  # fmt: skip
    assert throttle_retry_after(values=cache.get_many(keys.blocks), keys=keys) == 900


def test_counts_are_forgotten_after_a_quiet_window(machine_and_secret, time_machine):
    machine, raw = machine_and_secret
    time_machine.move_to(START, tick=False)
    for _ in range(THROTTLE_CLIENT_IP_FREE_FAILURES + 1):
        _fail(machine.client_id)
    _throttled(machine.client_id)

    time_machine.shift(THROTTLE_WINDOW)

    for _ in range(THROTTLE_CLIENT_IP_FREE_FAILURES):
        _fail(machine.client_id)  # counting starts again from zero: no block yet
    _try(machine.client_id, raw)


def test_other_sources_are_not_blocked(machine_and_secret, time_machine):
    machine, raw = machine_and_secret
    time_machine.move_to(START, tick=False)
    for _ in range(THROTTLE_CLIENT_IP_FREE_FAILURES + 1):
        _fail(machine.client_id, ip="198.51.100.9")

    _throttled(machine.client_id, ip="198.51.100.9")
    _try(machine.client_id, raw, ip="192.0.2.50")


def test_spraying_client_ids_from_one_ip_is_throttled_per_ip(db, time_machine):
    time_machine.move_to(START, tick=False)
    for index in range(THROTTLE_IP_FREE_FAILURES + 1):
        _fail(f"guess-{index}")

    assert _throttled("yet-another-guess") == 1
    # The same client_id from another address is not affected.
    _fail("yet-another-guess", ip="192.0.2.50")


@pytest.mark.redis
def test_throttle_state_is_in_redis(machine_and_secret, time_machine, settings):
    machine, _ = machine_and_secret
    time_machine.move_to(START, tick=False)
    for _ in range(THROTTLE_CLIENT_IP_FREE_FAILURES + 1):
        _fail(machine.client_id)

    assert settings.CACHES["default"]["BACKEND"] == "identity_portal.cache.RedisCache"
    blocks = [key for key in cache._cache.get_client().keys("*throttle:block*")]
    assert len(blocks) == 1


# --- who is counted: an IPv4 address, the /64 of an IPv6 address ---------------


def _pair(client_id: str, source: str) -> str:
    import hashlib

    return hashlib.sha256(f"{client_id}\x00{source}".encode()).hexdigest()[:40]


@pytest.mark.parametrize(
    ("ip", "source"),
    [
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2:0:0:0:ffff", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),  # an IPv4-mapped address counts as the IPv4 one
        ("203.0.113.7", "203.0.113.7"),
        (None, "none"),
    ],
)
def test_throttle_keys_count_ipv6_by_its_64_and_ipv4_by_its_address(ip, source):
    keys = throttle_keys(client_id="billing", ip=ip, now=THROTTLE_WINDOW * 10 + 5)

    assert keys.block_ip == f"clients:throttle:block:ip:{source}"
    assert keys.fail_ip == f"clients:throttle:fail:ip:{source}:10"
    assert keys.block_pair == f"clients:throttle:block:pair:{_pair('billing', source)}"
    assert keys.fail_pair == f"clients:throttle:fail:pair:{_pair('billing', source)}:10"


def test_neighbouring_ipv6_networks_and_ipv4_addresses_are_counted_apart():
    def block(ip):
        return throttle_keys(client_id="c", ip=ip, now=0).block_ip

    assert block("2001:db8:1:2::1") != block("2001:db8:1:3::1")
    assert block("198.51.100.9") != block("198.51.100.10")


def test_failures_spread_over_one_ipv6_64_are_throttled_together(machine_and_secret, time_machine):
    machine, raw = machine_and_secret
    time_machine.move_to(START, tick=False)
    for index in range(THROTTLE_CLIENT_IP_FREE_FAILURES + 1):
        _fail(machine.client_id, ip=f"2001:db8:7:7::{index + 1:x}")  # a new address each time

    # Another address of the same /64 is blocked, even with the right secret...
    assert _throttled(machine.client_id, attempt=raw, ip="2001:db8:7:7:ffff::1") == 1
    # ...the next /64 is not.
    _try(machine.client_id, raw, ip="2001:db8:7:8::1")


def test_a_throttled_request_is_told_so_and_counted(machine_and_secret, time_machine, settings):
    from core import metrics

    settings.METRICS_ENABLED = True
    machine, _ = machine_and_secret
    time_machine.move_to(START, tick=False)
    for _ in range(THROTTLE_CLIENT_IP_FREE_FAILURES + 1):
        _fail(machine.client_id)
    counted = metrics.THROTTLED.labels("client_authentication")._value.get()

    with pytest.raises(SlowDown) as raised:
        _try(machine.client_id, "wrong")

    assert (raised.value.error, raised.value.description) == (
        "slow_down",
        "Too many requests; retry later.",
    )
    assert metrics.THROTTLED.labels("client_authentication")._value.get() == counted + 1
