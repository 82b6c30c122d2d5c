"""The alert rules and the dashboard under deploy/: they load, and they use what /metrics serves."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import PROMTOOL

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "portal-alerts.yml"
RULE_TESTS = Path(__file__).parent / "portal-alerts.test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "portal-dashboard.json"
METRIC_NAME = re.compile(r"\bportal_[a-z0-9_]+\b")


def _rules() -> list[dict]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def _served_names(client) -> set[str]:
    """Every series and family name in a scrape of /metrics."""
    body = client.get("/metrics").content.decode()
    names = set(re.findall(r"^# TYPE (\S+) ", body, re.MULTILINE))
    names |= set(re.findall(r"^(portal_[a-z0-9_]+)[{ ]", body, re.MULTILINE))
    return names


def test_the_rules_name_the_conditions_that_need_a_person():
    rules = _rules()

    alerts = {rule["alert"] for rule in rules}
    assert {
        "PortalAuditSealingStalled",
        "PortalAuditCheckpointTooOld",
        "PortalNoActiveSigningKey",
        "PortalJobNotRun",
        "PortalTokenErrorRate",
        "Portal5xxRate",
    } <= alerts
    assert len(alerts) == len(rules)  # no name used twice
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert METRIC_NAME.search(rule["expr"]), rule["alert"]


def test_the_dashboard_is_grafana_json_with_one_id_per_panel():
    dashboard = json.loads(DASHBOARD.read_text())

    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "machine-identity-portal"
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource"}
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for p in graphs)
    assert all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in graphs)


@pytest.mark.django_db
def test_every_metric_the_rules_and_the_dashboard_use_is_served(client):
    used = {
        name
        for expr in [rule["expr"] for rule in _rules()] + _dashboard_exprs()
        for name in METRIC_NAME.findall(expr)
    }

    served = _served_names(client)

    assert used - served == set()
    # And the dashboard shows every family at least once.
    families = {name for name in served if not name.endswith(("_bucket", "_count", "_sum"))}
    shown = {name for expr in _dashboard_exprs() for name in METRIC_NAME.findall(expr)}
    histogram = "portal_token_request_duration_seconds"
    assert families - shown - {histogram} == set()


@pytest.mark.promtool
def test_promtool_accepts_the_rules_and_their_unit_tests_pass():
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in checked.stdout
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.promtool
@pytest.mark.django_db
def test_promtool_finds_nothing_to_lint_in_the_exposition(client):
    body = client.get("/metrics").content

    linted = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60
    )

    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert linted.stdout + linted.stderr == b""
