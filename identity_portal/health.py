"""Liveness and readiness probes: JSON, 200 or 503, never cached.

``/healthz`` says the process answers. ``/readyz`` says it can do its job:
the database answers, the broker answers (the token path does not need it,
but the lifecycle tasks do), an active signing key exists, and every published
signing-key row is authentic. A row the keyring distrusts (forged or edited in
the database) makes the portal not ready, and ``key_problems`` names its kid:
it is an intrusion for an operator to act on, not a state to run in.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.db.utils import DatabaseError
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from kombu import Connection
from kombu.exceptions import KombuError

from identity_portal.services import worker_heartbeat_last_seen
from tokens.keyring import Keyring, keyring_reload
from tokens.selectors import signing_key_active_exists

logger = logging.getLogger(__name__)


def _database_ready() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except DatabaseError:
        logger.warning("readiness: database unreachable")
        return False


def _broker_ready() -> bool:
    # A fresh connection each time: the app's pooled one could hide an outage.
    connection = Connection(
        settings.CELERY_BROKER_URL,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        connect_timeout=2,
    )
    try:
        with connection as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
        return True
    except (KombuError, OSError):
        logger.warning("readiness: broker unreachable")
        return False


def _signing_key_ready() -> bool:
    try:
        return signing_key_active_exists()
    except DatabaseError:
        return False


def _keyring() -> Keyring | None:
    # Reloaded, not the cached ring: a row edited in the database bumps no version.
    try:
        return keyring_reload()
    except DatabaseError:
        return None


def readiness_checks(*, ring: Keyring | None) -> dict[str, bool]:
    return {
        "database": _database_ready(),
        "broker": _broker_ready(),
        "signing_key": _signing_key_ready() and ring is not None and bool(ring.signers),
        "signing_keys_authentic": ring is not None and not ring.problems,
    }


@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request):
    ring = _keyring()
    checks = readiness_checks(ring=ring)
    ready = all(checks.values())
    problems = [] if ring is None else ring.problems
    return JsonResponse(
        {
            "status": "ready" if ready else "not ready",
            "checks": checks,
            "key_problems": [{"kid": p.kid, "reason": p.reason} for p in problems],
            # Informational: the token path does not need a worker.
            "worker_last_seen": worker_heartbeat_last_seen(),
        },
        status=200 if ready else 503,
    )
