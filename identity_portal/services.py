"""First-run setup: what a fresh installation needs before it can serve.

Idempotent by construction: each step checks for what it would create under
a lock, so a second ``make run`` (or two at once) creates nothing twice.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from tokens.models import SigningKey
from tokens.services import signing_key_first_ensure

FIRST_ADMIN_USERNAME = "admin"


@dataclass(frozen=True)
class FirstAdmin:
    username: str
    password: str  # shown once to the operator, never stored in clear


def first_admin_ensure() -> FirstAdmin | None:
    """Create the first console admin when no superuser exists.

    Returns the one-time password to print, or None when an admin exists.
    """
    user_model = get_user_model()
    with transaction.atomic():
        if user_model.objects.select_for_update().filter(is_superuser=True).exists():
            return None
        password = secrets.token_urlsafe(18)
        user_model.objects.create_superuser(
            username=FIRST_ADMIN_USERNAME, email="", password=password
        )
    return FirstAdmin(username=FIRST_ADMIN_USERNAME, password=password)


def first_signing_key_ensure() -> SigningKey | None:
    """Create and activate the first signing key when no key of the configured algorithm signs.

    Returns the new key, or None when one exists.
    """
    return signing_key_first_ensure()


WORKER_HEARTBEAT_KEY = "portal:worker-heartbeat"


def worker_heartbeat_record() -> None:
    """Note that a Celery worker ran a task just now.

    Beat schedules this every 30 s, so ``/readyz`` can tell operators when the
    lifecycle tasks (purge, rotation, sealing) last had a worker, without
    making web readiness depend on it: tokens are issued with the broker down.
    """
    cache.set(WORKER_HEARTBEAT_KEY, timezone.now().isoformat(), timeout=24 * 3600)


def worker_heartbeat_last_seen() -> str | None:
    return cache.get(WORKER_HEARTBEAT_KEY)
