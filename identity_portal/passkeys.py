"""Passkeys and security keys (WebAuthn) as the console's other second factor.

Built on django-otp-webauthn: its credential model is a django-otp device, its
helper runs the ceremonies (challenge kept in the session and spent once,
origin, RP ID and signature checked by py_webauthn). What is ours, as for TOTP
in ``identity_portal.mfa``:

- registration and its audit event commit together (``console.mfa_enrolled``,
  ``device`` ``webauthn``); a user registering a passkey as their first second
  factor gets their recovery codes in that same transaction, shown once;
- a passkey used at sign-in is recorded (``console.mfa_verified``), a failed
  assertion too (``console.mfa_failed``, method ``webauthn``, the reason code);
- removing a passkey is recorded (``console.mfa_device_removed``).

A credential row (``identity_portal.models.PasskeyCredential``) holds the
credential id and public key the authenticator gave at registration, and an
HMAC under a key derived from ``SECRET_KEY`` over them and the user: a row a
database writer plants, edits or moves to another user verifies nobody
(``console.mfa_failed``, reason ``credential_unbound``).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils.crypto import salted_hmac
from django_otp_webauthn import exceptions as webauthn_errors
from django_otp_webauthn.utils import rewrite_exceptions

from audit.choices import EventType
from audit.context import Actor, RequestContext
from audit.services import audit_record
from identity_portal.mfa import (
    failure_record,
    mfa_authenticator_get,
    mfa_is_enrolled,
    recovery_code_display,
    recovery_codes_replace,
    user_target,
)
from identity_portal.models import PasskeyCredential

# A console user's passkeys are few (a laptop, a phone, a security key or two).
MAX_PASSKEYS_PER_USER = 10


class CredentialUnbound(webauthn_errors.OTPWebAuthnApiError):
    status_code = 403
    default_detail = "This passkey was not registered by the portal."
    default_code = "credential_unbound"


def passkey_binding(*, user_id: int, credential_id: bytes, public_key: bytes) -> str:
    """The MAC that binds a credential row to its user, under a key derived from ``SECRET_KEY``.

    Length-prefixed fields, so no two different (id, key) pairs share an input.
    """
    credential_id, public_key = bytes(credential_id), bytes(public_key)
    value = b"".join(
        (
            f"{user_id}:{len(credential_id)}:".encode("ascii"),
            credential_id,
            f":{len(public_key)}:".encode("ascii"),
            public_key,
        )
    )
    return salted_hmac("identity_portal.passkeys.binding", value, algorithm="sha256").hexdigest()


def passkey_is_bound(credential) -> bool:
    """Whether the portal wrote this row: its binding verifies (constant-time comparison)."""
    expected = passkey_binding(
        user_id=credential.user_id,
        credential_id=credential.credential_id,
        public_key=credential.public_key,
    )
    return hmac.compare_digest(credential.binding.encode("ascii"), expected.encode("ascii"))


# --- selectors ---------------------------------------------------------------------


def passkeys_available() -> bool:
    """Whether browsers can use passkeys with this portal's RP ID and origins.

    Browsers refuse an IP address as RP ID, and WebAuthn in a plain-http page
    other than on localhost: on such a host the console does not offer passkeys.
    """
    rp_id = settings.WEBAUTHN_RP_ID
    origins = settings.WEBAUTHN_ORIGINS
    if not rp_id or not origins:
        return False
    try:
        ipaddress.ip_address(rp_id)
    except ValueError:
        pass
    else:
        return False
    return all(
        origin.startswith("https://") or urlsplit(origin).hostname == "localhost"
        for origin in origins
    )


def passkey_list(*, user):
    """The user's passkeys, oldest first."""
    return PasskeyCredential.objects.filter(user=user, confirmed=True).order_by("created_at", "id")


def passkey_exists(*, user) -> bool:
    return PasskeyCredential.objects.filter(user=user, confirmed=True).exists()


def passkey_label(credential) -> str:
    """How the console names a passkey: its number and when it was added (no key material)."""
    return f"passkey {credential.pk} ({credential.created_at:%Y-%m-%d})"


# --- services ----------------------------------------------------------------------


