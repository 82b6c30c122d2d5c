"""``manage.py machine policy|add-secret`` and ``manage.py webhook``: JSON out, audited."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from clients.models import ClientSecret, Machine
from notifications.models import WebhookEndpoint

pytestmark = pytest.mark.django_db


def _run(*args) -> dict | list:
    out = StringIO()
    call_command(*args, stdout=out)
    return json.loads(out.getvalue())


def test_machine_policy_sets_and_clears_the_overrides(machine_and_secret):
    machine, _ = machine_and_secret
    shown = _run(
        "machine",
        "policy",
        machine.client_id,
        "--max-secret-age",
        "2592000",
        "--warning-period",
        "86400",
        "--stale-action",
        "disable",
    )
    assert (shown["max_secret_age"], shown["secret_warning_period"], shown["stale_action"]) == (
        2592000,
        86400,
        "disable",
    )
    shown = _run("machine", "policy", machine.client_id, "--warning-period", "")
    assert (shown["max_secret_age"], shown["secret_warning_period"]) == (2592000, None)
    events = AuditEvent.objects.filter(event_type="machine.updated").order_by("id")
    assert [e.actor_kind for e in events] == ["cli", "cli"]


def test_machine_policy_refuses_a_bad_value_and_changes_nothing(machine_and_secret):
    machine, _ = machine_and_secret
    with pytest.raises(CommandError):
        call_command("machine", "policy", machine.client_id, "--max-secret-age", "5")
    assert Machine.objects.get(pk=machine.pk).max_secret_age is None
    with pytest.raises(CommandError):
        call_command("machine", "policy", machine.client_id, "--stale-action", "explode")


def test_machine_add_secret_makes_a_bootstrap_secret(machine_and_secret):
    machine, _ = machine_and_secret
    shown = _run(
        "machine",
        "add-secret",
        machine.client_id,
        "--uses",
        "1",
        "--not-before",
        "2026-06-01T12:00:00+00:00",
    )
    assert shown["client_secret"].startswith("mip_cs_")
    assert (shown["secret"]["max_uses"], shown["secret"]["not_before"]) == (
        1,
        "2026-06-01T12:00:00+00:00",
    )
    row = ClientSecret.objects.get(pk=shown["secret"]["id"])
    assert (row.max_uses, row.use_count) == (1, 0)
    with pytest.raises(CommandError):
        call_command("machine", "add-secret", machine.client_id, "--not-before", "2026-06-01")


def test_webhook_create_prints_the_secret_once_and_list_never(cli_actor):
    created = _run(
        "webhook", "create", "--team", "payments", "--url", "https://hooks.example.com/x"
    )
    assert created["signing_secret"].startswith("mip_whsec_")
    listed = _run("webhook", "list")
    assert listed == [{k: v for k, v in created.items() if k != "signing_secret"}]
    assert created["signing_secret"] not in json.dumps(listed)
    with pytest.raises(CommandError):
        call_command("webhook", "create", "--team", "payments", "--url", "http://127.0.0.1/x")
    assert WebhookEndpoint.objects.count() == 1
    _run("webhook", "disable", created["id"])
    assert WebhookEndpoint.objects.get().enabled is False
