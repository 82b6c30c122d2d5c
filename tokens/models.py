"""Signing keys and the record of issued tokens."""

from django.conf import settings
from django.db import models

from tokens.choices import KeyAlgorithm, KeyState


class SigningKey(models.Model):
    """A key pair that signs access and ID tokens.

    The private half is stored only encrypted (AES-256-GCM, ``kid`` and
    ``algorithm`` as associated data) under the key-encryption key named by
    ``kek_id``, so a database dump alone signs nothing and a row written
    without the KEK is never trusted (tokens.keyring). ``kid`` is the RFC 7638
    thumbprint of the public half. ``public_jwk`` is a copy for display only:
    what is published and verified is derived from the private half. Keys are
    published before they sign (pending) and after they stop (retiring) so
    verifiers with a cached JWKS never miss one. A revoked key's private half
    is erased.
    """

    kid = models.CharField(max_length=64, unique=True)
    algorithm = models.CharField(max_length=8, choices=KeyAlgorithm.choices)
    state = models.CharField(
        max_length=16, choices=KeyState.choices, default=KeyState.PENDING, db_index=True
    )
    public_jwk = models.JSONField()
    private_key_wrapped = models.BinaryField()
    kek_id = models.CharField(max_length=32)
    created_at = models.DateTimeField()
    # When a pending key starts signing, and when a retiring key leaves JWKS.
    activate_after = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    retiring_at = models.DateTimeField(null=True, blank=True)
    retire_after = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One active key per algorithm, even under concurrent rotations.
            models.UniqueConstraint(
                fields=["algorithm"],
                condition=models.Q(state=KeyState.ACTIVE),
                name="tokens_one_active_key_per_alg",
            )
        ]

    def __str__(self) -> str:
        return f"{self.algorithm} {self.kid} ({self.state})"


class IssuedToken(models.Model):
    """What we know about an access token we issued, never the token itself.

    ``checksum`` is SHA-256 of the token: it lets introspection and revocation
    recognise the exact token without storing anything replayable (RFC 9700
    storage gate). Rows are purged after expiry; the audit events stay.
    """

    jti = models.CharField(max_length=64)
    checksum = models.CharField(max_length=64)
    # No database-level foreign keys on this insert-per-token table: each
    # would take a KEY SHARE row lock on the machine and the signing key for
    # every token, which serialises concurrent requests of one machine on a
    # shared lock (multixacts). Machines and keys are never deleted (soft
    # delete, retired state), and the ORM still cascades in Python.
    machine = models.ForeignKey(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="issued_tokens",
        db_constraint=False,
    )
    scope = models.TextField(blank=True, default="")
    audience = models.CharField(max_length=255)
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    signing_key = models.ForeignKey(
        SigningKey,
        to_field="kid",
        db_column="kid",
        on_delete=models.PROTECT,
        related_name="issued_tokens",
        db_constraint=False,
        db_index=False,
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-issued_at"]
        # A constraint, not unique=True: the latter adds a second, LIKE-pattern
        # index on PostgreSQL that nothing queries and every insert maintains.
        constraints = [models.UniqueConstraint(fields=["jti"], name="tokens_issuedtoken_jti_uniq")]

    def __str__(self) -> str:
        return f"token {self.jti}"
