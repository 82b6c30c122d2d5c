"""The token endpoint with federated_jwt: a workload's own OIDC token instead of a secret.

The loopback issuer (tests.fixtures.issuer) plays GitHub Actions and a
Kubernetes API server. Every refusal answers the same invalid_client, issues
nothing and records its precise reason in the token.denied event only.
"""

from __future__ import annotations

import json
import time
from io import StringIO
from urllib.parse import quote_plus

import pytest
from django.core.management import call_command

from audit.models import AuditEvent
from clients.federation.services import trust_add, trust_remove
from clients.models import ClientSecret, FederationTrust, Machine
from core import jose, remote_jwks
from tests.fixtures.issuer import GITHUB_AUDIENCE, hmac_token, unsigned_token
from tests.tokens.helpers import FORM, verify
from tokens.models import IssuedToken

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("signing_key")]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CONDITION = 'claims.repository == "acme/billing" && claims.ref == "refs/heads/main"'
K8S_AUDIENCE = "https://portal.example/k8s"


@pytest.fixture(autouse=True)
def _federation(settings):
    settings.FEDERATION_ALLOW_PRIVATE_ISSUERS = True  # the test issuer is on loopback
    remote_jwks.reset()
    yield
    remote_jwks.reset()


@pytest.fixture
def machine(scope_read, audience_api, cli_actor) -> Machine:
    out = StringIO()
    call_command(
        "machine", "create", "--name", "deploy", "--scope", "read",
        "--audience", "https://api.example", "--auth-method", "federated_jwt", stdout=out,
    )  # fmt: skip
    created = json.loads(out.getvalue())
    assert "client_secret" not in created or not created["client_secret"]
    return Machine.objects.get(client_id=created["client_id"])


@pytest.fixture
def github_trust(machine, oidc_issuer, cli_actor) -> FederationTrust:
    return trust_add(
        actor=cli_actor,
        machine=machine,
        issuer=oidc_issuer.url,
        audience=GITHUB_AUDIENCE,
        condition=CONDITION,
        template="github",
    )


def _post(client, *, assertion: str | None, client_id: str | None = None, **extra):
    params = {"grant_type": "client_credentials", **extra}
    if client_id is not None:
        params["client_id"] = client_id
    if assertion is not None:
        params["client_assertion_type"] = ASSERTION_TYPE
        params["client_assertion"] = assertion
    body = "&".join(f"{k}={quote_plus(v)}" for k, v in params.items())
    return client.post("/oauth/token", data=body, content_type=FORM)


def _state():
    return (
        IssuedToken.objects.count(),
        ClientSecret.objects.count(),
        FederationTrust.objects.count(),
        AuditEvent.objects.filter(event_type="token.issued").count(),
    )


def test_a_github_shaped_token_gets_an_access_token_and_no_secret_exists(
    client, machine, github_trust, oidc_issuer
):
    claims = oidc_issuer.github_claims()

    response = _post(client, assertion=oidc_issuer.mint(claims), client_id=machine.client_id)

    assert response.status_code == 200, response.content
    access = verify(json.loads(response.content)["access_token"], audience="https://api.example")
    assert (access["client_id"], access["sub"]) == (machine.client_id, str(machine.subject))
    assert not ClientSecret.objects.filter(machine=machine).exists()
    event = AuditEvent.objects.get(event_type="token.issued")
    assert {k: event.details[k] for k in ("external_iss", "external_sub", "external_jti")} == {
        "external_iss": oidc_issuer.url,
        "external_sub": "repo:acme/billing:ref:refs/heads/main",
        "external_jti": claims["jti"],
    }
    assert event.details["trust_id"] == str(github_trust.uid)


def test_a_kubernetes_token_without_client_id_finds_its_machine_by_subject(
    client, machine, oidc_issuer, cli_actor
):
    trust_add(
        actor=cli_actor,
        machine=machine,
        issuer=oidc_issuer.url,
        audience=K8S_AUDIENCE,
        subject="system:serviceaccount:billing:invoicer",
        jwks=json.dumps(oidc_issuer.jwks()),  # the API server is not reachable
        template="kubernetes",
    )
    oidc_issuer.down = True

    response = _post(client, assertion=oidc_issuer.kubernetes_token(audience=K8S_AUDIENCE))

    assert response.status_code == 200, response.content
    access = verify(json.loads(response.content)["access_token"], audience="https://api.example")
    assert access["client_id"] == machine.client_id


