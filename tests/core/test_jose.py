"""core.jose: the JOSE primitives of every app, and the audit verifier's copy agreeing."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from audit import chain
from core import jose

BYTES = [b"", b"\x00", b"\xff", b"\xfb\xff", b"ab", b"abc", bytes(range(256)), b"\xff" * 33]
# Encodes to "AAAX": a trailing X must survive the padding strip.
BYTES.append(b"\x00\x00\x17")


@pytest.mark.parametrize("data", BYTES)
def test_chain_base64url_agrees_with_core(data):
    assert chain.b64url(data) == jose.b64url(data)
    assert "=" not in jose.b64url(data)
    assert chain.b64url_decode(jose.b64url(data)) == data
    assert jose.b64url_decode(chain.b64url(data)) == data


@pytest.mark.parametrize("value", ["YR", "YWJ", "_-9", "AAZ", "YQ==", "YW+j", "YW/j"])
def test_chain_and_core_refuse_the_same_other_spellings(value):
    # Non-zero trailing bits, padding, the standard alphabet: bytes both would read,
    # spelled otherwise than b64url writes them.
    with pytest.raises(ValueError, match=r"^not base64url$"):
        chain.b64url_decode(value)
    with pytest.raises(ValueError, match=r"^not base64url$"):
        jose.b64url_decode(value)


def _keys():
    return [
        ed25519.Ed25519PrivateKey.from_private_bytes(b"\x01" * 32).public_key(),
        ed25519.Ed25519PrivateKey.generate().public_key(),
        ec.derive_private_key(7, ec.SECP256R1()).public_key(),
        ec.generate_private_key(ec.SECP384R1()).public_key(),
        rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(),
    ]


@pytest.mark.parametrize("public_key", _keys(), ids=["ed-fixed", "ed", "p256", "p384", "rsa"])
def test_chain_thumbprint_agrees_with_core(public_key):
    jwk = jose.public_jwk(public_key)
    assert chain.jwk_thumbprint(jwk) == jose.jwk_thumbprint(jwk)
    # Members beyond the required ones do not change the thumbprint (RFC 7638 3.2).
    assert jose.jwk_thumbprint({**jwk, "use": "sig", "alg": "x"}) == jose.jwk_thumbprint(jwk)


def test_thumbprint_of_rfc7638_example():
    # RFC 7638 section 3.1.
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tS"
        "oc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0"
        "_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jose.jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert chain.jwk_thumbprint(jwk) == jose.jwk_thumbprint(jwk)


@pytest.mark.parametrize("value", ["a+b", "a/b", "ab=", "é", "a b", "a\n", "A", "AAAAA", 3, None])
def test_b64url_decode_is_strict(value):
    with pytest.raises(ValueError, match=r"^not base64url$"):
        jose.b64url_decode(value)


ALGORITHM_KEYS = {
    jose.ES256: lambda: ec.generate_private_key(ec.SECP256R1()),
    jose.ES384: lambda: ec.generate_private_key(ec.SECP384R1()),
    jose.EDDSA: ed25519.Ed25519PrivateKey.generate,
    jose.PS256: lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    jose.RS256: lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
}


@pytest.mark.parametrize("algorithm", jose.ALGORITHMS)
def test_each_allowed_algorithm_signs_and_verifies_through_a_public_jwk(algorithm):
    private = ALGORITHM_KEYS[algorithm]()
    jwk = jose.public_jwk(private.public_key())
    verifier = jose.verifier_from_jwk(jwk, algorithm=algorithm)
    assert verifier.kid == jose.jwk_thumbprint(jwk)
    assert jose.public_jwk(jose.public_key_from_jwk(jwk)) == jwk
    token = jose.Signer(kid=verifier.kid, algorithm=algorithm, private_key=private).sign(
        claims={"sub": "m"}, typ="JWT"
    )
    parsed = jose.jws_parse(token)
    assert parsed.header == {"alg": algorithm, "kid": verifier.kid, "typ": "JWT"}
    assert jose.jws_verify(parsed, {verifier.kid: verifier}) is verifier
    # The same key under another algorithm name never verifies (algorithm confusion).
    for other in jose.ALGORITHMS:
        if other != algorithm:
            confused = jose.Verifier(
                kid=verifier.kid, algorithm=other, public_key=verifier.public_key
            )
            assert confused.verify(parsed.signing_input, parsed.signature) is False


@pytest.mark.parametrize("algorithm", ["none", "HS256", "RS512", "ES512", ""])
def test_algorithms_outside_the_allow_list_are_refused(algorithm):
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = jose.public_jwk(private.public_key())
    with pytest.raises(jose.InvalidJWK, match="not allowed"):
        jose.verifier_from_jwk(jwk, algorithm=algorithm)
    with pytest.raises(ValueError, match="does not sign"):
        jose.Signer(kid="k", algorithm=algorithm, private_key=private)
    verifier = jose.Verifier(kid="k", algorithm=algorithm, public_key=private.public_key())
    assert verifier.verify(b"a.b", b"\x00" * 64) is False


def test_a_key_that_does_not_fit_its_algorithm_is_refused():
    jwk = jose.public_jwk(ec.generate_private_key(ec.SECP384R1()).public_key())
    with pytest.raises(jose.InvalidJWK, match="does not fit ES256"):
        jose.verifier_from_jwk(jwk, algorithm=jose.ES256)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (refused)
    with pytest.raises(jose.InvalidJWK, match="at least 2048"):
        jose.public_key_from_jwk(jose.public_jwk(small.public_key()))
    with pytest.raises(ValueError, match="does not sign"):
        jose.Signer(kid="k", algorithm=jose.RS256, private_key=small)


P256 = jose.public_jwk(ec.derive_private_key(7, ec.SECP256R1()).public_key())
PRIVATE = "a private or symmetric JWK: register the public key only"


@pytest.mark.parametrize(
    ("jwk", "message"),
    [
        ({"kty": "oct", "k": "c2VjcmV0"}, PRIVATE),
        ({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA"}, PRIVATE),
        ({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}, "unsupported curve"),
        ({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, "EC coordinates of the wrong length"),
        # One coordinate of the right length is not enough.
        ({**P256, "y": "AA"}, "EC coordinates of the wrong length"),
        ({**P256, "x": "AA"}, "EC coordinates of the wrong length"),
        # A missing coordinate is one of no bytes, not an unreadable one.
        ({"kty": "EC", "crv": "P-256", "y": P256["y"]}, "EC coordinates of the wrong length"),
        ({"kty": "EC", "crv": "P-256", "x": P256["x"]}, "EC coordinates of the wrong length"),
        ({"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43}, "not a valid public key"),
        ({"kty": "OKP", "crv": "X25519", "x": "AA"}, "unsupported curve"),
        ({"kty": "OKP", "crv": "Ed25519", "x": "AA"}, "not a valid public key"),
        ({"kty": "RSA", "n": "", "e": "AQAB"}, "missing key member"),
        ({"kty": "RSA", "n": "a+b", "e": "AQAB"}, "key member is not base64url"),
        ({"kty": "XYZ"}, "unsupported key type"),
        (["not", "an", "object"], "a JWK is a JSON object"),
    ],
)
def test_malformed_jwks_are_refused_clearly(jwk, message):
    with pytest.raises(jose.InvalidJWK) as refused:
        jose.public_key_from_jwk(jwk)

    assert str(refused.value) == message


RSA_JWK = jose.public_jwk(
    rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
)


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "k"])
def test_every_private_member_is_refused(member):
    """A registered JWK with any private part is a key about to leak, not a public key."""
    with pytest.raises(jose.InvalidJWK) as refused:
        jose.public_key_from_jwk({**RSA_JWK, member: "AQAB"})

    assert str(refused.value) == PRIVATE
    assert jose.public_jwk(jose.public_key_from_jwk(RSA_JWK)) == RSA_JWK


def test_ps256_uses_a_salt_as_long_as_the_hash():
    """RFC 7518 section 3.5: another implementation's PS256 signatures verify, ours verify there."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rfc_pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    token = jose.Signer(kid="k", algorithm=jose.PS256, private_key=private).sign(
        claims={"sub": "m"}, typ="JWT"
    )
    parsed = jose.jws_parse(token)

    private.public_key().verify(parsed.signature, parsed.signing_input, rfc_pss, hashes.SHA256())
    theirs = private.sign(b"a.b", rfc_pss, hashes.SHA256())
    verifier = jose.Verifier(kid="k", algorithm=jose.PS256, public_key=private.public_key())
    assert verifier.verify(b"a.b", theirs) is True


