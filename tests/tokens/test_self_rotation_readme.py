"""The README's self-rotation calls, run as written against the live server.

The cron job's ``curl`` (secret) and Python script (private_key_jwt key) from
the section *A machine rotates its own credentials* run in a subprocess with
two edits: the portal's URL becomes the live server's and ``/etc/myservice``
a temporary folder. Then the new credential gets a token over HTTP, as an
outside client would, so the README cannot drift from the endpoint.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import override_settings

from audit.context import Actor
from clients.client_assertion import JWT_BEARER
from clients.models import ClientKey
from clients.services import client_key_add, machine_update
from core import jose

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### A machine rotates its own credentials"
PORTAL = "https://portal.example.com"
ACTOR = Actor.cli("pytest")


def _section_blocks() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    section = text[start : text.index("\n### ", start + len(SECTION))]
    return dict(re.findall(r"```(sh|python)\n(.*?)```", section, flags=re.DOTALL))


@pytest.fixture
def issuer(live_server):
    with override_settings(ISSUER=live_server.url):
        yield live_server.url


def _as_written(block: str, *, issuer: str, folder: Path) -> str:
    assert PORTAL in block and "/etc/myservice" in block
    return block.replace(PORTAL, issuer).replace("/etc/myservice", str(folder))


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def _secret_token(issuer: str, client_id: str, secret: str) -> int:
    return requests.post(
        issuer + "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
        timeout=30,
    ).status_code


def _key_token(issuer: str, client_id: str, private_key) -> int:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": issuer + "/oauth/token",
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(16),
    }
    assertion = jwt.encode(claims, private_key, algorithm="ES256")
    return requests.post(
        issuer + "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion,
        },
        timeout=30,
    ).status_code


def test_the_readme_has_both_cron_jobs():
    blocks = _section_blocks()

    assert sorted(blocks) == ["python", "sh"]
    assert "curl" in blocks["sh"] and "/api/v1/machines/self/secret" in blocks["sh"]
    assert '"jwk"' in blocks["python"] and "client_assertion" in blocks["python"]


def test_the_readme_curl_rotates_the_secret_and_both_work_during_the_grace(
    issuer, signing_key, machine_factory, clean_cache, tmp_path
):
    registered = machine_factory()
    script = _as_written(_section_blocks()["sh"], issuer=issuer, folder=tmp_path)

    done = _run(
        ["bash", "-c", script], CLIENT_ID=registered.client_id, CLIENT_SECRET=registered.secret
    )

    assert done.returncode == 0, done.stderr
    new_secret = (tmp_path / "client_secret").read_text().strip()
    assert new_secret.startswith("mip_cs_") and new_secret != registered.secret
    assert not (tmp_path / "client_secret.new").exists()
    assert _secret_token(issuer, registered.client_id, new_secret) == 200
    assert _secret_token(issuer, registered.client_id, registered.secret) == 200  # its grace


def test_the_readme_script_replaces_the_key_and_only_the_new_one_works(
    issuer, signing_key, machine_factory, clean_cache, tmp_path
):
    registered = machine_factory(name="signer")
    machine = machine_update(
        actor=ACTOR, machine=registered.machine, auth_methods=["private_key_jwt"]
    )
    old_key = ec.generate_private_key(ec.SECP256R1())
    client_key_add(
        actor=ACTOR, machine=machine, jwk={**jose.public_jwk(old_key.public_key()), "kid": "k1"}
    )
    key_file = tmp_path / "client_key.pem"
    key_file.write_bytes(
        old_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    script = _as_written(_section_blocks()["python"], issuer=issuer, folder=tmp_path)

    done = _run([sys.executable, "-c", script], CLIENT_ID=machine.client_id)

    assert done.returncode == 0, done.stderr
    new_key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    new_jwk = jose.public_jwk(new_key.public_key())
    assert not (tmp_path / "client_key.new").exists()
    assert list(ClientKey.objects.filter(machine=machine).values_list("thumbprint", flat=True)) == [
        jose.jwk_thumbprint(new_jwk)
    ]
    assert _key_token(issuer, machine.client_id, new_key) == 200
    assert _key_token(issuer, machine.client_id, old_key) == 401
