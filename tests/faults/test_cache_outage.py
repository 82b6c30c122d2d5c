"""The cache dies under load, and comes back (README, "When a dependency fails").

The portal's cache is a throwaway Redis that the test kills (SIGKILL, nothing
saved) while client threads ask for tokens, then restarts empty on the same
port. The README promises: tokens are still issued and audited; throttling of
failed client authentication is off until the cache is back; revocations take
effect at once (machines are read from the database); and everything, the
cache's use included, returns with the cache.
"""

from __future__ import annotations

import json
import logging

import pytest

from audit.context import Actor
from audit.models import AuditEvent
from clients.constants import MACHINE_CACHE_PREVIOUS_VERSIONS, THROTTLE_CLIENT_IP_FREE_FAILURES
from clients.machine_cache import machine_cache_key
from clients.models import ClientSecret
from clients.services import machine_disable, secret_revoke
from tests.faults.conftest import (
    TokenLoad,
    _basic,
    assert_every_token_audited_once,
    portal_env,
)
from tests.identity_portal.test_web_server import _running_server

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _ask(port: int, registered, *, secret: str | None = None, request_id: str):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST",
            "/oauth/token",
            body=b"grant_type=client_credentials",
            headers={
                "Authorization": _basic(registered.client_id, secret or registered.secret),
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Request-ID": request_id,
            },
        )
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("Retry-After")
    finally:
        connection.close()


def _failures(port: int, registered, *, count: int, tag: str) -> list[int]:
    """``count`` requests with a wrong secret, one after the other; their statuses."""
    return [
        _ask(port, registered, secret="mip_cs_wrong", request_id=f"{tag}-{n:02d}")[0]
        for n in range(count)
    ]


def test_the_cache_dies_under_load_and_comes_back(
    signing_key, machine_factory, throwaway_redis, tmp_path, settings, caplog
):
    cache = throwaway_redis("cache")
    loaded = [machine_factory(name=f"loaded-{n}") for n in range(3)]
    revoked = machine_factory(name="revoked-during-outage")
    disabled = machine_factory(name="disabled-during-outage")
    guesser = machine_factory(name="guessed-during-outage")
    guesser_after = machine_factory(name="guessed-after-outage")
    # This process revokes through the services, so its invalidations go to the same cache.
    settings.CACHES = {
        "default": {
            "BACKEND": "identity_portal.cache.RedisCache",
            "LOCATION": cache.url(),
            "KEY_PREFIX": "mip",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
    env = portal_env(cache=cache.url(), broker=cache.url(1))

    with _running_server(tmp_path, **env) as port, TokenLoad(port, loaded) as load:
        load.run_phase("before", answers=60)
        assert _ask(port, revoked, request_id="revoked-before")[0] == 200
        assert _ask(port, disabled, request_id="disabled-before")[0] == 200
        # The machines are in the cache, as the warm path wants them.
        cached = {k.decode() for k in cache.client().keys("*clients:machine:*")}
        assert f"mip:1:{machine_cache_key(revoked.client_id)}" in cached

        cache.kill()
        load.run_phase("down", answers=90)
        # Throttling is off while the cache is away: no failure is counted, none throttled.
        down_failures = _failures(
            port, guesser, count=THROTTLE_CLIENT_IP_FREE_FAILURES + 5, tag="guess-down"
        )
        # A revocation or a disabled machine takes effect at once: machines are read from
        # the database.
        with caplog.at_level(logging.WARNING, logger="clients.machine_cache"):
            secret_revoke(
                actor=Actor.system("test"),
                secret=ClientSecret.objects.get(machine=revoked.machine),
            )
            machine_disable(actor=Actor.system("test"), machine=disabled.machine)
        refused_down = _ask(port, revoked, request_id="revoked-down")
        disabled_down = _ask(port, disabled, request_id="disabled-down")

        cache.restart()
        load.run_phase("after", answers=90)
        refused_after = _ask(port, revoked, request_id="revoked-after")
        disabled_after = _ask(port, disabled, request_id="disabled-after")
        after_failures = _failures(
            port, guesser_after, count=THROTTLE_CLIENT_IP_FREE_FAILURES + 1, tag="guess-after"
        )
        throttled = _ask(port, guesser_after, secret="mip_cs_wrong", request_id="guess-after-x")
        # Back in use: the machines are cached again.
        cached_again = {k.decode() for k in cache.client().keys("*clients:machine:*")}

    answers = load.answers
    # Every request was answered with a token, before, during and after the outage.
    assert statuses_by_phase(answers) == {"before": {200}, "down": {200}, "after": {200}}
    assert_every_token_audited_once(answers)
    assert AuditEvent.objects.filter(event_type="token.issued").count() == len(answers) + 2

    assert down_failures == [401] * (THROTTLE_CLIENT_IP_FREE_FAILURES + 5)
    denied = AuditEvent.objects.filter(event_type="token.denied", request_id__startswith="guess-")
    assert denied.filter(request_id__startswith="guess-down").count() == len(down_failures)
    # The invalidation could not be written: the operators are told how long a stale
    # entry could live should this Redis come back with its data.
    # (One write per cache version kept: the current generation and the previous
    # versions' tombstones.)
    assert [r.levelname for r in caplog.records if "invalidation failed" in r.message] == [
        "WARNING",
        "ERROR",
    ] * (2 * (1 + len(MACHINE_CACHE_PREVIOUS_VERSIONS)))
    assert refused_down[0] == 401
    assert json.loads(refused_down[1]) == {
        "error": "invalid_client",
        "error_description": "Client authentication failed.",
    }
    assert refused_after[0] == 401
    assert (disabled_down[0], disabled_after[0]) == (401, 401)

    # Throttling is back with the cache: the free failures, then a block.
    assert after_failures[:THROTTLE_CLIENT_IP_FREE_FAILURES] == [401] * (
        THROTTLE_CLIENT_IP_FREE_FAILURES
    )
    assert throttled[0] == 429
    assert throttled[2] is not None and int(throttled[2]) >= 1
    for registered in (*loaded, guesser_after):
        assert f"mip:1:{machine_cache_key(registered.client_id)}" in cached_again


def statuses_by_phase(answers) -> dict[str, set[int]]:
    """Phase -> the set of statuses answered in it."""
    seen: dict[str, set[int]] = {}
    for answer in answers:
        seen.setdefault(answer.phase, set()).add(answer.status)
    return seen
