"""clients.federation.verification: an external token against a machine's trusts."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives import serialization
from django.core.cache import cache

from clients.client_assertion import JWT_BEARER, client_assertion_read
from clients.federation.selectors import CachedTrust
from clients.federation.verification import (
    MAX_EXTERNAL_TOKEN_LIFETIME,
    federated_assertion_verify,
)
from core import jose, remote_jwks
from core.errors import OAuthError
from tests.fixtures.issuer import GITHUB_AUDIENCE, hmac_token, unsigned_token

CONDITION = 'claims.repository == "acme/billing" && claims.ref == "refs/heads/main"'


@pytest.fixture(autouse=True)
def _fresh(settings, clean_cache):
    settings.FEDERATION_ALLOW_PRIVATE_ISSUERS = True
    cache.clear()
    remote_jwks.reset()
    yield
    remote_jwks.reset()


def _trust(issuer, **fields) -> CachedTrust:
    values = {
        "uid": "t-1",
        "issuer": issuer.url,
        "audience": GITHUB_AUDIENCE,
        "subject": "",
        "condition": CONDITION,
        "jwks": "",
        "authentic": True,
    }
    return CachedTrust(**{**values, **fields})


def _verify(token, trusts, now=None):
    assertion = client_assertion_read(
        {"client_assertion": [token], "client_assertion_type": [JWT_BEARER]}
    )
    return federated_assertion_verify(
        assertion=assertion, trusts=tuple(trusts), now=now or time.time()
    )


def test_a_github_shaped_token_passes_and_names_what_the_audit_records(oidc_issuer):
    claims = oidc_issuer.github_claims()
    verdict = _verify(oidc_issuer.mint(claims), [_trust(oidc_issuer)])

    assert verdict.reason == ""
    assert verdict.trust.uid == "t-1"
    assert verdict.details == {
        "external_iss": oidc_issuer.url,
        "external_sub": "repo:acme/billing:ref:refs/heads/main",
        "external_jti": claims["jti"],
        "trust_id": "t-1",
    }


def test_a_kubernetes_shaped_token_passes_with_a_pasted_jwks(oidc_issuer):
    trust = _trust(
        oidc_issuer,
        audience="https://portal.example",
        subject="system:serviceaccount:billing:invoicer",
        condition="",
        jwks=json.dumps(oidc_issuer.jwks()),
    )
    oidc_issuer.down = True  # nothing is fetched

    verdict = _verify(oidc_issuer.kubernetes_token(audience="https://portal.example"), [trust])

    assert verdict.reason == ""
    assert oidc_issuer.requests == []


def _reason(oidc_issuer, token, trusts=None):
    return _verify(token, trusts or [_trust(oidc_issuer)]).reason


def test_wrong_audience(oidc_issuer):
    token = oidc_issuer.github_token(audience="https://someone-else.example")
    assert _reason(oidc_issuer, token) == "wrong_audience"


def test_expired(oidc_issuer):
    claims = oidc_issuer.github_claims()
    claims["exp"] = int(time.time()) - 1
    assert _reason(oidc_issuer, oidc_issuer.mint(claims)) == "expired"


def test_expiring_too_far_ahead(oidc_issuer):
    claims = oidc_issuer.github_claims()
    claims["exp"] = int(time.time()) + MAX_EXTERNAL_TOKEN_LIFETIME + 60
    assert _reason(oidc_issuer, oidc_issuer.mint(claims)) == "exp_too_far"


@pytest.mark.parametrize("exp", [None, "soon", True])
def test_exp_missing_or_not_a_number(oidc_issuer, exp):
    claims = oidc_issuer.github_claims()
    claims["exp"] = exp
    assert _reason(oidc_issuer, oidc_issuer.mint(claims)) == "exp_missing"


def test_nbf_in_the_future(oidc_issuer):
    claims = oidc_issuer.github_claims()
    claims["nbf"] = int(time.time()) + 120
    assert _reason(oidc_issuer, oidc_issuer.mint(claims)) == "not_yet_valid"


def test_iat_in_the_future(oidc_issuer):
    claims = oidc_issuer.github_claims()
    claims["iat"] = int(time.time()) + 120
    assert _reason(oidc_issuer, oidc_issuer.mint(claims)) == "issued_in_future"


def test_wrong_issuer(oidc_issuer):
    claims = {**oidc_issuer.github_claims(), "iss": oidc_issuer.url + "/"}
    assert _reason(oidc_issuer, oidc_issuer.mint(claims)) == "no_trust_for_issuer"


def test_condition_false(oidc_issuer):
    token = oidc_issuer.github_token(ref="refs/heads/feature")
    assert _reason(oidc_issuer, token) == "condition_false"


def test_subject_mismatch(oidc_issuer):
    trust = _trust(oidc_issuer, subject="repo:acme/billing:environment:prod", condition="")
    assert _reason(oidc_issuer, oidc_issuer.github_token(), [trust]) == "subject_mismatch"


def test_unknown_kid(oidc_issuer):
    other = jose.Signer(kid="not-published", algorithm="RS256", private_key=_rsa())
    token = oidc_issuer.mint(oidc_issuer.github_claims(), signer=other)
    assert _reason(oidc_issuer, token) == "unknown_kid"


def test_a_known_kid_with_another_key_s_signature(oidc_issuer):
    forged = jose.Signer(kid=oidc_issuer.signer.kid, algorithm="RS256", private_key=_rsa())
    token = oidc_issuer.mint(oidc_issuer.github_claims(), signer=forged)
    assert _reason(oidc_issuer, token) == "bad_signature"


def _rsa():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_alg_none(oidc_issuer):
    # "header.payload." with an empty signature is not even a compact JWS we parse.
    assert _reason(oidc_issuer, unsigned_token(oidc_issuer.github_claims())) == (
        "malformed_assertion"
    )
    with_signature = unsigned_token(oidc_issuer.github_claims()) + "AA"
    assert _reason(oidc_issuer, with_signature) == "algorithm_not_allowed"


def test_hs256_keyed_with_the_issuer_public_key(oidc_issuer):
    claims = oidc_issuer.github_claims()
    for key in (oidc_issuer.public_pem(), json.dumps(oidc_issuer.jwks()["keys"][0]).encode()):
        token = hmac_token(claims, key=key, kid=oidc_issuer.signer.kid)
        assert _reason(oidc_issuer, token) == "algorithm_not_allowed"


def test_rs256_header_on_a_key_published_for_another_algorithm(oidc_issuer):
    token = oidc_issuer.mint(oidc_issuer.github_claims())
    _, rest = token.split(".", 1)
    swapped = jose.b64url(json.dumps({"alg": "PS256", "kid": oidc_issuer.signer.kid}).encode())
    # The JWKS binds the key to RS256: there is no PS256 key of that kid.
    assert _reason(oidc_issuer, f"{swapped}.{rest}") == "unknown_kid"


def test_a_replayed_token(oidc_issuer):
    token = oidc_issuer.github_token()
    assert _reason(oidc_issuer, token) == ""
    assert _reason(oidc_issuer, token) == "replayed"


def test_a_token_without_jti_is_remembered_by_its_digest(oidc_issuer):
    claims = oidc_issuer.github_claims()
    del claims["jti"]
    token = oidc_issuer.mint(claims)
    other = oidc_issuer.mint({**claims, "iat": claims["iat"] - 1})
    assert _reason(oidc_issuer, token) == ""
    assert _reason(oidc_issuer, token) == "replayed"
    assert _reason(oidc_issuer, other) == ""


@pytest.mark.parametrize("jti", ["", 5, "x" * 257])
def test_a_malformed_jti_is_refused(oidc_issuer, jti):
    claims = {**oidc_issuer.github_claims(), "jti": jti}
    assert _reason(oidc_issuer, oidc_issuer.mint(claims)) == "jti_missing"


def test_an_issuer_whose_keys_are_down(oidc_issuer):
    oidc_issuer.down = True
    assert _reason(oidc_issuer, oidc_issuer.github_token()) == "issuer_keys_unavailable:http_503"


def test_a_trust_that_is_not_authentic_admits_nothing(oidc_issuer):
    trust = _trust(oidc_issuer, authentic=False)
    assert _reason(oidc_issuer, oidc_issuer.github_token(), [trust]) == "trust_not_authentic"
    assert oidc_issuer.requests == []


def test_a_private_issuer_is_refused_unless_allowed(oidc_issuer, settings):
    settings.FEDERATION_ALLOW_PRIVATE_ISSUERS = False
    assert _reason(oidc_issuer, oidc_issuer.github_token()) == (
        "issuer_keys_unavailable:url_refused"
    )


def test_no_trusts_at_all(oidc_issuer):
    assert _verify(oidc_issuer.github_token(), []).reason == "no_trust_for_issuer"


def test_the_second_trust_of_an_issuer_is_tried(oidc_issuer):
    first = _trust(oidc_issuer, uid="t-1", condition='claims.repository == "acme/other"')
    second = _trust(oidc_issuer, uid="t-2")
    verdict = _verify(oidc_issuer.github_token(), [first, second])
    assert (verdict.reason, verdict.trust.uid) == ("", "t-2")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a",
        "a.b",
        "a.b.c",
        "....",
        "e30.e30.",
        "e30.e30.e30",
        "W10.W10.AA",  # arrays, not objects
        "x" * 10000,
        "é.é.é",
        jose.b64url(b'{"alg":"RS256"}') + "." + jose.b64url(b'{"iss": 5}') + ".AA",
        jose.b64url(b'{"alg":"RS256"}') + "." + jose.b64url(b'{"iss": ["a"]}') + ".AA",
        jose.b64url(b'{"alg":"RS256","kid":{}}') + "." + jose.b64url(b'{"iss":"x"}') + ".AA",
    ],
)
def test_malformed_tokens_are_refused_with_a_reason(oidc_issuer, token):
    try:
        verdict = _verify(token, [_trust(oidc_issuer)])
    except OAuthError as refused:  # too large or not a JWS: refused while reading the form
        assert refused.status in {400, 401}
        return
    assert verdict.reason
    assert verdict.trust is None


def test_the_public_key_pem_is_what_an_attacker_has(oidc_issuer):
    # Sanity of the algorithm-confusion test: the PEM is the issuer's real public key.
    loaded = serialization.load_pem_public_key(oidc_issuer.public_pem())
    assert jose.public_jwk(loaded) == jose.public_jwk(oidc_issuer.signer.private_key.public_key())
