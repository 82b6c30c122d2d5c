"""Console roles, checked on every console page and API call.

Two groups, created by a data migration: security admins change machines,
secrets and keys; auditors read and export the record and change nothing.
A superuser is a security admin. Holding a role is what lets a user into the
console; Django's staff flag plays no part. Roles live at the bottom of the
import graph (``core``) because every app checks them.
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


def may_enter_console(user) -> bool:
    """Active and holding a role (superuser, security admin or auditor)."""
    return can_read_audit(user)


def role_names(user) -> list[str]:
    """The roles a user holds, as the console names them, most powerful first."""
    if not getattr(user, "is_authenticated", False):
        return []
    groups = set(user.groups.values_list("name", flat=True))
    names = []
    if user.is_superuser:
        names.append("Superuser")
    if SECURITY_ADMINS in groups:
        names.append("Security admin")
    if AUDITORS in groups:
        names.append("Auditor")
    return names
