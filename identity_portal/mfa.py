"""The console's second factor: TOTP authenticators and one-time recovery codes.

Built on django-otp's devices (a ``TOTPDevice`` per authenticator, a
``StaticDevice`` holding the recovery codes) and its per-device throttling
(each failure doubles the wait before the next try). What is ours:

- enrolment: an unconfirmed authenticator is confirmed only by a correct code
  from it, and in the same transaction the user's recovery codes are replaced
  and ``console.mfa_enrolled`` is recorded;
- recovery codes are stored as keyed digests, never in clear:
  HMAC-SHA256 under a key derived from ``SECRET_KEY``, bound to the user, so a
  database reader learns no code and a database writer cannot plant one that
  works. Each is shown once, right after enrolment, and spent when used;
- every failed or throttled code is recorded (``console.mfa_failed``), as is
  every code accepted (``console.mfa_verified``), every recovery code spent and
  every reset by a superuser (which removes passkeys too: ``identity_portal.passkeys``).
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass

from django.db import transaction
from django.utils.crypto import salted_hmac
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.choices import EventType, Outcome
from audit.context import Actor, RequestContext, Target
from audit.services import audit_record
from identity_portal.models import PasskeyCredential

RECOVERY_CODE_COUNT = 10
RECOVERY_DEVICE_NAME = "recovery codes"
AUTHENTICATOR_NAME = "authenticator"
_TOTP_SHAPE = re.compile(r"^[0-9]{6,8}$")
_RECOVERY_SHAPE = re.compile(r"^[a-z2-7]{12}$")


def user_target(user) -> Target:
    return Target(kind="user", id=str(user.pk), display=user.get_username())


# --- selectors ---------------------------------------------------------------------


def mfa_authenticator_get(*, user) -> TOTPDevice | None:
    """The user's confirmed authenticator, if enrolled."""
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("id").first()


def mfa_is_enrolled(*, user) -> bool:
    """Whether the user has a second factor: a confirmed authenticator or a passkey."""
    return (
        TOTPDevice.objects.filter(user=user, confirmed=True).exists()
        or PasskeyCredential.objects.filter(user=user, confirmed=True).exists()
    )


def mfa_recovery_codes_left(*, user) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


# --- recovery codes ----------------------------------------------------------------


def recovery_code_normalise(typed: str) -> str:
    """What the user typed, without the dashes and spaces we print, in lower case."""
    return re.sub(r"[\s-]", "", typed).lower()


def recovery_code_digest(*, user_id: int, code: str) -> str:
    """The stored form of a recovery code: 16 base32 characters (80 bits) of an HMAC.

    Keyed with a key derived from ``SECRET_KEY`` and bound to the user: a row
    copied to another account, or written by someone without the server
    secret, matches nothing.
    """
    mac = salted_hmac(
        "identity_portal.mfa.recovery-code", f"{user_id}:{code}", algorithm="sha256"
    ).digest()
    return base64.b32encode(mac[:10]).decode("ascii").lower()


def _recovery_code_new() -> str:
    return base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()[:12]


def recovery_code_display(code: str) -> str:
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


# --- services ----------------------------------------------------------------------


def mfa_enrolment_start(*, user) -> TOTPDevice:
    """The authenticator being enrolled: the user's unconfirmed one, or a new one.

    Reused across page loads so a reload does not invalidate the QR code the
    user already scanned. Nothing is audited until a code confirms it.
    """
    with transaction.atomic():
        device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("id").first()
        if device is None:
            device = TOTPDevice.objects.create(user=user, name=AUTHENTICATOR_NAME, confirmed=False)
    return device


@dataclass(frozen=True)
class Enrolment:
    device: TOTPDevice
    recovery_codes: list[str]  # shown once, as the user types them


