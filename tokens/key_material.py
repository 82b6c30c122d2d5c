"""Our signing keys' private material: generation and wrapping under the key-encryption key.

The JOSE primitives (base64url, JWKs, thumbprints, compact JWS) are in
``core.jose``; this module holds only what is particular to the token
signing keys: which algorithms we sign with, how big an RSA key we make, and
the AES-256-GCM wrapping that binds a private key to its row identity.
"""

from __future__ import annotations

import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.jose import PrivateKey, key_fits
from tokens.choices import KeyAlgorithm
from tokens.constants import RSA_KEY_BITS

_NONCE_BYTES = 12


# --- keys -------------------------------------------------------------------


def private_key_generate(algorithm: str) -> PrivateKey:
    if algorithm == KeyAlgorithm.ES256:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == KeyAlgorithm.EDDSA:
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == KeyAlgorithm.RS256:
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    raise ValueError(f"unsupported algorithm {algorithm!r}")


# --- wrapping (AES-256-GCM under a key-encryption key) ---------------------

# Domain separation and format version of the associated data. Format 1 bound
# only the kid; rows in that format are re-bound by migration 0003 and no
# longer decrypt here, so a blob copied from an old backup is not trusted.
_AAD_CONTEXT = b"mip tokens.SigningKey wrap v2\x00"


def signing_key_aad(*, kid: str, algorithm: str) -> bytes:
    """The row identity that the KEK authenticates along with the private key.

    The kid is the RFC 7638 thumbprint of the public key, so binding it binds
    the public key as well (the loader checks the thumbprint of the public key
    it derives). The algorithm is bound too: a key type may one day serve two
    algorithms (RS256 and PS256), and the row must not choose between them.
    """
    identity = json.dumps({"alg": algorithm, "kid": kid}, sort_keys=True, separators=(",", ":"))
    return _AAD_CONTEXT + identity.encode("utf-8")


def private_key_wrap(private_key: PrivateKey, *, kek: bytes, kid: str, algorithm: str) -> bytes:
    """Encrypt the PKCS#8 DER of a private key, its row identity as associated data."""
    der = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    nonce = os.urandom(_NONCE_BYTES)
    aad = signing_key_aad(kid=kid, algorithm=algorithm)
    return nonce + AESGCM(kek).encrypt(nonce, der, aad)


def private_key_unwrap(wrapped: bytes, *, kek: bytes, kid: str, algorithm: str) -> PrivateKey:
    """Decrypt and parse; a wrong KEK, kid, algorithm or tampered blob raises ``InvalidTag``."""
    if len(wrapped) <= _NONCE_BYTES:
        raise InvalidTag("too short")
    nonce, ciphertext = wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:]
    der = AESGCM(kek).decrypt(nonce, ciphertext, signing_key_aad(kid=kid, algorithm=algorithm))
    try:
        # The DER just authenticated under our KEK is a key we generated and
        # checked: RSA's consistency checks would cost ~120 ms per key per reload.
        key = serialization.load_der_private_key(
            der, password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError) as exc:
        raise InvalidTag("not a private key") from exc
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    ):
        raise InvalidTag("unexpected key type")
    return key


def private_key_fits(private_key: PrivateKey, algorithm: str) -> bool:
    """Whether a private key is of the one type (and size) one of our algorithms signs with."""
    return algorithm in KeyAlgorithm.values and key_fits(private_key, algorithm)
