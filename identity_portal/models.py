"""The console's passkey rows: django-otp-webauthn's models, with a binding to a server secret.

Swapped in through ``OTP_WEBAUTHN_CREDENTIAL_MODEL`` and
``OTP_WEBAUTHN_ATTESTATION_MODEL`` (the package's documented seam), so its
ceremonies store and find credentials here. The one field we add is why: a
credential row grants the second factor, and the threat model does not trust
the database with power.
"""

from __future__ import annotations

from django.db import models
from django_otp_webauthn.models import AbstractWebAuthnAttestation, AbstractWebAuthnCredential


class PasskeyCredential(AbstractWebAuthnCredential):
    """A console user's passkey or security key: credential id and COSE public key.

    ``binding`` is an HMAC under a key derived from ``SECRET_KEY`` over the
    user, the credential id and the public key, written when the portal
    registers the credential (``identity_portal.passkeys``). A row inserted,
    edited or moved to another user by someone without the server secret
    verifies nobody.
    """

    binding = models.CharField(max_length=64, editable=False, default="")

    class Meta(AbstractWebAuthnCredential.Meta):
        verbose_name = "passkey"
        verbose_name_plural = "passkeys"


class PasskeyAttestation(AbstractWebAuthnAttestation):
    """What the authenticator attested at registration, kept for later reference."""

    credential = models.OneToOneField(
        PasskeyCredential,
        on_delete=models.CASCADE,
        related_name="attestation",
        editable=False,
    )
