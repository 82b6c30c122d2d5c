"""Declarative apply of public keys and federation trusts: whole sets, checked before writing.

A machine entry's ``public_keys`` and ``trusts`` are exactly what the machine
ends up with; each add and remove is its service's own audited change; a
refused key or trust refuses the whole document with nothing changed; and
what was applied really authenticates a workload at the token endpoint.
"""

from __future__ import annotations

import io
import json
import secrets
import time
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.choices import EventType
from audit.models import AuditEvent
from clients.client_assertion import JWT_BEARER
from clients.machine_cache import client_key_is_authentic
from clients.models import ClientKey, FederationTrust, Machine
from core import jose, remote_jwks
from tests.fixtures.issuer import GITHUB_AUDIENCE
from tests.tokens.helpers import FORM, issue_token, verify

pytestmark = pytest.mark.django_db

API = "https://api.example"
GITHUB = "https://token.actions.githubusercontent.com"
CONDITION = 'claims.repository == "acme/billing" && claims.ref == "refs/heads/main"'
TRUST = {"issuer": GITHUB, "audience": GITHUB_AUDIENCE, "condition": CONDITION}


def _signer(kid: str) -> jose.Signer:
    return jose.Signer(
        kid=kid, algorithm="ES256", private_key=ec.generate_private_key(ec.SECP256R1())
    )


def _jwk(signer: jose.Signer, **extra) -> dict:
    return {**jose.public_jwk(signer.private_key.public_key()), "kid": signer.kid, **extra}


def _thumbprint(signer: jose.Signer) -> str:
    return jose.jwk_thumbprint(jose.public_jwk(signer.private_key.public_key()))


def _document(*, keys=None, trusts=None, **fields) -> dict:
    machine = {
        "name": "signer",
        "audiences": [API],
        "auth_methods": ["private_key_jwt", "federated_jwt"],
        **fields,
    }
    if keys is not None:
        machine["public_keys"] = keys
    if trusts is not None:
        machine["trusts"] = trusts
    return {"audiences": [{"uri": API}], "machines": [machine]}


def _apply(tmp_path, document: dict, *args: str) -> dict:
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(document))  # JSON is YAML
    out = io.StringIO()
    call_command("apply", str(path), *args, stdout=out)
    return json.loads(out.getvalue())


def _steps(result: dict) -> list[tuple]:
    return [
        (s["action"], s["kind"], s["name"], s.get("detail"))
        for s in result["plan"]
        if s["action"] != "unchanged"
    ]


def _key(signer: jose.Signer) -> dict:
    return {"kid": signer.kid, "thumbprint": _thumbprint(signer)}


def _trust_detail(subject: str = "", condition: str = CONDITION, issuer: str = GITHUB) -> dict:
    return {
        "issuer": issuer,
        "audience": GITHUB_AUDIENCE,
        "subject": subject,
        "condition": condition,
    }


def _credential_events() -> list[tuple]:
    kinds = [
        EventType.CLIENT_KEY_ADDED,
        EventType.CLIENT_KEY_REMOVED,
        EventType.TRUST_ADDED,
        EventType.TRUST_REMOVED,
    ]
    return [
        (
            e.event_type,
            e.actor_kind,
            e.target_display,
            e.details.get("kid"),
            e.details.get("issuer"),
        )
        for e in AuditEvent.objects.filter(event_type__in=kinds).order_by("id")
    ]


def _state() -> tuple:
    return (
        list(Machine.objects.order_by("id").values_list("name", "access_token_ttl", "jwks_uri")),
        list(ClientKey.objects.order_by("id").values_list("machine__name", "kid", "thumbprint")),
        list(FederationTrust.objects.order_by("id").values_list("issuer", "subject", "condition")),
        AuditEvent.objects.count(),
    )


def test_the_plan_shows_key_and_trust_additions_and_writes_nothing(tmp_path):
    one = _signer("k1")

    plan = _apply(tmp_path, _document(keys=[_jwk(one)], trusts=[TRUST]), "--dry-run")

    assert plan["applied"] is False
    assert plan["changes"] == 4
    assert _steps(plan) == [
        ("create", "audience", API, None),
        ("create", "machine", "signer", None),
        ("add", "key", "signer", _key(one)),
        ("add", "trust", "signer", _trust_detail()),
    ]
    assert _state() == ([], [], [], 0)


