"""The systemd units and the environment example under deploy/ agree with each other,
with the nginx configuration and with the portal's production checks."""

from __future__ import annotations

import base64
import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = {
    "portal-web.service": ["/opt/portal/.venv/bin/python", "manage.py", "serve", "--no-worker"],
    "portal-worker.service": [
        "/opt/portal/.venv/bin/celery",
        *("-A", "identity_portal", "worker", "--loglevel", "INFO"),
    ],
    "portal-beat.service": [
        "/opt/portal/.venv/bin/celery",
        *("-A", "identity_portal", "beat", "--loglevel", "INFO"),
    ],
}
SECRETS = ("SECRET_KEY", "SECRET_PEPPERS", "KEY_ENCRYPTION_KEYS", "AUDIT_SIGNING_KEY")


def _environment_example() -> dict[str, str]:
    lines = (DEPLOY / "portal.env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return dict(pairs)


def _service(name: str) -> configparser.SectionProxy:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string((DEPLOY / "systemd" / name).read_text())
    return unit["Service"]


@pytest.mark.parametrize("name", sorted(UNITS))
def test_each_unit_runs_its_command_hardened_as_the_portal_user(name):
    service = _service(name)
    assert service["ExecStart"].split() == UNITS[name]
    assert (service["User"], service["Group"]) == ("portal", "portal")
    assert service["EnvironmentFile"] == "/etc/portal/portal.env"
    assert service["WorkingDirectory"] == "/opt/portal"
    hardening = {
        key: service[key]
        for key in (
            "NoNewPrivileges",
            "ProtectSystem",
            "ProtectHome",
            "PrivateTmp",
            "CapabilityBoundingSet",
            "ReadWritePaths",
        )
    }
    assert hardening == {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        # The one writable directory is the portal's VAR_DIR.
        "ReadWritePaths": _environment_example()["VAR_DIR"],
    }


def test_the_environment_example_matches_the_proxy_and_names_only_documented_settings():
    example = _environment_example()
    documented = set(re.findall(r"^\| `([A-Z_]+)`", (REPO / "README.md").read_text(), re.M))
    assert set(example) - documented == set()
    assert example["DJANGO_ENV"] == "production"
    assert {name: example[name] for name in SECRETS} == dict.fromkeys(SECRETS, "")
    # nginx's upstream is the web node the example configures, and the example
    # trusts that nginx.
    nginx = (DEPLOY / "nginx" / "portal.conf").read_text()
    assert f"server {example['HOST']}:{example['PORT']};" in nginx
    assert example["TRUSTED_PROXIES"] == "127.0.0.1/32"


def _key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


def _check(environment: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--fail-level", "ERROR"],
        cwd=REPO,
        env={"PATH": os.environ["PATH"], **environment},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_environment_example_passes_the_production_checks_once_its_secrets_are_set(
    tmp_path,
):
    example = _environment_example() | {
        "DJANGO_SETTINGS_MODULE": "identity_portal.settings",
        "VAR_DIR": str(tmp_path),
    }
    secrets = {
        "SECRET_KEY": _key() + _key(),
        "SECRET_PEPPERS": f"p1:{_key()}",
        "KEY_ENCRYPTION_KEYS": f"k1:{_key()}",
        "AUDIT_SIGNING_KEY": _key(),
    }

    as_shipped = _check(example)
    filled_in = _check(example | secrets)

    # As shipped, the empty secrets stop the portal before it serves anything.
    assert as_shipped.returncode == 1
    assert [
        name
        for name in SECRETS
        if f"(identity_portal.E001) {name} is not set." in as_shipped.stderr
    ] == list(SECRETS)
    assert (filled_in.returncode, filled_in.stderr) == (0, "")
