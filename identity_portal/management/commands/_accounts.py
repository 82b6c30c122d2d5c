"""What the audited account commands share: catching the accounts Django's command saved.

Django's ``createsuperuser`` and ``changepassword`` save the user deep inside
their ``handle`` (after prompting); ``post_save`` is the library's hook there.
The receiver is connected only while the command runs, inside the command's
transaction, so the account change and its audit event commit together.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db.models.signals import post_save


@contextmanager
def users_saved(user_model) -> Iterator[list[tuple[object, bool]]]:
    """Yield a list that fills with ``(user, created)`` for each save of ``user_model``."""
    saved: list[tuple[object, bool]] = []

    def collect(sender, instance, created, **kwargs) -> None:
        saved.append((instance, created))

    post_save.connect(collect, sender=user_model, weak=False)
    try:
        yield saved
    finally:
        post_save.disconnect(collect, sender=user_model)
