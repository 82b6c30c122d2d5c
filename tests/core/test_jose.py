"""core.jose: the JOSE primitives of every app, and the audit verifier's copy agreeing."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from audit import chain
from core import jose

BYTES = [b"", b"\x00", b"\xff", b"\xfb\xff", b"ab", b"abc", bytes(range(256)), b"\xff" * 33]


@pytest.mark.parametrize("data", BYTES)
def test_chain_base64url_agrees_with_core(data):
    assert chain.b64url(data) == jose.b64url(data)
    assert "=" not in jose.b64url(data)
    assert chain.b64url_decode(jose.b64url(data)) == data
    assert jose.b64url_decode(chain.b64url(data)) == data


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


@pytest.mark.parametrize("value", ["a+b", "a/b", "ab=", "é", "a b", "a\n"])
def test_b64url_decode_is_strict(value):
    with pytest.raises(ValueError, match="not base64url"):
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
