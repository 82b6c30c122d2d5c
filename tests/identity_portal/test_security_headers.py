"""Content-Security-Policy and Permissions-Policy on every response; nothing inline needs more."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings

from tests.fixtures.core import console_login

TEMPLATES = Path(settings.BASE_DIR) / "templates"
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "font-src 'self'; connect-src 'self'; manifest-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


def test_the_default_policy_allows_no_inline_script_or_style():
    assert settings.CONTENT_SECURITY_POLICY == POLICY
    assert "unsafe" not in settings.CONTENT_SECURITY_POLICY
    features = dict(part.strip().split("=", 1) for part in settings.PERMISSIONS_POLICY.split(","))
    assert features["camera"] == features["microphone"] == features["geolocation"] == "()"
    assert features["clipboard-write"] == "(self)"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/console/", "/console/login/", "/console/mfa/", "/console/clients/machine/"]
)
def test_console_pages_carry_both_headers(client, admin_user, path):
    console_login(client, admin_user)

    response = client.get(path, follow=True)

    assert response["Content-Security-Policy"] == POLICY
    assert response["Permissions-Policy"] == settings.PERMISSIONS_POLICY


@pytest.mark.django_db
def test_error_pages_and_protocol_endpoints_carry_them_too(client, signing_key):
    for response in (
        client.get("/console/no-such-page/"),
        client.get("/.well-known/jwks.json"),
        client.post("/oauth/token", {"grant_type": "client_credentials"}),
    ):
        assert response["Content-Security-Policy"] == POLICY


def _template_files():
    return sorted(TEMPLATES.rglob("*.html"))


@pytest.mark.parametrize("template", _template_files(), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_no_template_holds_inline_script_style_or_handlers(template):
    text = template.read_text()

    scripts = re.findall(r"<script\b[^>]*>", text)
    assert [tag for tag in scripts if "src=" not in tag] == []
    assert re.findall(r"<style\b", text) == []
    assert re.findall(r"\sstyle\s*=", text) == []
    assert re.findall(r"\son[a-z]+\s*=", text) == []
    assert "javascript:" not in text
