"""The federated point's pool: each body carries a distinct, valid token of the bench's issuer."""

from __future__ import annotations

from urllib.parse import parse_qs

from bench.federation import ASSERTION_TYPE, FEDERATION_AUDIENCE, SUBJECT, FederatedWorkload
from core import jose, remote_jwks


def test_bodies_carry_distinct_tokens_that_verify_against_the_issuer(tmp_path):
    workload = FederatedWorkload(out_dir=tmp_path)
    try:
        workload.client_id = "cid"
        workload.body_prefix = (
            f"grant_type=client_credentials&client_id=cid"
            f"&client_assertion_type={ASSERTION_TYPE}&client_assertion="
        )
        lines = workload.bodies(5)
        keys = remote_jwks.keyset_from_jwks(workload.issuer.jwks())
    finally:
        workload.close()

    assert len(lines) == 5
    tokens = [parse_qs(line)["client_assertion"][0] for line in lines]
    jtis = set()
    for token in tokens:
        parsed = jose.jws_parse(token)
        verifier = keys.verifier(kid=parsed.header["kid"], alg=parsed.header["alg"])
        jose.jws_verify(parsed, {verifier.kid: verifier})
        assert (parsed.claims["aud"], parsed.claims["sub"]) == (FEDERATION_AUDIENCE, SUBJECT)
        assert parsed.claims["iss"] == workload.issuer.url
        jtis.add(parsed.claims["jti"])
    assert len(jtis) == 5
