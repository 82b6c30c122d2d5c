"""Declarative apply: plan, apply, re-apply unchanged, prune; all or nothing.

The document under test is the README's own example, so the README cannot drift.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.choices import EventType
from audit.models import AuditEvent
from clients.models import Audience, ClientKey, ClientSecret, FederationTrust, Machine, Scope
from tests.tokens.helpers import issue_token

pytestmark = pytest.mark.django_db
README = Path(settings.BASE_DIR) / "README.md"
README_KEY_THUMBPRINT = "4o8wnLXxFmz8RKJr6yLZYlcNkfjsbSp1ukWifphZs78"
README_TRUST_CONDITION = 'claims.repository == "acme/orders" && claims.ref == "refs/heads/main"'


def _readme_document() -> str:
    text = README.read_text()
    match = re.search(r"<!-- apply-example -->\n```yaml\n(.*?)```", text, re.S)
    assert match, "the README lost its apply example"
    return match.group(1)


def _apply(tmp_path, text: str, *args: str) -> dict:
    path = tmp_path / "registry.yaml"
    path.write_text(text)
    out = io.StringIO()
    call_command("apply", str(path), *args, stdout=out)
    return json.loads(out.getvalue())


def _changes() -> int:
    return AuditEvent.objects.count()


def test_the_readme_document_applies_then_reapplies_with_no_change(tmp_path):
    document = _readme_document()

    plan = _apply(tmp_path, document, "--dry-run")
    assert plan["applied"] is False
    assert [(s["action"], s["kind"], s["name"]) for s in plan["plan"]] == [
        ("create", "scope", "orders:read"),
        ("create", "audience", "https://orders.example.com"),
        ("create", "machine", "billing-job"),
        ("create", "machine", "legacy-export"),
        ("create", "machine", "orders-deploy"),
        ("add", "key", "orders-deploy"),
        ("add", "trust", "orders-deploy"),
    ]
    assert [s.get("detail") for s in plan["plan"][-2:]] == [
        {"kid": "deploy-2026", "thumbprint": README_KEY_THUMBPRINT},
        {
            "issuer": "https://token.actions.githubusercontent.com",
            "audience": "https://portal.example.com",
            "subject": "",
            "condition": README_TRUST_CONDITION,
        },
    ]
    assert Machine.objects.count() == 0 and _changes() == 0

    first = _apply(tmp_path, document)
    assert first["changes"] == 7
    assert sorted(first["secrets"]) == ["billing-job", "legacy-export"]
    deploy = Machine.objects.get(name="orders-deploy")
    assert not ClientSecret.objects.filter(machine=deploy).exists()
    assert [(k.kid, k.thumbprint) for k in ClientKey.objects.filter(machine=deploy)] == [
        ("deploy-2026", README_KEY_THUMBPRINT)
    ]
    assert [
        (t.issuer, t.audience, t.subject, t.condition, t.template, t.description)
        for t in FederationTrust.objects.filter(machine=deploy)
    ] == [
        (
            "https://token.actions.githubusercontent.com",
            "https://portal.example.com",
            "",
            README_TRUST_CONDITION,
            "github",
            "the deploy workflow of acme/orders",
        )
    ]
    assert [
        (e.event_type, e.actor_kind, e.target_id)
        for e in AuditEvent.objects.filter(
            event_type__in=[EventType.CLIENT_KEY_ADDED, EventType.TRUST_ADDED]
        ).order_by("id")
    ] == [
        (EventType.CLIENT_KEY_ADDED, "cli", deploy.client_id),
        (EventType.TRUST_ADDED, "cli", deploy.client_id),
    ]
    billing = Machine.objects.get(name="billing-job")
    assert first["secrets"]["billing-job"]["client_id"] == billing.client_id
    assert first["secrets"]["billing-job"]["client_secret"].startswith("mip_cs_")
    assert sorted(s.name for s in billing.allowed_scopes.all()) == ["orders:read"]
    assert billing.default_audience.uri == "https://orders.example.com"
    assert billing.ip_allowlist == ["10.0.0.0/8"]
    assert Machine.objects.get(name="legacy-export").enabled is False
    events = _changes()

    second = _apply(tmp_path, document)
    assert second["changes"] == 0
    assert {s["action"] for s in second["plan"]} == {"unchanged"}
    assert second["secrets"] == {}
    assert _changes() == events
    assert ClientSecret.objects.count() == 2
    assert (ClientKey.objects.count(), FederationTrust.objects.count()) == (1, 1)


def test_a_changed_field_is_one_audited_change(tmp_path):
    document = _readme_document()
    _apply(tmp_path, document)
    before = _changes()

    result = _apply(tmp_path, document.replace("access_token_ttl: 600", "access_token_ttl: 300"))

    assert [
        (s["action"], s["name"], s["fields"]) for s in result["plan"] if s["action"] != "unchanged"
    ] == [("change", "billing-job", ["access_token_ttl"])]
    assert Machine.objects.get(name="billing-job").access_token_ttl == 300
    (event,) = AuditEvent.objects.filter(pk__gt=0).order_by("-id")[:1]
    assert event.event_type == EventType.MACHINE_UPDATED
    assert event.details["changed"] == ["access_token_ttl"]
    assert _changes() == before + 1


def test_prune_disables_only_live_machines_the_document_does_not_name(tmp_path):
    document = _readme_document()
    _apply(tmp_path, document)
    _apply(
        tmp_path,
        "machines:\n  - name: hand-made\n    audiences: [https://orders.example.com]\n",
    )

    kept = _apply(tmp_path, document)
    assert Machine.objects.get(name="hand-made").enabled is True
    assert kept["changes"] == 0

    pruned = _apply(tmp_path, document, "--prune")
    assert [
        (s["action"], s["name"], s["fields"]) for s in pruned["plan"] if s["action"] != "unchanged"
    ] == [("disable", "hand-made", ["pruned"])]
    assert Machine.objects.get(name="hand-made").enabled is False
    assert Machine.objects.get(name="billing-job").enabled is True


def test_any_refused_entry_rolls_the_whole_document_back(tmp_path):
    document = _readme_document().replace(
        "scopes: [orders:read]\n", "scopes: [orders:read, no-such-scope]\n"
    )

    with pytest.raises(CommandError) as refused:
        _apply(tmp_path, document)

    assert refused.value.returncode == 2
    assert "no-such-scope" in str(refused.value)
    assert (Scope.objects.count(), Audience.objects.count(), Machine.objects.count()) == (0, 0, 0)
    assert _changes() == 0


@pytest.mark.parametrize(
    "text",
    [
        "machines: [",  # not YAML
        "machines:\n  - name: x\n    colour: red\n",  # unknown field
        "machines:\n  - name: x\n  - name: x\n",  # named twice
        "- a list\n",  # not a mapping
        "!!python/object/apply:os.system ['true']\n",  # never evaluated
        "scopes:\n  - name: 'has space'\n",
    ],
)
def test_a_bad_document_is_refused_and_changes_nothing(tmp_path, text):
    with pytest.raises(CommandError) as refused:
        _apply(tmp_path, text)
    assert refused.value.returncode == 2
    assert Machine.objects.count() == 0 and Scope.objects.count() == 0
    assert _changes() == 0


def test_a_machine_applies_through_the_api_within_its_scopes(client, signing_key, machine_factory):
    deployer = machine_factory(
        name="gitops",
        scopes=("machines:write", "orders:read"),
        default_scopes=("machines:write", "orders:read"),
        audiences=(settings.MANAGEMENT_API_AUDIENCE,),
        default_audience=settings.MANAGEMENT_API_AUDIENCE,
    )
    auth = {"HTTP_AUTHORIZATION": f"Bearer {issue_token(client, deployer)}"}
    document = {
        "audiences": [{"uri": "https://orders.example.com"}],
        "machines": [
            {
                "name": "reader",
                "scopes": ["orders:read"],
                "audiences": ["https://orders.example.com"],
            }
        ],
    }

    def post(body):
        return client.post(
            "/api/v1/apply", data=json.dumps(body), content_type="application/json", **auth
        )

    first = post({"document": document})
    again = post({"document": document})
    greedy = post(
        {"document": {"machines": [{"name": "x", "scopes": ["machines:write", "keys:write"]}]}}
    )

    assert first.status_code == 200, first.content
    assert first.json()["changes"] == 2
    assert first.json()["secrets"]["reader"]["client_secret"].startswith("mip_cs_")
    assert again.json()["changes"] == 0
    assert greedy.status_code == 403
    assert Machine.objects.filter(name="x").count() == 0
    (event,) = AuditEvent.objects.filter(event_type=EventType.MACHINE_REGISTERED)
    assert (event.actor_kind, event.actor_id) == ("machine", deployer.client_id)


def _readme_curl_calls() -> list[tuple[str, dict | None]]:
    """(path, JSON body) of each call in the README's "three common calls" block."""
    text = README.read_text()
    block = re.search(r"The three common calls.*?```sh\n(.*?)```", text, re.S).group(1)
    commands = re.split(r"\n(?=curl )", block.replace("\\\n", " "))
    calls = []
    for command in commands[1:]:  # the first gets the token
        body = re.search(r"-d '(\{.*?\})'", command)
        url = re.search(r"https://portal\.example\.com(/api/v1/\S+)", command).group(1)
        calls.append((url, json.loads(body.group(1)) if body else None))
    return calls


