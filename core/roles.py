"""Console roles, checked on every console page and API call.

Two groups, created by a data migration: security admins change machines,
secrets and keys; auditors read and export the record and change nothing.
A superuser is a security admin. Roles live at the bottom of the import
graph (``core``) because every app checks them.
"""

from __future__ import annotations

SECURITY_ADMINS = "security-admins"
AUDITORS = "auditors"


def _in_group(user, name: str) -> bool:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return user.groups.filter(name=name).exists()


def is_security_admin(user) -> bool:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return user.is_superuser or _in_group(user, SECURITY_ADMINS)


def is_auditor(user) -> bool:
    return _in_group(user, AUDITORS)


def can_read_audit(user) -> bool:
    return is_security_admin(user) or is_auditor(user)
