"""The worker is killed in the middle of sealing (README, "When a dependency fails").

A real Celery worker with beat seals a backlog of events in many small
batches (``AUDIT_SEAL_BATCH_SIZE``) while client threads keep adding token
events; the test kills it (SIGKILL: no cleanup, a batch in flight is rolled
back by PostgreSQL with the dead connection) once some batches are sealed and
others not. A new worker picks up where the chain stands: afterwards every
event is sealed once, the chain has no gap, and ``audit_verify`` exits 0.

The test goes through the worker, the selectors and ``manage.py audit_verify``
only, never the audit tables, so it holds whatever table the seals live in.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.db import transaction

from audit.context import Actor, Target
from audit.models import AuditEvent
from audit.selectors import audit_chain_head, audit_unsealed_count
from audit.services import audit_record
from tests.faults.conftest import (
    REPO,
    TokenLoad,
    WorkerWithBeat,
    assert_every_token_audited_once,
    portal_env,
)
from tests.fixtures.celery_worker import wait_for
from tests.identity_portal.test_web_server import _running_server

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BACKLOG = 1000
BATCH = 10


def _backlog(count: int) -> None:
    """A backlog for the sealer, committed at once (as after a long broker outage)."""
    with transaction.atomic():
        for n in range(count):
            audit_record(
                event_type="token.issued",
                actor=Actor.system("backlog"),
                target=Target(kind="token", id=f"backlog-{n}"),
            )


def test_a_worker_killed_while_sealing_leaves_a_chain_the_next_one_completes(
    signing_key, machine_factory, throwaway_redis, tmp_path
):
    cache, broker = throwaway_redis("cache"), throwaway_redis("broker")
    loaded = [machine_factory(name=f"loaded-{n}") for n in range(2)]
    env = portal_env(
        cache=cache.url(),
        broker=broker.url(),
        AUDIT_SEAL_INTERVAL="1",
        AUDIT_SEAL_BATCH_SIZE=str(BATCH),
    )
    (tmp_path / "worker").mkdir()
    worker = WorkerWithBeat(tmp_path / "worker", env)
    _backlog(BACKLOG)
    before = audit_unsealed_count()
    assert before >= BACKLOG

    with _running_server(tmp_path, **env) as port, TokenLoad(port, loaded, pause=0.02) as load:
        load.run_phase("sealing", answers=20)
        worker.start()
        try:
            # Some batches sealed, the rest not: the sealer is in the middle of its run.
            wait_for(lambda: audit_unsealed_count() < before - 4 * BATCH, interval=0.01)
            worker.kill()
        finally:
            worker.stop()
        head_at_kill = audit_chain_head()[0]
        unsealed_at_kill = audit_unsealed_count()
        load.run_phase("killed", answers=20)
        worker.start()
        try:
            load.run_phase("restarted", answers=20)
            load.stop()
            # The new worker's sealer catches up with the backlog and the tokens.
            wait_for(lambda: audit_unsealed_count() == 0, timeout=60, interval=0.2)
        finally:
            worker.stop()

    assert head_at_kill > 0 and unsealed_at_kill > 0
    assert "Warm shutdown" not in worker.log().split("ready.")[1]  # it died, it did not stop
    assert {a.status for a in load.answers} == {200}
    assert_every_token_audited_once(load.answers)
    events = AuditEvent.objects.count()
    # Nothing skipped, nothing sealed twice: one position per event, 1..N without a gap.
    assert audit_unsealed_count() == 0
    assert audit_chain_head()[0] == events
    verify = subprocess.run(
        [sys.executable, "manage.py", "audit_verify"],
        cwd=REPO,
        env=worker.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"chain intact up to position {events} ({events} sealed events from position 1" in (
        verify.stdout
    )
