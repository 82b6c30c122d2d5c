"""The vocabulary of signing keys."""

from django.db import models


class KeyAlgorithm(models.TextChoices):
    """JWS algorithms we sign with (RFC 7518 names; EdDSA is Ed25519, RFC 8037)."""

    # Labels spelled as the RFCs do (the default label would read "Es256").
    ES256 = "ES256", "ES256"
    EDDSA = "EdDSA", "EdDSA"
    RS256 = "RS256", "RS256"


class KeyState(models.TextChoices):
    """A signing key's life: published before it signs, published after it stops."""

    PENDING = "pending"  # in JWKS so verifiers learn it; does not sign yet
    ACTIVE = "active"  # signs new tokens; one per algorithm
    RETIRING = "retiring"  # in JWKS until every token it signed has expired
    RETIRED = "retired"  # out of JWKS; kept for the record
    REVOKED = "revoked"  # withdrawn in an emergency: out of JWKS, its tokens inactive


class KeyProblemReason(models.TextChoices):
    """Why the keyring distrusts a published signing-key row (the audit reason)."""

    UNKNOWN_KEK = "unknown_kek"  # wrapped under a KEK this server does not have
    NOT_AUTHENTIC = "not_authentic"  # the blob does not decrypt with this row's kid and alg
    WRONG_KEY_TYPE = "wrong_key_type"  # decrypts, but is not a key of the row's algorithm
    KID_MISMATCH = "kid_mismatch"  # decrypts, but the kid is not its public key's thumbprint
    # The key itself is authentic and stays trusted under its derived public
    # key; only the stored public_jwk column was changed.
    PUBLIC_JWK_MISMATCH = "public_jwk_mismatch"