def test_apply_adds_them_with_their_audit_events_and_a_reapply_changes_nothing(tmp_path):
    one, two = _signer("k1"), _signer("k2")
    document = _document(keys=[_jwk(one), _jwk(two, alg="ES256")], trusts=[TRUST])

    first = _apply(tmp_path, document)
    machine = Machine.objects.get(name="signer")
    events = AuditEvent.objects.count()
    again = _apply(tmp_path, document)

    assert first["changes"] == 5
    assert first["secrets"] == {}  # no secret method: no secret made
    assert list(machine.keys.values_list("kid", "thumbprint", "public_jwk__alg")) == [
        ("k1", _thumbprint(one), None),
        ("k2", _thumbprint(two), "ES256"),
    ]
    assert list(machine.trusts.values_list("issuer", "audience", "subject", "condition")) == [
        (GITHUB, GITHUB_AUDIENCE, "", CONDITION)
    ]
    assert _credential_events() == [
        (EventType.CLIENT_KEY_ADDED, "cli", "signer", "k1", None),
        (EventType.CLIENT_KEY_ADDED, "cli", "signer", "k2", None),
        (EventType.TRUST_ADDED, "cli", "signer", None, GITHUB),
    ]
    assert again["changes"] == 0
    assert [(s["action"], s["kind"], s["name"]) for s in again["plan"]] == [
        ("unchanged", "audience", API),
        ("unchanged", "machine", "signer"),
    ]
    assert AuditEvent.objects.count() == events


def test_a_key_left_out_of_the_document_is_removed_and_one_absent_list_leaves_keys_alone(
    tmp_path,
):
    one, two = _signer("k1"), _signer("k2")
    _apply(tmp_path, _document(keys=[_jwk(one), _jwk(two)], trusts=[TRUST]))

    untouched = _apply(tmp_path, _document(access_token_ttl=300))
    removed = _apply(tmp_path, _document(keys=[_jwk(two)], access_token_ttl=300))

    assert _steps(untouched) == [("change", "machine", "signer", None)]
    assert _steps(removed) == [("remove", "key", "signer", _key(one))]
    assert list(ClientKey.objects.values_list("kid", flat=True)) == ["k2"]
    assert FederationTrust.objects.count() == 1
    assert _credential_events()[-1] == (EventType.CLIENT_KEY_REMOVED, "cli", "signer", "k1", None)


def test_both_keys_are_replaced_in_one_document_and_removals_come_first(tmp_path):
    old = [_signer("a"), _signer("b")]
    new = [_signer("c"), _signer("d")]
    _apply(tmp_path, _document(keys=[_jwk(s) for s in old]))

    result = _apply(tmp_path, _document(keys=[_jwk(s) for s in new]))

    assert _steps(result) == [
        ("remove", "key", "signer", _key(old[0])),
        ("remove", "key", "signer", _key(old[1])),
        ("add", "key", "signer", _key(new[0])),
        ("add", "key", "signer", _key(new[1])),
    ]
    assert list(ClientKey.objects.values_list("kid", flat=True)) == ["c", "d"]


def test_a_key_whose_kid_changed_is_the_same_key_replaced(tmp_path):
    key = _signer("2026-01")
    _apply(tmp_path, _document(keys=[_jwk(key)]))

    result = _apply(tmp_path, _document(keys=[_jwk(key, kid="2026-02")]))

    thumbprint = _thumbprint(key)
    assert _steps(result) == [
        ("remove", "key", "signer", {"kid": "2026-01", "thumbprint": thumbprint}),
        ("add", "key", "signer", {"kid": "2026-02", "thumbprint": thumbprint}),
    ]
    assert list(ClientKey.objects.values_list("kid", "thumbprint")) == [("2026-02", thumbprint)]


def test_keys_traded_for_a_jwks_uri_and_back_in_one_document_each(tmp_path):
    key = _signer("k1")
    _apply(tmp_path, _document(keys=[_jwk(key)]))

    result = _apply(tmp_path, _document(keys=[], jwks_uri="https://keys.example/jwks"))
    again = _apply(tmp_path, _document(keys=[], jwks_uri="https://keys.example/jwks"))
    uri = Machine.objects.get(name="signer").jwks_uri
    back = _apply(tmp_path, _document(keys=[_jwk(key)], jwks_uri=""))

    assert [(s["action"], s["kind"], s["fields"]) for s in result["plan"][1:]] == [
        ("remove", "key", []),
        ("change", "machine", ["jwks_uri"]),
    ]
    assert (uri, again["changes"]) == ("https://keys.example/jwks", 0)
    assert [(s["action"], s["kind"], s["fields"]) for s in back["plan"][1:]] == [
        ("change", "machine", ["jwks_uri"]),
        ("add", "key", []),
    ]
    assert Machine.objects.get(name="signer").jwks_uri == ""
    assert list(ClientKey.objects.values_list("kid", flat=True)) == ["k1"]