def _segment(value) -> str:
    return jose.b64url(json.dumps(value).encode())


def test_a_header_naming_another_algorithm_than_the_keys_never_verifies():
    """Algorithm confusion: the kid names an ES256 key, the header says ES384, and the
    signature is the ES256 key's own over exactly that header."""
    private = ec.derive_private_key(7, ec.SECP256R1())
    verifier = jose.verifier_from_jwk(jose.public_jwk(private.public_key()), algorithm=jose.ES256)
    signer = jose.Signer(kid=verifier.kid, algorithm=jose.ES256, private_key=private)
    for alg in (jose.ES384, "none", "HS256", None):
        signing_input = f"{_segment({'alg': alg, 'kid': verifier.kid})}.{_segment({'a': 1})}"
        signature = jose.b64url(signer._signature(signing_input.encode()))
        parsed = jose.jws_parse(f"{signing_input}.{signature}")
        assert parsed.claims == {"a": 1}

        with pytest.raises(jose.InvalidJWS, match=r"^unknown key or algorithm$"):
            jose.jws_verify(parsed, {verifier.kid: verifier})


@pytest.mark.parametrize("kid", [["k"], {"k": 1}, 1, None])
def test_a_kid_that_is_not_a_string_names_no_key(kid):
    parsed = jose.jws_parse(f"{_segment({'alg': 'ES256', 'kid': kid})}.{_segment({})}.AA")

    with pytest.raises(jose.InvalidJWS, match=r"^unknown key or algorithm$"):
        jose.jws_verify(parsed, {"k": None})


