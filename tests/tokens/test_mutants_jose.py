"""Compact JWS parsing and verification: checks pinned by the mutation run (`make mutate`).

Each refusal is asserted with its own message, so a test proves which check
refused the input rather than some later one happening to fail. (EdDSA and RS256
signatures are verified end to end in the token verification tests.)
"""

import base64
import json

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519

from core import jose
from tokens import key_material

KID = "test-kid"


@pytest.fixture(scope="module")
def es256():
    private_key = key_material.private_key_generate("ES256")
    signer = jose.Signer(kid=KID, algorithm="ES256", private_key=private_key)
    verifier = jose.Verifier(kid=KID, algorithm="ES256", public_key=private_key.public_key())
    return signer, verifier


def _token(signer, claims=None) -> str:
    return signer.sign(claims=claims or {"sub": "machine"}, typ="at+jwt")


def _segment(value) -> str:
    return jose.b64url(json.dumps(value).encode())


def test_a_valid_es256_token_parses_and_verifies(es256):
    signer, verifier = es256
    parsed = jose.jws_parse(_token(signer))

    assert jose.jws_verify(parsed, {KID: verifier}) is verifier
    assert parsed.header == {"alg": "ES256", "kid": KID, "typ": "at+jwt"}
    assert parsed.claims == {"sub": "machine"}


@pytest.mark.parametrize("extra", [b"\x00", b"\x00" * 64])
def test_an_es256_signature_of_the_wrong_length_never_verifies(es256, extra):
    signer, verifier = es256
    header, claims, signature = _token(signer).split(".")
    raw = jose.b64url_decode(signature)
    longer = f"{header}.{claims}.{jose.b64url(raw + extra)}"
    shorter = f"{header}.{claims}.{jose.b64url(raw[:-1])}"

    for token in (longer, shorter):
        parsed = jose.jws_parse(token)
        assert verifier.verify(parsed.signing_input, parsed.signature) is False
        with pytest.raises(jose.InvalidJWS, match=r"^bad signature$"):
            jose.jws_verify(parsed, {KID: verifier})


def _compact(value) -> str:
    return jose.b64url(json.dumps(value, separators=(",", ":")).encode())


def _token_of_length(es256, length: int) -> tuple[str, dict[str, jose.Verifier]]:
    """A correctly signed token exactly ``length`` characters long, and its verifiers.

    A base64url segment is never 4k+1 characters long, so the kid's length is
    varied as well as the claims'.
    """
    signer, verifier = es256
    signature = 86  # an ES256 signature is 64 bytes, 86 base64url characters
    for kid in ("k", "k1", "k12"):
        header = _compact({"alg": "ES256", "kid": kid, "typ": "at+jwt"})
        for size in range(length):
            claims = {"pad": "x" * size}
            if len(header) + len(_compact(claims)) + 2 + signature == length:
                key_signer = jose.Signer(kid=kid, algorithm="ES256", private_key=signer.private_key)
                key_verifier = jose.Verifier(
                    kid=kid, algorithm="ES256", public_key=verifier.public_key
                )
                token = _token(key_signer, claims)
                assert len(token) == length
                return token, {kid: key_verifier}
    raise AssertionError(f"no token of length {length}")


def test_the_length_bound_admits_exactly_the_maximum(es256):
    at_limit, verifiers = _token_of_length(es256, jose.MAX_JWS_LENGTH)
    over, _ = _token_of_length(es256, jose.MAX_JWS_LENGTH + 1)

    assert jose.jws_verify(jose.jws_parse(at_limit), verifiers) is verifiers[next(iter(verifiers))]
    with pytest.raises(jose.InvalidJWS, match=r"^not a compact JWS$"):
        jose.jws_parse(over)


@pytest.mark.parametrize(
    "token",
    [
        None,
        b"a.b.c",
        "é.é.é",  # short, but not ASCII
        "a.b",
        "a.b.c.d",
        "a..c",
        ".b.c",
        "a.b.",
    ],
)
def test_what_is_not_a_compact_jws_is_refused_before_decoding(token):
    with pytest.raises(jose.InvalidJWS, match=r"^not a compact JWS$"):
        jose.jws_parse(token)


