"""The federated point of `make bench`: workloads presenting an external OIDC token.

The bench runs a loopback OIDC issuer (``tests.fixtures.issuer``: discovery
and JWKS over HTTP, RS256 as GitHub Actions and Kubernetes sign), registers
a machine whose only credential method is ``federated_jwt`` with a trust on
that issuer, and drives the token endpoint with bodies that each carry a
different pre-minted token (``client_assertion``): every token is accepted
once, so a replayed one would be refused and counted as non-2xx. Minting RS256
is slow on a busy machine, so tokens are minted in worker processes before
each wrk run (the pool is sized by ``bench.load.run_wrk``).
"""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import time
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization

from core import jose
from tests.fixtures.issuer import LoopbackIssuer

# The series name of the federated point in the results.
FEDERATED = "portal-federated"
FEDERATION_AUDIENCE = "https://portal.bench/federation"
SUBJECT = "repo:acme/bench:ref:refs/heads/main"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# A token lives this long: longer than any run, within the portal's 24 h bound.
TOKEN_LIFETIME = 4 * 3600


def _mint(private_pem: bytes, kid: str, issuer: str, count: int) -> list[str]:
    key = serialization.load_pem_private_key(private_pem, password=None)
    signer = jose.Signer(kid=kid, algorithm=jose.RS256, private_key=key)
    now = int(time.time())
    return [
        signer.sign(
            claims={
                "iss": issuer,
                "aud": FEDERATION_AUDIENCE,
                "sub": SUBJECT,
                "repository": "acme/bench",
                "ref": "refs/heads/main",
                "iat": now,
                "nbf": now,
                "exp": now + TOKEN_LIFETIME,
                "jti": secrets.token_hex(16),
            },
            typ="JWT",
        )
        for _ in range(count)
    ]


class FederatedWorkload:
    """The issuer, and request bodies each carrying a token never sent before."""

    def __init__(self, *, out_dir) -> None:
        self.issuer = LoopbackIssuer()
        self.out_dir = out_dir
        self.client_id = ""
        self.body_prefix = ""

    def close(self) -> None:
        self.issuer.close()

    def register(self, manage, *, scope: str, audience: str, run_id: str) -> None:
        """A machine with federated_jwt only (no secret) and a trust on the issuer."""
        from bench.servers import ServerUnavailable, _json_from

        argv = ["machine", "create", "--name", f"bench-{run_id}-federated", "--scope", scope]
        argv += ["--audience", audience, "--auth-method", "federated_jwt"]
        created = _json_from(manage(*argv))
        if not isinstance(created, dict) or "client_id" not in created:
            raise ServerUnavailable("`machine create --auth-method federated_jwt` printed no id")
        if created.get("client_secret"):
            raise ServerUnavailable("a federated_jwt-only machine was given a secret")
        self.client_id = str(created["client_id"])
        argv = ["trust", "add", self.client_id, "--issuer", self.issuer.url]
        argv += ["--audience", FEDERATION_AUDIENCE, "--subject", SUBJECT]
        manage(*argv, "--condition", 'claims.repository == "acme/bench"')
        self.body_prefix = (
            f"grant_type=client_credentials&scope={scope}&resource={quote(audience, safe='')}"
            f"&client_id={quote(self.client_id, safe='')}"
            f"&client_assertion_type={quote(ASSERTION_TYPE, safe='')}&client_assertion="
        )

    def bodies(self, count: int) -> list[str]:
        """``count`` request bodies, each with a fresh token (``Target.body_pool``)."""
        signer = self.issuer.signer
        pem = signer.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        workers = max(1, min(count, os.cpu_count() or 1))
        chunks = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
            minted = pool.map(
                _mint, *zip(*[(pem, signer.kid, self.issuer.url, n) for n in chunks], strict=True)
            )
            return [self.body_prefix + token for chunk in minted for token in chunk]