@dataclass(frozen=True)
class PasskeyRegistration:
    credential: PasskeyCredential
    first_factor: bool  # the user had no second factor before: recovery codes issued
    recovery_codes: list[str]  # shown once, as the user types them; empty if not first


def passkey_register(
    *, user, helper, state: dict, data: dict, context: RequestContext
) -> PasskeyRegistration:
    """Verify the authenticator's attestation and store the credential, with its event.

    ``helper`` is django-otp-webauthn's (it checks challenge, origin and RP ID
    and saves the credential and its attestation). In one transaction with it:
    ``console.mfa_enrolled`` and, for a user's first second factor, new
    recovery codes. Raises the package's API errors (4xx) on a bad response;
    nothing is then stored.
    """
    with transaction.atomic():
        first = not mfa_is_enrolled(user=user)
        with rewrite_exceptions(logger=None):
            credential = helper.register_complete(user=user, state=state, data=data)
        credential.name = f"passkey {credential.pk}"
        credential.binding = passkey_binding(
            user_id=user.pk,
            credential_id=credential.credential_id,
            public_key=credential.public_key,
        )
        credential.save(update_fields=["name", "binding"])
        codes = recovery_codes_replace(user=user) if first else []
        audit_record(
            event_type=EventType.CONSOLE_MFA_ENROLLED,
            actor=Actor.user(user),
            target=user_target(user),
            details={
                "device": "webauthn",
                "credential": credential.pk,
                "recovery_codes": len(codes),
            },
            context=context,
        )
    return PasskeyRegistration(
        credential=credential,
        first_factor=first,
        recovery_codes=[recovery_code_display(c) for c in codes],
    )


def passkey_verify(*, user, helper, state: dict | None, data: dict, context: RequestContext):
    """The user's credential that signed this assertion; a failure is recorded and re-raised.

    Success updates the credential's sign count and last use and records
    ``console.mfa_verified`` in one transaction. Any refusal (no or spent
    challenge, unknown credential, another user's, bad signature, wrong
    origin, a row whose binding does not verify) leaves the credential as it
    was and records ``console.mfa_failed`` with the error code as reason.
    """
    try:
        with transaction.atomic():
            if not state:
                raise webauthn_errors.InvalidState()
            with rewrite_exceptions(logger=None):
                credential = helper.authenticate_complete(user=user, state=state, data=data)
            if not credential.confirmed:
                raise webauthn_errors.CredentialDisabled()
            if not passkey_is_bound(credential):
                # Planted, edited or moved in the database: its sign count update rolls back.
                raise CredentialUnbound()
            audit_record(
                event_type=EventType.CONSOLE_MFA_VERIFIED,
                actor=Actor.user(user),
                target=user_target(user),
                details={"method": "webauthn", "credential": credential.pk},
                context=context,
            )
    except webauthn_errors.OTPWebAuthnApiError as exc:
        with transaction.atomic():
            failure_record(user=user, method="webauthn", reason=exc.code, context=context)
        raise
    return credential


class LastSecondFactor(Exception):
    """The passkey is the user's only second factor: removing it would leave recovery codes only."""


def passkey_remove(*, user, credential_id: int, context: RequestContext) -> bool:
    """Remove one of ``user``'s own passkeys; False (nothing recorded) if they have no such one.

    Refused (``LastSecondFactor``, nothing changed) when it is their only
    second factor: an account without one enrols again with the password
    alone, so only a superuser's reset may bring an account back there. A
    session verified with the removed passkey is no longer verified
    (django-otp finds its device gone) and is asked for a second factor again.
    """
    with transaction.atomic():
        mine = PasskeyCredential.objects.select_for_update().filter(user=user)
        credential = mine.filter(pk=credential_id).first()
        if credential is None:
            return False
        others = PasskeyCredential.objects.filter(user=user, confirmed=True).exclude(
            pk=credential_id
        )
        if not others.exists() and mfa_authenticator_get(user=user) is None:
            raise LastSecondFactor()
        credential.delete()
        audit_record(
            event_type=EventType.CONSOLE_MFA_DEVICE_REMOVED,
            actor=Actor.user(user),
            target=user_target(user),
            details={"device": "webauthn", "credential": credential_id},
            context=context,
        )
    return True
