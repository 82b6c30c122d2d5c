"""The vocabulary of signing keys."""

from django.db import models


class KeyAlgorithm(models.TextChoices):
    """JWS algorithms we sign with (RFC 7518 names; EdDSA is Ed25519, RFC 8037)."""

    ES256 = "ES256"
    EDDSA = "EdDSA"
    RS256 = "RS256"


class KeyState(models.TextChoices):
    """A signing key's life: published before it signs, published after it stops."""

    PENDING = "pending"  # in JWKS so verifiers learn it; does not sign yet
    ACTIVE = "active"  # signs new tokens; one per algorithm
    RETIRING = "retiring"  # in JWKS until every token it signed has expired
    RETIRED = "retired"  # out of JWKS; kept for the record
    REVOKED = "revoked"  # withdrawn in an emergency: out of JWKS, its tokens inactive
