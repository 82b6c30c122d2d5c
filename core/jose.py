"""JOSE with ``cryptography`` directly: base64url, JWKs, RFC 7638 thumbprints, compact JWS.

Why not a JOSE library on the hot path: PyJWT re-parses a PEM key on every
call and accepts whatever algorithm the caller passes; here each key object
is parsed once and bound to exactly one algorithm from ``ALGORITHMS``, so a
token header can never choose how it is verified (no ``alg: none``, no HS256
keyed with a public key).

The one implementation of these primitives for the apps. ``audit.chain`` keeps
its own base64url and thumbprint because the offline verifier loads it by path
with only the standard library; a test checks that the two agree.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey

# A compact JWS of ours is well under this; anything longer is refused unparsed.
MAX_JWS_LENGTH = 8192

# The algorithm allow-list (RFC 7518 names): asymmetric only, never ``none`` or HMAC.
ES256 = "ES256"
ES384 = "ES384"
EDDSA = "EdDSA"
PS256 = "PS256"
RS256 = "RS256"
ALGORITHMS = (ES256, ES384, EDDSA, PS256, RS256)
# An RSA key shorter than this is refused for signing and verifying (NIST SP 800-131A).
RSA_MIN_KEY_BITS = 2048

# Curve and hash of each ECDSA algorithm; the signature is r || s of the curve's size.
_EC = {
    ES256: (ec.SECP256R1, hashes.SHA256, 32, "P-256"),
    ES384: (ec.SECP384R1, hashes.SHA384, 48, "P-384"),
}
_CURVE_NAMES = {name: (curve, size) for curve, _, size, name in _EC.values()}


class InvalidJWS(ValueError):
    """A compact JWS that is malformed, not ours, or whose signature does not verify."""


class InvalidJWK(ValueError):
    """A JWK that is malformed, of an unsupported type, or does not fit its algorithm."""


# --- base64url (RFC 4648 section 5, no padding: RFC 7515 section 2) ---------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_TO_URL = bytes.maketrans(b"+/", b"-_")


def b64url_decode(value: str) -> bytes:
    """Strict: only the unpadded URL-safe spelling ``b64url`` writes; ``ValueError`` otherwise.

    One spelling per value (RFC 7515 section 2, RFC 4648 section 3.5): padding,
    ``+``/``/``, stray characters or non-zero trailing bits decode to the same
    bytes, so a signature or key member could be re-spelled and still verify.
    ``audit.chain`` keeps the same rule for the offline verifier.
    """
    if not isinstance(value, str) or not _B64URL.fullmatch(value):
        raise ValueError("not base64url")
    # binascii directly, not base64.b64decode(..., validate=True), which checks the
    # alphabet with a regex of its own and translates through Python code: every
    # assertion costs three of these.
    spelled = value.encode("ascii")
    try:
        data = binascii.a2b_base64(
            spelled.translate(_TO_STANDARD) + b"=" * (-len(spelled) % 4), strict_mode=True
        )
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc
    # The unused low bits of the last character must be zero: re-spelled, the same value.
    if binascii.b2a_base64(data, newline=False).translate(_TO_URL).rstrip(b"=") != spelled:
        raise ValueError("not base64url")
    return data


def _int_b64(value: int, length: int | None = None) -> str:
    length = length or (value.bit_length() + 7) // 8
    return b64url(value.to_bytes(length, "big"))


def _b64_int(value: Any) -> int:
    if not isinstance(value, str) or not value:
        raise InvalidJWK("missing key member")
    try:
        return int.from_bytes(b64url_decode(value), "big")
    except ValueError as exc:
        raise InvalidJWK("key member is not base64url") from exc


# --- JWK (RFC 7517) and thumbprints (RFC 7638) ------------------------------

# RFC 7638 section 3.2: the members that identify a key, per key type.
THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}


def jwk_thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638: SHA-256 of the required members, sorted, without whitespace."""
    required = {name: jwk[name] for name in THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def public_jwk(public_key: PublicKey) -> dict[str, str]:
    """The public JWK members, without ``kid``/``alg``/``use`` (RFC 7517 section 4)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        for name, (curve, size) in _CURVE_NAMES.items():
            if isinstance(public_key.curve, curve):
                numbers = public_key.public_numbers()
                return {
                    "kty": "EC",
                    "crv": name,
                    "x": _int_b64(numbers.x, size),
                    "y": _int_b64(numbers.y, size),
                }
        raise ValueError("unsupported curve")
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        return {"kty": "RSA", "n": _int_b64(numbers.n), "e": _int_b64(numbers.e)}
    raise ValueError("unsupported key type")


def public_key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """Parse a public JWK (EC P-256/P-384, OKP Ed25519, RSA); private members are refused.

    A JWK carrying ``d`` (or RSA's primes) is a private key someone is about to
    leak by registering it: refuse it rather than silently drop the secret part.
    """
    if not isinstance(jwk, Mapping):
        raise InvalidJWK("a JWK is a JSON object")
    if any(name in jwk for name in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise InvalidJWK("a private or symmetric JWK: register the public key only")
    kty = jwk.get("kty")
    try:
        if kty == "EC":
            curve, size = _CURVE_NAMES.get(jwk.get("crv"), (None, 0))
            if curve is None:
                raise InvalidJWK("unsupported curve")
            x, y = b64url_decode(jwk.get("x", "")), b64url_decode(jwk.get("y", ""))
            if len(x) != size or len(y) != size:
                raise InvalidJWK("EC coordinates of the wrong length")
            return ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve()
            ).public_key()
        if kty == "OKP":
            if jwk.get("crv") != "Ed25519":
                raise InvalidJWK("unsupported curve")
            return ed25519.Ed25519PublicKey.from_public_bytes(b64url_decode(jwk.get("x", "")))
        if kty == "RSA":
            key = rsa.RSAPublicNumbers(_b64_int(jwk.get("e")), _b64_int(jwk.get("n"))).public_key()
            if key.key_size < RSA_MIN_KEY_BITS:
                raise InvalidJWK(f"RSA keys of at least {RSA_MIN_KEY_BITS} bits")
            return key
    except InvalidJWK:
        raise
    except (ValueError, TypeError) as exc:
        # Off-curve points, wrong lengths, bad base64url: one clear refusal.
        raise InvalidJWK("not a valid public key") from exc
    raise InvalidJWK("unsupported key type")


def key_fits(key: PrivateKey | PublicKey, algorithm: str) -> bool:
    """Whether a key is of the one type (curve, size) its algorithm uses."""
    if algorithm in _EC:
        curve = _EC[algorithm][0]
        return isinstance(
            key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey
        ) and isinstance(key.curve, curve)
    if algorithm == EDDSA:
        return isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey)
    if algorithm in (RS256, PS256):
        return isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) and (
            key.key_size >= RSA_MIN_KEY_BITS
        )
    return False


# --- compact JWS (RFC 7515) -------------------------------------------------


def _json_segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


@dataclass(frozen=True)
class Signer:
    """A private key, parsed once, bound to its kid and one algorithm of the allow-list."""

    kid: str
    algorithm: str
    private_key: PrivateKey

    def __post_init__(self) -> None:
        # Checked once here rather than per token: the hot path signs thousands a second.
        if self.algorithm not in ALGORITHMS or not key_fits(self.private_key, self.algorithm):
            raise ValueError(f"key does not sign {self.algorithm!r}")

    def sign(self, *, claims: dict[str, Any], typ: str) -> str:
        header = {"alg": self.algorithm, "kid": self.kid, "typ": typ}
        signing_input = (_json_segment(header) + "." + _json_segment(claims)).encode("ascii")
        return signing_input.decode("ascii") + "." + b64url(self._signature(signing_input))

    def _signature(self, data: bytes) -> bytes:
        key, algorithm = self.private_key, self.algorithm
        if algorithm in _EC:
            _, hash_type, size, _ = _EC[algorithm]
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hash_type())))
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if algorithm == EDDSA:
            return key.sign(data)
        if algorithm == PS256:
            return key.sign(data, _pss(), hashes.SHA256())
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _pss() -> padding.PSS:
    # RFC 7518 section 3.5: MGF1 with the same hash, salt as long as the hash.
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


@dataclass(frozen=True)
class Verifier:
    """A public key, parsed once, that verifies exactly one algorithm of the allow-list."""

    kid: str
    algorithm: str
    public_key: PublicKey

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        key, algorithm = self.public_key, self.algorithm
        if algorithm not in ALGORITHMS or not key_fits(key, algorithm):
            return False
        try:
            if algorithm in _EC:
                _, hash_type, size, _ = _EC[algorithm]
                if len(signature) != 2 * size:
                    return False
                der = encode_dss_signature(
                    int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
                )
                key.verify(der, signing_input, ec.ECDSA(hash_type()))
            elif algorithm == EDDSA:
                key.verify(signature, signing_input)
            elif algorithm == PS256:
                key.verify(signature, signing_input, _pss(), hashes.SHA256())
            else:
                key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True


def verifier_from_jwk(
    jwk: Mapping[str, Any], *, algorithm: str, kid: str | None = None
) -> Verifier:
    """A ``Verifier`` for a registered public JWK, refused unless it fits an allowed algorithm."""
    if algorithm not in ALGORITHMS:
        raise InvalidJWK(f"algorithm {algorithm!r} is not allowed")
    key = public_key_from_jwk(jwk)
    if not key_fits(key, algorithm):
        raise InvalidJWK(f"the key does not fit {algorithm}")
    return Verifier(kid=kid or jwk_thumbprint(public_jwk(key)), algorithm=algorithm, public_key=key)


@dataclass(frozen=True)
class ParsedJWS:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _segment(value: str) -> bytes:
    try:
        return b64url_decode(value)
    except ValueError as exc:
        raise InvalidJWS("not base64url") from exc


def jws_parse(token: str) -> ParsedJWS:
    """Split and decode a compact JWS without trusting anything in it yet."""
    if not isinstance(token, str) or len(token) > MAX_JWS_LENGTH or not token.isascii():
        raise InvalidJWS("not a compact JWS")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidJWS("not a compact JWS")
    try:
        header = json.loads(_segment(parts[0]))
        claims = json.loads(_segment(parts[1]))
    except InvalidJWS:
        raise
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
        signature=_segment(parts[2]),
    )


def jws_verify(parsed: ParsedJWS, verifiers: Mapping[str, Verifier]) -> Verifier:
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