def test_the_readme_curl_calls_register_rotate_and_disable(client, signing_key, machine_factory):
    deployer = machine_factory(
        name="ci",
        scopes=("machines:write",),
        default_scopes=("machines:write",),
        audiences=(settings.MANAGEMENT_API_AUDIENCE,),
        default_audience=settings.MANAGEMENT_API_AUDIENCE,
    )
    Audience.objects.create(uri="https://billing.example.com")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {issue_token(client, deployer)}"}
    calls = _readme_curl_calls()
    assert [path for path, _ in calls] == [
        "/api/v1/machines",
        "/api/v1/machines/$NEW_CLIENT_ID/secrets",
        "/api/v1/machines/$NEW_CLIENT_ID/disable",
    ]

    answers, client_id = [], ""
    for path, body in calls:
        answers.append(
            client.post(
                path.replace("$NEW_CLIENT_ID", client_id),
                data=json.dumps(body) if body is not None else "",
                content_type="application/json",
                **auth,
            )
        )
        client_id = client_id or answers[0].json()["client_id"]

    assert [a.status_code for a in answers] == [201, 201, 200], answers[-1].content
    machine = Machine.objects.get(client_id=client_id)
    assert (machine.name, machine.enabled) == ("billing-job", False)
    events = AuditEvent.objects.filter(target_id=client_id).order_by("id")
    assert [(e.event_type, e.actor_id) for e in events] == [
        (EventType.MACHINE_REGISTERED, deployer.client_id),
        (EventType.SECRET_CREATED, deployer.client_id),
        (EventType.SECRET_ROTATED, deployer.client_id),
        (EventType.MACHINE_DISABLED, deployer.client_id),
    ]
