"""Counting the uses of a use-limited (bootstrap) secret.

The authentication cache cannot count: two web nodes reading the same entry
would both let a single-use secret through. So each use of a limited secret
is one conditional UPDATE, which the database serialises: the ``max_uses``-th
use succeeds, every later one matches no row. Unlimited secrets, the usual
case, never reach this.
"""

from __future__ import annotations

from django.db.models import F

from clients.auth_methods import Verification
from clients.machine_cache import MachineAuthEntry
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


def secret_use_count(*, entry: MachineAuthEntry, verification: Verification) -> Verification:
    """After every other check passed: count a use of a limited secret, or refuse it.

    Counted last, so a request refused for another reason (a disabled machine,
    an address not allowed) spends none of a bootstrap secret's uses.
    """
    for secret in entry.secrets:
        if secret.id == verification.credential_id:
            break
    else:
        return verification
    if not secret.limited or secret_use_consume(secret_id=secret.id):
        return verification
    return Verification(
        reason="secret_used_up",
        credential_id=verification.credential_id,
        details=verification.details,
    )
