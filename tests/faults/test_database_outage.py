"""PostgreSQL drops every connection of the portal under load (README, "When a dependency fails").

The test terminates every backend of the test database but its own, as a
database restart or a failover does, while client threads ask for tokens.
Without ``CONN_HEALTH_CHECKS`` (the default) each application thread learns
that its connection is gone from the request it is running: that request, and
only it, answers 503 ``temporarily_unavailable`` in RFC 6749 JSON; the thread
then opens a new connection and the next requests get tokens. No token is ever
answered without its audit event.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection

from audit.models import AuditEvent
from tests.faults.conftest import TokenLoad, assert_every_token_audited_once, portal_env
from tests.identity_portal.test_web_server import _running_server
from tokens.models import IssuedToken

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

UNAVAILABLE = {
    "error": "temporarily_unavailable",
    "error_description": "The service is briefly unavailable.",
}


def _terminate_every_other_backend() -> int:
    """What a restart does to the portal: its connections, all of them, are gone."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [connection.settings_dict["NAME"]],
        )
        return cursor.fetchone()[0]


def test_every_connection_dropped_under_load(
    signing_key, machine_factory, throwaway_redis, tmp_path
):
    cache = throwaway_redis("cache")
    loaded = [machine_factory(name=f"loaded-{n}") for n in range(4)]
    env = portal_env(cache=cache.url(), broker=cache.url(1))
    application_threads = int(env["WEB_CONCURRENCY"]) * int(env["WEB_THREADS"])

    with _running_server(tmp_path, **env) as port, TokenLoad(port, loaded, threads=4) as load:
        load.run_phase("before", answers=80)
        load.phase = "dropped"
        dropped_at = time.monotonic()
        terminated = _terminate_every_other_backend()
        load.run_phase("dropped", answers=120)
        load.phase = "drained"

    answers = [a for a in load.answers if a.phase in {"before", "dropped"}]
    dropped = load.in_phase("dropped")
    # Each application thread that had served a request held a connection, and lost it.
    assert 1 <= terminated <= application_threads
    # Nothing failed before; after, only the request each thread was running or ran next
    # fails, with the protocol's answer.
    assert {a.status for a in answers if a.finished < dropped_at} == {200}
    failed = [a for a in answers if a.status != 200]
    assert 1 <= len(failed) <= terminated
    assert [(a.status, a.json()) for a in failed] == [(503, UNAVAILABLE)] * len(failed)
    # Each connection fails one request at most (an idle thread learns of its loss only
    # when it next runs one); after that, tokens again: the last third of the answers.
    assert {a.status for a in dropped[-len(dropped) // 3 :]} == {200}

    assert_every_token_audited_once(load.answers)
    # No token record without its event, none answered without it.
    issued = AuditEvent.objects.filter(event_type="token.issued")
    assert IssuedToken.objects.count() == issued.count()
    assert issued.count() >= sum(1 for a in load.answers if a.status == 200)
