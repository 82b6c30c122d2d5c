"""Suite-wide fixtures and the service gates.

Tests marked ``postgres``, ``redis`` or ``broker`` need a real service. When
it is absent they skip with the reason; with ``REQUIRE_SERVICES=1`` (CI) the
same absence is a failure, so a green CI run proves they ran.
"""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from django.db import connection

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _service_gates(request):
    if request.node.get_closest_marker("postgres") and connection.vendor != "postgresql":
        _unavailable("needs PostgreSQL: set DATABASE_URL=postgres://...")
    if request.node.get_closest_marker("redis") and not settings.REDIS_URL:
        _unavailable("needs Redis: set REDIS_URL=redis://...")
    if request.node.get_closest_marker("broker") and not settings.CELERY_BROKER_URL.startswith(
        "redis"
    ):
        _unavailable("needs a Redis broker: set CELERY_BROKER_URL=redis://...")


@pytest.fixture(autouse=True)
def _eager_tasks(request):
    """Unit tests run Celery tasks in-process (a task queued after commit runs at once);
    tests marked ``broker`` talk to a real worker instead."""
    if request.node.get_closest_marker("broker"):
        yield
        return
    from identity_portal.celery import app

    previous = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = previous


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Let the test database's flushes TRUNCATE the audit tables.

    The audit triggers refuse TRUNCATE to every session, and no setting opens
    them. pytest-django resets the database between transactional tests with
    one; the test connection is a superuser, so the flush alone runs with
    ``session_replication_role = replica`` (ordinary triggers off, for that
    transaction only), which the application's runtime role could never set.
    """
    if connection.vendor != "postgresql":
        yield
        return
    operations = type(connection.ops)
    original = operations.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        statements = original(
            self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
        )
        return ["SET LOCAL session_replication_role = 'replica'", *statements] if statements else []

    operations.sql_flush = sql_flush
    try:
        yield
    finally:
        operations.sql_flush = original


@pytest.fixture(autouse=True)
def _fresh_process_state(tmp_path_factory):
    """Each test starts from the process state a new process has.

    ``make mutate`` (mutmut) runs the suite twice in one process before forking
    its mutants, and a mutant's triage may run a test once per mutant in one
    session: what a run leaves in per-process memos or under ``VAR_DIR`` (an
    HTTPS witness's acknowledged position, the machine cache's logged-once
    failures, the decoded entries) must not leak into the next.
    """
    from clients import machine_cache

    machine_cache._decoded.clear()
    machine_cache._undecodable.clear()
    settings.VAR_DIR = str(tmp_path_factory.mktemp("var"))


pytest_plugins = [
    "tests.fixtures.core",
    "tests.fixtures.celery_worker",
    "tests.fixtures.clients",
    "tests.fixtures.tokens",
    "tests.fixtures.webhooks",
    "tests.fixtures.passkeys",
    "tests.fixtures.oidc_issuer",
]
