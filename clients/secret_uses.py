"""Counting the uses of a use-limited (bootstrap) secret.

The authentication cache cannot count: two web nodes reading the same entry
would both let a single-use secret through. So each use of a limited secret
is one conditional UPDATE, which the database serialises: the ``max_uses``-th
use succeeds, every later one matches no row. Unlimited secrets, the usual
case, never reach this.
"""

from __future__ import annotations

from django.db.models import F

from clients.models import ClientSecret


def secret_use_consume(*, secret_id: int) -> bool:
    """Count one use; False when the secret has none left (or is gone or revoked)."""
    used = ClientSecret.objects.filter(
        pk=secret_id,
        revoked_at__isnull=True,
        max_uses__isnull=False,
        use_count__lt=F("max_uses"),
    ).update(use_count=F("use_count") + 1)
    return used == 1