@pytest.mark.parametrize("algorithm", ["HS256", "none", "", "es256"])
def test_no_key_fits_an_algorithm_outside_the_allow_list(algorithm):
    for make in ALGORITHM_KEYS.values():
        key = make()
        assert jose.key_fits(key, algorithm) is False
        assert jose.key_fits(key.public_key(), algorithm) is False


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "not a compact JWS"),
        (b"a.b.c", "not a compact JWS"),
        ("é.a.b", "not a compact JWS"),
        ("a.b", "not a compact JWS"),
        ("a.b.c.d", "not a compact JWS"),
        ("a..b", "not a compact JWS"),
        (".a.b", "not a compact JWS"),
        ("a.b.", "not a compact JWS"),
        ("a$.e30.AA", "not base64url"),
        ("e30.e30.A$", "not base64url"),
        ("bm8.e30.AA", "not JSON"),
        ("e30.W10.AA", "not a JSON object"),
        ("W10.e30.AA", "not a JSON object"),
    ],
)
def test_malformed_compact_jws_are_refused_unparsed(token, message):
    with pytest.raises(jose.InvalidJWS, match=f"^{message}$"):
        jose.jws_parse(token)


def test_a_jws_of_exactly_the_maximum_length_is_parsed_and_one_more_is_not():
    head = f"{_segment({'alg': 'ES256'})}."
    claims = {"pad": "x" * jose.MAX_JWS_LENGTH}
    while len(head + _segment(claims) + ".AA") > jose.MAX_JWS_LENGTH:
        claims["pad"] = claims["pad"][:-1]
    token = head + _segment(claims) + ".AA"
    token += "A" * (jose.MAX_JWS_LENGTH - len(token))
    assert len(token) == jose.MAX_JWS_LENGTH and len(token.split(".")[2]) % 4 != 1

    assert jose.jws_parse(token).claims == claims
    with pytest.raises(jose.InvalidJWS, match=r"^not a compact JWS$"):
        jose.jws_parse(token + "A")


def test_b64url_keeps_a_trailing_x():
    assert jose.b64url(b"\x00\x00\x17") == "AAAX"


@pytest.mark.parametrize("algorithm", [jose.ES256, jose.ES384])
def test_an_ecdsa_signature_of_another_length_never_verifies(algorithm):
    private = ALGORITHM_KEYS[algorithm]()
    verifier = jose.Verifier(kid="k", algorithm=algorithm, public_key=private.public_key())
    signer = jose.Signer(kid="k", algorithm=algorithm, private_key=private)
    signature = signer._signature(b"a.b")
    assert len(signature) == {jose.ES256: 64, jose.ES384: 96}[algorithm]
    assert verifier.verify(b"a.b", signature) is True

    for length in (0, 1, len(signature) - 1, len(signature) + 1, 2 * len(signature)):
        assert verifier.verify(b"a.b", (signature * 2)[:length]) is False


def _ec_key_with_a_short_coordinate(coordinate: str):
    """A P-256 key whose x (or y) has a leading zero byte: the JWK still spells 32 bytes."""
    for scalar in range(1, 100_000):
        public = ec.derive_private_key(scalar, ec.SECP256R1()).public_key()
        if getattr(public.public_numbers(), coordinate) < 1 << 248:
            return public
    raise AssertionError("no such key")


@pytest.mark.parametrize("coordinate", ["x", "y"])
def test_ec_coordinates_are_written_at_the_curves_full_size(coordinate):
    public = _ec_key_with_a_short_coordinate(coordinate)

    jwk = jose.public_jwk(public)

    assert len(jose.b64url_decode(jwk["x"])) == len(jose.b64url_decode(jwk["y"])) == 32
    assert jose.public_jwk(jose.public_key_from_jwk(jwk)) == jwk


def test_public_jwk_refuses_keys_it_cannot_publish():
    from cryptography.hazmat.primitives.asymmetric import x25519

    with pytest.raises(ValueError, match=r"^unsupported curve$"):
        jose.public_jwk(ec.generate_private_key(ec.SECP521R1()).public_key())
    with pytest.raises(ValueError, match=r"^unsupported key type$"):
        jose.public_jwk(x25519.X25519PrivateKey.generate().public_key())