def test_segments_that_are_not_json_objects_are_refused_as_such():
    not_json = jose.b64url(b"{not json")
    array = _segment(["alg", "ES256"])
    obj = _segment({"alg": "ES256"})

    with pytest.raises(jose.InvalidJWS, match=r"^not JSON$"):
        jose.jws_parse(f"{not_json}.{obj}.c2ln")
    with pytest.raises(jose.InvalidJWS, match=r"^not JSON$"):
        jose.jws_parse(f"{obj}.{not_json}.c2ln")
    with pytest.raises(jose.InvalidJWS, match=r"^not a JSON object$"):
        jose.jws_parse(f"{array}.{obj}.c2ln")
    with pytest.raises(jose.InvalidJWS, match=r"^not a JSON object$"):
        jose.jws_parse(f"{obj}.{array}.c2ln")


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "ES256", "kid": [KID]},  # unhashable: must not raise TypeError
        {"alg": "ES256", "kid": {"k": KID}},
        {"alg": "ES256", "kid": 7},
        {"alg": "ES256"},
        {"alg": "ES256", "kid": "another-kid"},
        {"alg": "EdDSA", "kid": KID},  # the key verifies ES256 only
        {"alg": "none", "kid": KID},
        {"kid": KID},
    ],
)
def test_a_header_naming_no_key_of_ours_in_its_algorithm_is_refused(es256, header):
    signer, verifier = es256
    _, claims, signature = _token(signer).split(".")
    parsed = jose.jws_parse(f"{_segment(header)}.{claims}.{signature}")

    with pytest.raises(jose.InvalidJWS, match=r"^unknown key or algorithm$"):
        jose.jws_verify(parsed, {KID: verifier})


# --- base64url, JWKs and key wrapping ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "decoded"), [("YWJj", b"abc"), ("YQ", b"a"), ("_-8", b"\xff\xef")]
)
def test_b64url_decode_reads_unpadded_base64url(value, decoded):
    assert jose.b64url_decode(value) == decoded


@pytest.mark.parametrize(
    "value", ["YW*j", "YW Jj", "YW=j", "é", "YWJj\n", "YW+j", "YW/j", "YQ==", "YR", "YWJ", "_-9"]
)
def test_b64url_decode_refuses_anything_outside_the_alphabet(value):
    # Skipping stray characters, or reading base64's own alphabet or padding, would let
    # many strings decode to one token: one spelling per value.
    with pytest.raises(ValueError, match=r"^not base64url$"):
        jose.b64url_decode(value)


def test_a_signature_segment_outside_the_alphabet_is_refused(es256):
    signer, _ = es256
    header, claims, signature = _token(signer).split(".")

    with pytest.raises(jose.InvalidJWS, match=r"^not base64url$"):
        jose.jws_parse(f"{header}.{claims}.{signature[:10]}*{signature[10:]}")


def test_a_signature_re_spelled_with_other_trailing_bits_is_refused(es256):
    # An ES256 signature is 64 bytes: 86 characters, the last one with 4 unused bits.
    # Decoding alone ignores them, so 15 other spellings would verify as the same token.
    signer, verifier = es256
    token = _token(signer)
    header, claims, signature = token.split(".")
    assert jose.jws_verify(jose.jws_parse(token), {KID: verifier}) is verifier
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    assert last & 0b1111 == 0
    for low_bits in range(1, 16):
        re_spelled = signature[:-1] + alphabet[last | low_bits]
        assert base64.urlsafe_b64decode(re_spelled + "==") == base64.urlsafe_b64decode(
            signature + "=="
        )
        with pytest.raises(jose.InvalidJWS, match=r"^not base64url$"):
            jose.jws_parse(f"{header}.{claims}.{re_spelled}")


def test_tokens_are_compact_json():
    signer = jose.Signer(
        kid=KID, algorithm="EdDSA", private_key=key_material.private_key_generate("EdDSA")
    )
    header, claims, _ = signer.sign(claims={"a": 1, "b": [1, 2]}, typ="at+jwt").split(".")

    assert jose.b64url_decode(header) == b'{"alg":"EdDSA","kid":"test-kid","typ":"at+jwt"}'
    assert jose.b64url_decode(claims) == b'{"a":1,"b":[1,2]}'


