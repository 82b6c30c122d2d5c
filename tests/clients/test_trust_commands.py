"""``manage.py trust``: JSON out, audited as cli, refused input exits 2 and changes nothing."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from clients.federation.templates import GITHUB_ISSUER
from clients.models import FederationTrust

pytestmark = pytest.mark.django_db


def _run(*args) -> object:
    out = StringIO()
    call_command(*args, stdout=out)
    return json.loads(out.getvalue())


@pytest.fixture
def client_id(machine_and_secret, clean_cache):
    return machine_and_secret[0].client_id


def test_add_with_the_github_template_list_and_remove(client_id):
    added = _run(
        "trust", "add", client_id, "--template", "github", "--repository", "acme/billing",
        "--ref", "refs/heads/main", "--audience", "https://portal.example",
    )  # fmt: skip

    assert {k: added[k] for k in ("client_id", "issuer", "subject", "condition", "authentic")} == {
        "client_id": client_id,
        "issuer": GITHUB_ISSUER,
        "subject": "",
        "condition": 'claims.repository == "acme/billing" && claims.ref == "refs/heads/main"',
        "authentic": True,
    }
    assert [t["trust_id"] for t in _run("trust", "list", client_id)] == [added["trust_id"]]
    assert [t["trust_id"] for t in _run("trust", "list")] == [added["trust_id"]]

    removed = _run("trust", "remove", added["trust_id"])

    assert removed["removed"] is True
    assert FederationTrust.objects.count() == 0
    events = AuditEvent.objects.filter(event_type__startswith="trust.")
    assert sorted(events.values_list("event_type", "actor_kind")) == [
        ("trust.added", "cli"),
        ("trust.removed", "cli"),
    ]


def test_add_kubernetes_with_a_pasted_jwks(client_id, tmp_path, oidc_issuer):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(oidc_issuer.jwks()))

    added = _run(
        "trust", "add", client_id, "--template", "kubernetes", "--issuer", "https://k8s.internal",
        "--namespace", "billing", "--service-account", "invoicer",
        "--audience", "https://portal.example", "--jwks", str(jwks),
    )  # fmt: skip

    assert added["subject"] == "system:serviceaccount:billing:invoicer"
    assert added["pasted_jwks"] is True


@pytest.mark.parametrize(
    "args",
    [
        ["add", "nope", "--issuer", GITHUB_ISSUER, "--audience", "a", "--subject", "s"],
        ["add", "{cid}", "--audience", "a", "--subject", "s"],  # no issuer
        ["add", "{cid}", "--issuer", GITHUB_ISSUER, "--audience", "a"],  # no subject/condition
        ["add", "{cid}", "--issuer", "http://x", "--audience", "a", "--subject", "s"],
        ["add", "{cid}", "--issuer", GITHUB_ISSUER, "--audience", "a", "--condition", "x =="],
        ["add", "{cid}", "--template", "github", "--audience", "a"],  # no repository
        ["add", "{cid}", "--issuer", "https://k", "--audience", "a", "--subject", "s",
         "--jwks", "/nonexistent/jwks.json"],
        ["remove", "not-a-uuid"],
        ["remove", "00000000-0000-0000-0000-000000000000"],
        ["list", "nope"],
    ],
)  # fmt: skip
def test_refused_input_exits_2_and_changes_nothing(client_id, args):
    events = AuditEvent.objects.count()
    with pytest.raises(CommandError) as refused:
        call_command("trust", *[a.replace("{cid}", client_id) for a in args], stdout=StringIO())
    assert refused.value.returncode == 2
    assert FederationTrust.objects.count() == 0
    assert AuditEvent.objects.count() == events
