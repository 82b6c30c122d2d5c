"""The broker goes away under load (README, "When a dependency fails").

The broker is a throwaway Redis of its own (the cache another one, which stays
up), a real Celery worker with beat runs the periodic work, and client threads
ask for tokens throughout. The broker first hangs (SIGSTOP: connections stay
open and nothing answers, the worst case for anything that would wait on it),
then dies (SIGKILL, its queue lost), then comes back empty on the same port.

"A minute" matters only where the code reads the clock: beat's schedule. The
test runs the sealer every second (``AUDIT_SEAL_INTERVAL=1``) and keeps the
broker away for several seconds, so beat misses as many runs as it does in a
minute at the default interval of 10 s. The token path reads no clock about
the broker; what it must show is that it never waits on it.
"""

from __future__ import annotations

import http.client
import json
import statistics
import time

import pytest

from audit.models import AuditEvent
from audit.selectors import audit_unsealed_count
from tests.faults.conftest import (
    TokenLoad,
    WorkerWithBeat,
    assert_every_token_audited_once,
    portal_env,
)
from tests.fixtures.celery_worker import wait_for
from tests.identity_portal.test_web_server import _running_server

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SEAL_INTERVAL = 1
# How long the broker stays away: six sealer runs missed, as in a minute at the default.
AWAY = 6 * SEAL_INTERVAL
# The shortest time anything waiting on the broker would take: its connect timeout.
BROKER_TIMEOUT = 2.0


def _keep_away_until(deadline: float) -> None:
    """The outage lasts in wall-clock time: beat, in another process, reads that clock."""
    wait_for(lambda: time.monotonic() >= deadline, timeout=AWAY + 30, interval=0.1)


def _get(port: int, path: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _median(answers) -> float:
    return statistics.median(a.seconds for a in answers)


def test_the_broker_away_for_a_while_under_load(
    signing_key, machine_factory, throwaway_redis, tmp_path
):
    cache, broker = throwaway_redis("cache"), throwaway_redis("broker")
    loaded = [machine_factory(name=f"loaded-{n}") for n in range(3)]
    env = portal_env(cache=cache.url(), broker=broker.url(), AUDIT_SEAL_INTERVAL=str(SEAL_INTERVAL))
    (tmp_path / "worker").mkdir()
    worker = WorkerWithBeat(tmp_path / "worker", env)
    worker.start()
    try:
        with _running_server(tmp_path, **env) as port, TokenLoad(port, loaded, pause=0.02) as load:
            load.run_phase("before", answers=60)
            # The worker seals what beat queues: the chain keeps up with the tokens.
            wait_for(lambda: audit_unsealed_count() < len(load.answers), timeout=30)

            broker.pause()
            hung_at = time.monotonic()
            load.run_phase("hung", answers=60)
            _keep_away_until(hung_at + AWAY / 2)
            broker.kill()
            load.run_phase("down", answers=60)
            ready_down, healthy_down = _get(port, "/readyz"), _get(port, "/healthz")
            _keep_away_until(hung_at + AWAY)
            away = time.monotonic() - hung_at
            # Work piled up meanwhile: events beat could not get sealed.
            unsealed_while_away = audit_unsealed_count()
            broker.restart()
            load.run_phase("after", answers=30)
        # Queued work catches up: beat publishes again, the worker reconnects and seals
        # everything issued while the broker was away.
        wait_for(lambda: audit_unsealed_count() == 0, timeout=60, interval=0.2)
    finally:
        worker.stop()

    answers = load.answers
    assert {a.status for a in answers} == {200}
    assert_every_token_audited_once(answers)
    # Beat missed runs while the broker was away: as many as a minute at the default.
    assert away >= AWAY
    issued = AuditEvent.objects.filter(event_type="token.issued").count()
    assert issued == len(answers)
    assert unsealed_while_away > 0
    # Nothing in the token path waits on the broker: no request took as long as the
    # broker's connect timeout, and the typical one is as fast as before.
    before = load.in_phase("before")
    for phase in ("hung", "down", "after"):
        during = load.in_phase(phase)
        assert max(a.seconds for a in during) < BROKER_TIMEOUT, phase
        assert _median(during) <= 2 * _median(before) + 0.05, phase
    assert "Connection to broker lost" in worker.log()
    # Readiness names the broker (a balancer must not check it); liveness does not care.
    assert ready_down[0] == 503 and ready_down[1]["checks"]["broker"] is False
    assert {k for k, ok in ready_down[1]["checks"].items() if not ok} == {"broker"}
    assert healthy_down == (200, {"status": "ok"})