def _ec_key_with_a_short(coordinate: str):
    """A P-256 key whose x (or y) has a leading zero byte (about 1 key in 256)."""
    for d in range(1, 5000):
        key = ec.derive_private_key(d, ec.SECP256R1())
        if getattr(key.public_key().public_numbers(), coordinate) < 2**248:
            return key
    raise AssertionError("no such key")


@pytest.mark.parametrize("coordinate", ["x", "y"])
def test_ec_coordinates_are_always_32_bytes(coordinate):
    # RFC 7518 6.2.1.2: the full coordinate size, leading zeros kept (else the kid changes).
    public_key = _ec_key_with_a_short(coordinate).public_key()

    jwk = jose.public_jwk(public_key)

    assert [len(jose.b64url_decode(jwk[c])) for c in ("x", "y")] == [32, 32]
    parsed = jose.public_key_from_jwk(jwk)
    assert jose.key_fits(parsed, "ES256")
    assert parsed.public_numbers() == public_key.public_numbers()


@pytest.fixture(scope="module")
def rsa2048():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_rsa_members_have_no_leading_zero_and_2048_bits_are_enough(rsa2048):
    # RFC 7518 6.3.1: n and e as unsigned big-endian integers without leading zeros.
    public_key = rsa2048.public_key()

    jwk = jose.public_jwk(public_key)

    assert jwk["e"] == "AQAB"
    assert len(jose.b64url_decode(jwk["n"])) == 256
    parsed = jose.public_key_from_jwk(jwk)
    assert jose.key_fits(parsed, "RS256")
    assert parsed.public_numbers() == public_key.public_numbers()


def test_an_rsa_key_under_2048_bits_is_refused():
    short = {"kty": "RSA", "n": jose.b64url((2**2046 + 1).to_bytes(256, "big")), "e": "AQAB"}

    with pytest.raises(jose.InvalidJWK, match=r"^RSA keys of at least 2048 bits$"):
        jose.public_key_from_jwk(short)


def test_a_jwk_must_fit_its_algorithm(rsa2048):
    ec_jwk = jose.public_jwk(key_material.private_key_generate("ES256").public_key())
    ed_jwk = jose.public_jwk(key_material.private_key_generate("EdDSA").public_key())
    rsa_jwk = jose.public_jwk(rsa2048.public_key())
    p384 = {**ec_jwk, "crv": "P-384"}
    mismatched = [
        (ec_jwk, "EdDSA"),
        (ec_jwk, "RS256"),
        (p384, "ES256"),
        (ed_jwk, "ES256"),
        (ed_jwk, "RS256"),
        ({**ed_jwk, "crv": "Ed448"}, "EdDSA"),
        (rsa_jwk, "ES256"),
        (rsa_jwk, "EdDSA"),
        (ec_jwk, "HS256"),
    ]

    assert [_usable(jwk, algorithm) for jwk, algorithm in mismatched] == [False] * 9
    assert [_usable(ec_jwk, "ES256"), _usable(ed_jwk, "EdDSA"), _usable(rsa_jwk, "RS256")] == [
        True,
        True,
        True,
    ]


def _usable(jwk, algorithm) -> bool:
    """Whether a JWK parses and fits the algorithm, as every verifier of ours asks."""
    try:
        key = jose.public_key_from_jwk(jwk)
    except jose.InvalidJWK:
        return False
    return jose.key_fits(key, algorithm)


def test_unsupported_key_types_and_algorithms_are_named():
    with pytest.raises(ValueError, match=r"^unsupported key type$"):
        jose.public_jwk(x25519.X25519PrivateKey.generate().public_key())
    with pytest.raises(ValueError, match=r"^unsupported algorithm 'HS256'$"):
        key_material.private_key_generate("HS256")


def test_unwrapping_a_key_of_another_type_is_refused():
    kek = b"k" * 32
    wrapped = key_material.private_key_wrap(
        x25519.X25519PrivateKey.generate(), kek=kek, kid=KID, algorithm="EdDSA"
    )

    with pytest.raises(InvalidTag, match=r"^unexpected key type$"):
        key_material.private_key_unwrap(wrapped, kek=kek, kid=KID, algorithm="EdDSA")