def _refused(client, machine, token, *, reason, client_id="machine"):
    before = _state()
    response = _post(
        client, assertion=token, client_id=machine.client_id if client_id == "machine" else None
    )
    assert response.status_code == 401
    assert json.loads(response.content) == {
        "error": "invalid_client",
        "error_description": "Client authentication failed.",
    }
    assert _state() == before
    denied = AuditEvent.objects.filter(event_type="token.denied").order_by("-id").first()
    assert denied.reason == reason
    return denied


def test_wrong_audience(client, machine, github_trust, oidc_issuer):
    token = oidc_issuer.github_token(audience="https://elsewhere.example")
    _refused(client, machine, token, reason="wrong_audience")


def test_expired(client, machine, github_trust, oidc_issuer):
    claims = {**oidc_issuer.github_claims(), "exp": int(time.time()) - 120}
    _refused(client, machine, oidc_issuer.mint(claims), reason="expired")


def test_nbf_in_the_future(client, machine, github_trust, oidc_issuer):
    claims = {**oidc_issuer.github_claims(), "nbf": int(time.time()) + 600}
    _refused(client, machine, oidc_issuer.mint(claims), reason="not_yet_valid")


def test_wrong_issuer(client, machine, github_trust, oidc_issuer):
    claims = {**oidc_issuer.github_claims(), "iss": "https://token.actions.githubusercontent.com"}
    _refused(client, machine, oidc_issuer.mint(claims), reason="no_trust_for_issuer")


def test_condition_false(client, machine, github_trust, oidc_issuer):
    token = oidc_issuer.github_token(repository="acme/other")
    _refused(client, machine, token, reason="condition_false")


def test_unknown_kid(client, machine, github_trust, oidc_issuer):
    from cryptography.hazmat.primitives.asymmetric import rsa

    stranger = jose.Signer(
        kid="stranger",
        algorithm="RS256",
        private_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )
    token = oidc_issuer.mint(oidc_issuer.github_claims(), signer=stranger)
    _refused(client, machine, token, reason="unknown_kid")


def test_alg_none(client, machine, github_trust, oidc_issuer):
    token = unsigned_token(oidc_issuer.github_claims()) + "AA"
    _refused(client, machine, token, reason="algorithm_not_allowed")


def test_hmac_token_keyed_with_the_issuer_public_key(client, machine, github_trust, oidc_issuer):
    token = hmac_token(
        oidc_issuer.github_claims(), key=oidc_issuer.public_pem(), kid=oidc_issuer.signer.kid
    )
    _refused(client, machine, token, reason="algorithm_not_allowed")


def test_a_replayed_assertion(client, machine, github_trust, oidc_issuer):
    token = oidc_issuer.github_token()
    assert _post(client, assertion=token, client_id=machine.client_id).status_code == 200
    _refused(client, machine, token, reason="replayed")


class _CacheWithoutGet:
    """The real cache, except that a lone ``get`` fails the request."""

    def get(self, *args, **kwargs):
        raise AssertionError("read on its own, not with the machine's entry")

    def __getattr__(self, name):
        from django.core.cache import cache

        return getattr(cache, name)