def test_trusts_are_a_whole_set_matched_on_issuer_audience_subject_and_condition(tmp_path):
    kubernetes = {
        "template": "kubernetes",
        "issuer": "https://k8s.example",
        "namespace": "billing",
        "service_account": "invoicer",
        "audience": GITHUB_AUDIENCE,
    }
    _apply(tmp_path, _document(trusts=[TRUST, kubernetes]))
    described = {**TRUST, "description": "main branch deploys"}

    changed = _apply(tmp_path, _document(trusts=[described, kubernetes]))
    emptied = _apply(tmp_path, _document(trusts=[]))

    k8s = _trust_detail(
        issuer="https://k8s.example", subject="system:serviceaccount:billing:invoicer", condition=""
    )
    assert _steps(changed) == [
        ("remove", "trust", "signer", _trust_detail()),
        ("add", "trust", "signer", _trust_detail()),
    ]
    assert _steps(emptied) == [
        ("remove", "trust", "signer", k8s),
        ("remove", "trust", "signer", _trust_detail()),
    ]
    assert FederationTrust.objects.count() == 0
    assert [e[0] for e in _credential_events()] == [
        EventType.TRUST_ADDED,
        EventType.TRUST_ADDED,
        EventType.TRUST_REMOVED,
        EventType.TRUST_ADDED,
        EventType.TRUST_REMOVED,
        EventType.TRUST_REMOVED,
    ]


def _private_jwk() -> dict:
    key = ec.generate_private_key(ec.SECP256R1())
    d = key.private_numbers().private_value.to_bytes(32, "big")
    return {**jose.public_jwk(key.public_key()), "kid": "leaked", "d": jose.b64url(d)}


