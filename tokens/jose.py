"""JOSE with ``cryptography`` directly: keys, JWKs, thumbprints, compact JWS.

Why not a JOSE library on the hot path: PyJWT re-parses a PEM key on every
call and accepts whatever algorithm the caller passes; here each key object
is parsed once and bound to exactly one algorithm, so a token header can never
choose how it is verified (no ``alg: none``, no HS256 keyed with a public key).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# One RFC 7638 thumbprint and base64url encoder for the project; audit.chain has
# no Django import, so tokens may use it (imports flow tokens -> audit).
from audit.chain import b64url, jwk_thumbprint  # noqa: F401  (re-exported for tokens)
from tokens.choices import KeyAlgorithm
from tokens.constants import RSA_KEY_BITS, RSA_MIN_KEY_BITS

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey

# A compact JWS of ours is well under this; anything longer is refused unparsed.
MAX_JWS_LENGTH = 8192
_NONCE_BYTES = 12


class InvalidJWS(ValueError):
    """A compact JWS that is malformed, not ours, or whose signature does not verify."""


def b64url_decode(value: str) -> bytes:
    if not value.isascii():
        raise InvalidJWS("not base64url")
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidJWS("not base64url") from exc


def _int_b64(value: int, length: int | None = None) -> str:
    length = length or (value.bit_length() + 7) // 8
    return b64url(value.to_bytes(length, "big"))


# --- keys -------------------------------------------------------------------


def private_key_generate(algorithm: str) -> PrivateKey:
    if algorithm == KeyAlgorithm.ES256:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == KeyAlgorithm.EDDSA:
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == KeyAlgorithm.RS256:
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    raise ValueError(f"unsupported algorithm {algorithm!r}")


def public_jwk(public_key: PublicKey) -> dict[str, str]:
    """The public JWK members, without ``kid``/``alg``/``use`` (RFC 7517 section 4)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        numbers = public_key.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": _int_b64(numbers.x, 32),
            "y": _int_b64(numbers.y, 32),
        }
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        return {"kty": "RSA", "n": _int_b64(numbers.n), "e": _int_b64(numbers.e)}
    raise ValueError("unsupported key type")


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
    """Whether a private key is of the one type (and size) its algorithm signs with."""
    if algorithm == KeyAlgorithm.ES256:
        return isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(
            private_key.curve, ec.SECP256R1
        )
    if algorithm == KeyAlgorithm.EDDSA:
        return isinstance(private_key, ed25519.Ed25519PrivateKey)
    if algorithm == KeyAlgorithm.RS256:
        return (
            isinstance(private_key, rsa.RSAPrivateKey) and private_key.key_size >= RSA_MIN_KEY_BITS
        )
    return False


# --- compact JWS -------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """An active private key, parsed once, bound to its kid and algorithm."""

    kid: str
    algorithm: str
    private_key: PrivateKey

    def sign(self, *, claims: dict[str, Any], typ: str) -> str:
        header = {"alg": self.algorithm, "kid": self.kid, "typ": typ}
        signing_input = (_json_segment(header) + "." + _json_segment(claims)).encode("ascii")
        return signing_input.decode("ascii") + "." + b64url(self._signature(signing_input))

    def _signature(self, data: bytes) -> bytes:
        key = self.private_key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


@dataclass(frozen=True)
class Verifier:
    """A published public key, parsed once, that verifies exactly one algorithm."""

    kid: str
    algorithm: str
    public_key: PublicKey

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        key = self.public_key
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                if len(signature) != 64:
                    return False
                der = encode_dss_signature(
                    int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
                )
                key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
            elif isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, signing_input)
            else:
                key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True


def _json_segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


@dataclass(frozen=True)
class ParsedJWS:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def jws_parse(token: str) -> ParsedJWS:
    """Split and decode a compact JWS without trusting anything in it yet."""
    if not isinstance(token, str) or len(token) > MAX_JWS_LENGTH or not token.isascii():
        raise InvalidJWS("not a compact JWS")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidJWS("not a compact JWS")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
    # ValueError covers JSONDecodeError, bad UTF-8 and integers beyond the
    # interpreter's digit limit; deep nesting raises RecursionError.
    except (ValueError, RecursionError) as exc:
        raise InvalidJWS("not JSON") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidJWS("not a JSON object")
    return ParsedJWS(
        header=header,
        claims=claims,
        signing_input=f"{parts[0]}.{parts[1]}".encode("ascii"),
        signature=b64url_decode(parts[2]),
    )


def jws_verify(parsed: ParsedJWS, verifiers: dict[str, Verifier]) -> Verifier:
    """Check the signature with the key its ``kid`` names, in that key's own algorithm.

    The header's ``alg`` must equal the key's algorithm: ``none`` and HMAC
    never match any of our keys, so they never verify.
    """
    kid, alg = parsed.header.get("kid"), parsed.header.get("alg")
    verifier = verifiers.get(kid) if isinstance(kid, str) else None
    if verifier is None or alg != verifier.algorithm:
        raise InvalidJWS("unknown key or algorithm")
    if not verifier.verify(parsed.signing_input, parsed.signature):
        raise InvalidJWS("bad signature")
    return verifier
