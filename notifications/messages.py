"""The words of a notification email (webhooks carry the payload as JSON)."""

from __future__ import annotations

from notifications.choices import NotificationKind
from notifications.models import Notification

_SUBJECTS = {
    NotificationKind.SECRET_EXPIRING: "A client secret of {display} expires soon",
    NotificationKind.SECRET_EXPIRED: "A client secret of {display} has expired",
    NotificationKind.MACHINE_STALE: "Machine {display} has not been used for a while",
    NotificationKind.KEY_ROTATED: "A new token signing key is active",
    NotificationKind.AUTH_FAILURES: "Repeated authentication failures for {display}",
    NotificationKind.TEST: "Test notification",
}

_ADVICE = {
    NotificationKind.SECRET_EXPIRING: (
        "Rotate it before it expires: the machine can call POST /api/v1/machines/self/secret "
        "with its current credentials, or an admin can rotate it in the console."
    ),
    NotificationKind.SECRET_EXPIRED: (
        "The secret no longer authenticates. Give the machine a new one in the console "
        "(Rotate secret) or with `manage.py machine rotate-secret`."
    ),
    NotificationKind.MACHINE_STALE: (
        "If the machine is no longer needed, delete it; if it was disabled by policy and is "
        "still needed, enable it again in the console."
    ),
    NotificationKind.KEY_ROTATED: "Resource servers pick the new key up from JWKS.",
    NotificationKind.AUTH_FAILURES: (
        "Someone keeps presenting wrong credentials for this machine: a misconfigured "
        "deployment or a guessing attempt. Requests are being throttled."
    ),
    NotificationKind.TEST: "The portal can reach you.",
}


def email_text(notification: Notification) -> tuple[str, str]:
    """Subject and plain-text body. Only what the payload holds: never a secret."""
    display = notification.subject_display or notification.subject_id
    subject = "[Machine Identity Portal] " + _SUBJECTS.get(
        notification.kind, notification.kind
    ).format(display=display)
    lines = [_ADVICE.get(notification.kind, ""), ""]
    for key, value in sorted(notification.payload.items()):
        if key == "subject":
            continue
        lines.append(f"{key}: {value}")
    lines.append(f"subject: {notification.subject_kind} {display} ({notification.subject_id})")
    return subject, "\n".join(lines) + "\n"