def mfa_enrolment_confirm(
    *, user, device: TOTPDevice, token: str, context: RequestContext
) -> Enrolment | None:
    """Confirm ``device`` with a code from it; None (and a failure recorded) when wrong.

    On success, in one transaction: the device is confirmed, any other
    authenticator of the user is removed, the recovery codes are replaced by
    new ones and ``console.mfa_enrolled`` is recorded.
    """
    with transaction.atomic():
        device = TOTPDevice.objects.select_for_update().get(pk=device.pk, user=user)
        if device.confirmed or not device.verify_token(token.strip()):
            failure_record(user=user, method="totp", reason="bad_code", context=context)
            return None
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
        codes = recovery_codes_replace(user=user)
        audit_record(
            event_type=EventType.CONSOLE_MFA_ENROLLED,
            actor=Actor.user(user),
            target=user_target(user),
            details={"device": "totp", "recovery_codes": len(codes)},
            context=context,
        )
    return Enrolment(device=device, recovery_codes=[recovery_code_display(c) for c in codes])


def recovery_codes_replace(*, user) -> list[str]:
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name=RECOVERY_DEVICE_NAME, confirmed=True)
    codes = [_recovery_code_new() for _ in range(RECOVERY_CODE_COUNT)]
    StaticToken.objects.bulk_create(
        StaticToken(device=device, token=recovery_code_digest(user_id=user.pk, code=code))
        for code in codes
    )
    return codes


def mfa_verify(*, user, token: str, context: RequestContext):
    """The device that accepts ``token`` (a TOTP code or a recovery code), else None.

    A failure, including one refused by django-otp's throttle before the code
    is even checked, is recorded as ``console.mfa_failed``; a recovery code
    is spent by its use, and that is recorded too.
    """
    typed = token.strip()
    with transaction.atomic():
        if _TOTP_SHAPE.match(typed):
            method = "totp"
            device = mfa_authenticator_get(user=user)
            candidate = typed
        else:
            method = "recovery_code"
            device = StaticDevice.objects.filter(user=user, confirmed=True).first()
            code = recovery_code_normalise(typed)
            candidate = (
                recovery_code_digest(user_id=user.pk, code=code)
                if _RECOVERY_SHAPE.match(code)
                else None
            )
        if device is None or candidate is None:
            failure_record(user=user, method=method, reason="bad_code", context=context)
            return None
        allowed, _ = device.verify_is_allowed()
        if not allowed:
            failure_record(user=user, method=method, reason="throttled", context=context)
            return None
        if not device.verify_token(candidate):
            failure_record(user=user, method=method, reason="bad_code", context=context)
            return None
        if method == "recovery_code":
            audit_record(
                event_type=EventType.CONSOLE_MFA_RECOVERY_USED,
                actor=Actor.user(user),
                target=user_target(user),
                details={"left": device.token_set.count()},
                context=context,
            )
        audit_record(
            event_type=EventType.CONSOLE_MFA_VERIFIED,
            actor=Actor.user(user),
            target=user_target(user),
            details={"method": method},
            context=context,
        )
    return device


def failure_record(*, user, method: str, reason: str, context: RequestContext) -> None:
    # Outside the caller's transaction would be wrong: the throttle counter that
    # django-otp just incremented and this event commit together.
    audit_record(
        event_type=EventType.CONSOLE_MFA_FAILED,
        actor=Actor.user(user),
        target=user_target(user),
        outcome=Outcome.FAILURE,
        reason=reason,
        details={"method": method},
        context=context,
    )


def mfa_reset(*, user, actor: Actor, context: RequestContext) -> int:
    """Remove the user's authenticators, passkeys and recovery codes (a superuser's act).

    The user enrols again at their next sign-in; a session they verified with
    a removed device is no longer verified. Returns how many devices went
    (passkeys included; the event also says how many of them were passkeys).
    """
    with transaction.atomic():
        totp, static = TOTPDevice.objects.filter(user=user), StaticDevice.objects.filter(user=user)
        passkeys = PasskeyCredential.objects.filter(user=user)
        passkeys_removed = passkeys.count()
        removed = totp.count() + static.count() + passkeys_removed
        totp.delete()
        static.delete()
        passkeys.delete()
        audit_record(
            event_type=EventType.CONSOLE_MFA_RESET,
            actor=actor,
            target=user_target(user),
            details={"devices_removed": removed, "passkeys_removed": passkeys_removed},
            context=context,
        )
    return removed