def test_the_trusts_come_back_with_the_machine_entry_in_one_cache_read(
    client, machine, github_trust, oidc_issuer, monkeypatch, clean_cache
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from clients.federation import selectors

    first = _post(client, assertion=oidc_issuer.github_token(), client_id=machine.client_id)
    assert first.status_code == 200  # the machine's entry and its trusts are now cached
    monkeypatch.setattr(selectors, "cache", _CacheWithoutGet())

    with CaptureQueriesContext(connection) as queries:
        second = _post(client, assertion=oidc_issuer.github_token(), client_id=machine.client_id)

    assert second.status_code == 200, second.content
    assert [q["sql"] for q in queries if "federationtrust" in q["sql"]] == []
    assert AuditEvent.objects.filter(event_type="token.issued").count() == 2


def test_an_issuer_whose_jwks_is_down(client, machine, github_trust, oidc_issuer):
    oidc_issuer.down = True
    _refused(client, machine, oidc_issuer.github_token(), reason="issuer_keys_unavailable:http_503")


@pytest.mark.django_db(transaction=True)
def test_a_trust_removed_a_second_ago(client, machine, github_trust, oidc_issuer, cli_actor):
    assert (
        _post(client, assertion=oidc_issuer.github_token(), client_id=machine.client_id).status_code
        == 200
    )  # the machine's trusts are now cached

    trust_remove(actor=cli_actor, trust=github_trust)

    _refused(client, machine, oidc_issuer.github_token(), reason="no_trust_for_issuer")


def test_a_trust_inserted_in_the_database_admits_nothing(client, machine, oidc_issuer):
    from django.utils import timezone

    FederationTrust.objects.create(
        machine=machine,
        issuer=oidc_issuer.url,
        audience=GITHUB_AUDIENCE,
        condition="true",
        pepper_id="p2",
        binding="f" * 64,
        created_at=timezone.now(),
    )
    _refused(client, machine, oidc_issuer.github_token(), reason="trust_not_authentic")


def test_without_client_id_and_no_unique_subject_nothing_is_issued(
    client, machine, github_trust, oidc_issuer
):
    before = _state()
    response = _post(client, assertion=oidc_issuer.github_token())
    assert response.status_code == 401
    assert _state() == before


def test_failures_are_throttled_like_a_wrong_secret(client, machine, github_trust, oidc_issuer):
    statuses = [
        _post(
            client,
            assertion=oidc_issuer.github_token(audience="https://elsewhere.example"),
            client_id=machine.client_id,
        ).status_code
        for _ in range(8)
    ]
    assert statuses[:5] == [401] * 5
    assert 429 in statuses[5:]


MALFORMED = [
    "",
    "x",
    "a.b",
    "a.b.c",
    "a.b.c.d.e",
    "....",
    "e30.e30.",
    "e30.e30.AA",
    "W10.W10.AA",
    "%00%00",
    "x" * 20000,
    "é.é.é",
    jose.b64url(b'{"alg":"RS256","kid":[]}') + "." + jose.b64url(b'{"iss":{}}') + ".AA",
    jose.b64url(b'{"alg":"RS256"}') + "." + jose.b64url(b'{"iss":"' + b"9" * 5000 + b'"}') + ".A",
    jose.b64url(b"[" * 3000) + "." + jose.b64url(b"{}") + ".AA",
]


@pytest.mark.parametrize("assertion", MALFORMED)
@pytest.mark.parametrize("with_client_id", [True, False])
def test_malformed_assertions_are_4xx_and_change_nothing(
    client, machine, github_trust, assertion, with_client_id
):
    before = _state()
    response = _post(
        client, assertion=assertion, client_id=machine.client_id if with_client_id else None
    )
    assert 400 <= response.status_code < 500
    assert json.loads(response.content)["error"] in {"invalid_request", "invalid_client"}
    assert _state() == before


@pytest.mark.parametrize(
    "extra",
    [
        {"client_assertion_type": "urn:example:other"},
        {"client_secret": "mip_cs_x"},
    ],
)
def test_an_assertion_mixed_with_other_credentials_is_refused(
    client, machine, github_trust, oidc_issuer, extra
):
    before = _state()
    params = {"client_assertion": oidc_issuer.github_token(), **extra}
    body = "&".join(
        f"{k}={quote_plus(v)}"
        for k, v in {
            "grant_type": "client_credentials",
            "client_id": machine.client_id,
            "client_assertion_type": ASSERTION_TYPE,
            **params,
        }.items()
    )
    response = client.post("/oauth/token", data=body, content_type=FORM)
    assert 400 <= response.status_code < 500
    assert _state() == before