@pytest.mark.parametrize(
    ("machine", "message"),
    [
        ({"public_keys": [{"kty": "EC", "crv": "P-256"}]}, "public_keys[0]: jwk: Not a usable"),
        ({"public_keys": ["not a jwk"]}, "public_keys"),
        ({"public_keys": [_private_jwk()]}, "public_keys[0]: jwk: Not a usable public key"),
        ({"public_keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "public_keys[0]: jwk:"),
        (
            {"public_keys": [_jwk(_signer("a")), _jwk(_signer("b")), _jwk(_signer("c"))]},
            "public_keys: a machine has at most 2 keys.",
        ),
        (
            {"public_keys": [_jwk(_signer("same")), _jwk(_signer("same"))]},
            "public_keys[1]: the same key or kid is listed twice.",
        ),
        (
            {"public_keys": [_jwk(_signer("a"))], "jwks_uri": "https://keys.example/jwks"},
            "list keys or a jwks_uri, not both",
        ),
        (
            {"trusts": [{**TRUST, "condition": "claims.repository =="}]},
            "trusts[0]: condition: Not a valid CEL expression",
        ),
        (
            {"trusts": [{**TRUST, "condition": "os.system('true')"}]},
            "trusts[0]: condition:",
        ),
        (
            {"trusts": [{"issuer": GITHUB, "audience": GITHUB_AUDIENCE}]},
            "trusts[0]: subject: A trust needs a subject, a condition, or both.",
        ),
        ({"trusts": [{**TRUST, "issuer": "http://plain.example"}]}, "trusts[0]: issuer:"),
        (
            {"trusts": [{"template": "github", "audience": GITHUB_AUDIENCE}]},
            "trusts[0]: template: The repository (OWNER/REPO) is required",
        ),
        ({"trusts": [{**TRUST, "repository": "acme/x"}]}, "repository: only with a template."),
        ({"trusts": [TRUST, dict(TRUST)]}, "trusts[1]: the same issuer, audience"),
        ({"trusts": [{**TRUST, "jwks": {"keys": [{"kty": "oct"}]}}]}, "trusts[0]: jwks:"),
        ({"trusts": [{**TRUST, "colour": "red"}]}, "colour"),
    ],
)
def test_a_refused_key_or_trust_refuses_the_whole_document_and_changes_nothing(
    tmp_path, machine, message
):
    existing = _signer("kept")
    _apply(tmp_path, _document(keys=[_jwk(existing)], trusts=[TRUST]))
    before = _state()
    document = _document(access_token_ttl=120, **machine)
    document["machines"].append({"name": "newcomer", "audiences": [API]})

    for args in (("--dry-run",), ()):
        with pytest.raises(CommandError) as refused:
            _apply(tmp_path, document, *args)
        assert refused.value.returncode == 2
        assert message in str(refused.value)

    assert _state() == before


def test_a_document_is_checked_whole_before_any_machine_is_written(tmp_path):
    document = {
        "audiences": [{"uri": API}],
        "machines": [
            {"name": "first", "audiences": [API], "public_keys": [_jwk(_signer("ok"))]},
            {"name": "second", "audiences": [API], "public_keys": [_private_jwk()]},
        ],
    }

    with pytest.raises(CommandError) as refused:
        _apply(tmp_path, document)

    assert "second: public_keys[0]" in str(refused.value)
    assert _state() == ([], [], [], 0)


# --- Through the API --------------------------------------------------------


def _caller(machine_factory, *scopes: str):
    return machine_factory(
        name="gitops",
        scopes=(*scopes, "orders:read"),
        default_scopes=(*scopes, "orders:read"),
        audiences=(settings.MANAGEMENT_API_AUDIENCE,),
        default_audience=settings.MANAGEMENT_API_AUDIENCE,
    )


def _post(client, token: str, document: dict, **extra):
    return client.post(
        "/api/v1/apply",
        data=json.dumps({"document": document, **extra}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def test_the_api_applies_keys_and_trusts_with_the_calling_machine_as_actor(
    client, signing_key, machine_factory
):
    deployer = _caller(machine_factory, "machines:write")
    token = issue_token(client, deployer)
    key = _signer("k1")
    document = _document(keys=[_jwk(key)], trusts=[TRUST])

    planned = _post(client, token, document, dry_run=True)
    applied = _post(client, token, document)

    assert planned.status_code == 200, planned.content
    assert [s.get("detail") for s in planned.json()["plan"][-2:]] == [
        _key(key),
        _trust_detail(),
    ]
    assert applied.status_code == 200, applied.content
    assert applied.json()["changes"] == 4
    events = AuditEvent.objects.filter(
        event_type__in=[EventType.CLIENT_KEY_ADDED, EventType.TRUST_ADDED]
    ).order_by("id")
    assert [(e.event_type, e.actor_kind, e.actor_id) for e in events] == [
        (EventType.CLIENT_KEY_ADDED, "machine", deployer.client_id),
        (EventType.TRUST_ADDED, "machine", deployer.client_id),
    ]


def test_a_machine_cannot_add_a_key_or_trust_to_a_more_powerful_machine(
    client, signing_key, machine_factory, tmp_path
):
    _apply(
        tmp_path,
        {
            "scopes": [{"name": "payments:write"}],
            "audiences": [{"uri": API}],
            "machines": [{"name": "payments", "scopes": ["payments:write"], "audiences": [API]}],
        },
    )
    writer = issue_token(client, _caller(machine_factory, "machines:write"))
    reader = issue_token(client, machine_factory(
        name="reader",
        scopes=("machines:read",),
        default_scopes=("machines:read",),
        audiences=(settings.MANAGEMENT_API_AUDIENCE,),
        default_audience=settings.MANAGEMENT_API_AUDIENCE,
    ))  # fmt: skip
    before = _state()

    def payments(**fields):
        return {"machines": [{"name": "payments", **fields}]}

    key = _post(client, writer, payments(public_keys=[_jwk(_signer("k"))]))
    trust = _post(client, writer, payments(trusts=[TRUST]))
    uri = _post(client, writer, payments(jwks_uri="https://keys.example/jwks"))
    read_only = _post(client, reader, _document(keys=[_jwk(_signer("k"))]))

    assert [r.status_code for r in (key, trust, uri, read_only)] == [403, 403, 403, 403]
    assert "payments:write" in key.json()["detail"]
    assert _state() == before
    assert (ClientKey.objects.count(), FederationTrust.objects.count()) == (0, 0)


# --- What was applied authenticates a workload -------------------------------


@pytest.fixture
def loopback_issuers(settings):
    settings.FEDERATION_ALLOW_PRIVATE_ISSUERS = True  # the test issuer is on loopback
    remote_jwks.reset()
    yield
    remote_jwks.reset()


def _token(client, client_id: str | None, assertion: str):
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
    }
    if client_id is not None:
        form["client_id"] = client_id
    return client.post("/oauth/token", urlencode(form), content_type=FORM)


def test_a_workload_authenticates_with_the_applied_key_and_trust(
    client,
    tmp_path,
    signing_key,
    clean_cache,
    oidc_issuer,
    loopback_issuers,
    django_capture_on_commit_callbacks,
):
    key = _signer("k1")
    trust = {"issuer": oidc_issuer.url, "audience": GITHUB_AUDIENCE, "condition": CONDITION}
    _apply(tmp_path, _document(keys=[_jwk(key)], trusts=[trust]))
    client_id = Machine.objects.get(name="signer").client_id

    def assertion() -> str:
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": settings.ISSUER + "/oauth/token",
            "iat": now,
            "exp": now + 60,
            "jti": secrets.token_urlsafe(16),
        }
        return key.sign(claims=claims, typ="JWT")

    signed = _token(client, client_id, assertion())
    federated = _token(client, client_id, oidc_issuer.github_token())
    with django_capture_on_commit_callbacks(execute=True):  # the caches are told at commit
        _apply(tmp_path, _document(keys=[], trusts=[]))
    key_withdrawn = _token(client, client_id, assertion())
    trust_withdrawn = _token(client, client_id, oidc_issuer.github_token())

    assert (signed.status_code, federated.status_code) == (200, 200), federated.content
    for response in (signed, federated):
        access = verify(response.json()["access_token"], audience=API)
        assert access["client_id"] == client_id
    assert (key_withdrawn.status_code, trust_withdrawn.status_code) == (401, 401)


def test_the_api_refuses_a_private_jwk_with_a_problem_document_and_changes_nothing(
    client, signing_key, machine_factory
):
    token = issue_token(client, _caller(machine_factory, "machines:write"))
    before = _state()

    response = _post(client, token, _document(keys=[_private_jwk()], trusts=[TRUST]))

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["errors"] == {
        "machines": [
            "signer: public_keys[0]: jwk: Not a usable public key: "
            "a private or symmetric JWK: register the public key only."
        ]
    }
    assert _state() == before


@pytest.mark.parametrize(
    "machine",
    [
        {"public_keys": [{"kty": ["EC"]}]},
        {"public_keys": [{"kty": "RSA", "n": 123, "e": None}]},
        {"public_keys": [{"kty": "EC", "crv": "P-256", "x": "!!", "y": "%%"}]},
        {"public_keys": [{str(n): n for n in range(40)}]},
        {"public_keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AA"}]},
        {"public_keys": [[]]},
        {"public_keys": {"kty": "EC"}},
        {"trusts": [{**TRUST, "jwks": {"keys": "x"}}]},
        {"trusts": [{**TRUST, "jwks": {"keys": [1, None, []]}}]},
        {"trusts": [{**TRUST, "condition": "claims." + "a." * 600 + "b"}]},
        {"trusts": [{**TRUST, "condition": "[1,2].all(x, [3].all(y, [4].all(z, true)))"}]},
        {"trusts": [{"template": "kubernetes", "audience": "a", "namespace": "a:b"}]},
        {"trusts": [{"template": "gitlab", "audience": "a", "project_path": "\u202e"}]},
        {"trusts": [{"template": "nope", "audience": "a"}]},
        {"trusts": [{**TRUST, "issuer": "https://user:pw@issuer.example"}]},
        {"trusts": [{**TRUST, "audience": ""}]},
        {"trusts": [{**TRUST, "subject": "\u00e9"}]},
        {"trusts": ["x"]},
        {"trusts": [{**TRUST}] * 51},
        {"jwks_uri": "ftp://keys.example/jwks"},
    ],
)
def test_the_api_answers_any_shape_of_bad_credentials_with_400_and_changes_nothing(
    client, signing_key, machine_factory, machine
):
    token = issue_token(client, _caller(machine_factory, "machines:write"))
    before = _state()

    fields = dict(machine)
    response = _post(
        client,
        token,
        _document(
            keys=fields.pop("public_keys", None), trusts=fields.pop("trusts", None), **fields
        ),
    )

    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert _state() == before


def test_a_key_row_that_fails_its_binding_is_replaced_by_one_the_portal_binds(tmp_path):
    key = _signer("k1")
    _apply(tmp_path, _document(keys=[_jwk(key)]))
    ClientKey.objects.update(binding="0" * 64)  # as someone holding only the database would

    result = _apply(tmp_path, _document(keys=[_jwk(key)]))
    again = _apply(tmp_path, _document(keys=[_jwk(key)]))

    assert _steps(result) == [
        ("remove", "key", "signer", _key(key)),
        ("add", "key", "signer", _key(key)),
    ]
    row = ClientKey.objects.get()
    assert client_key_is_authentic(row, client_id=row.machine.client_id) is True
    assert again["changes"] == 0
