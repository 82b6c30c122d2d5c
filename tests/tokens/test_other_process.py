"""Revocation holds on every process at once: checked from a second, real process."""

import json
import os
import subprocess
import sys

import pytest

from audit.context import Actor
from tests.fixtures.celery_worker import ROOT, _database_url
from tests.tokens.helpers import FORM, basic, token_request
from tokens.services import signing_key_revoke

# Reads one token, then answers "is it active?" for every line it is sent.
_CHECKER = """
import json, sys
import django
django.setup()
from tokens.selectors import token_verify
token = sys.stdin.readline().strip()
for _ in sys.stdin:
    print(json.dumps(token_verify(token=token) is not None), flush=True)
"""


@pytest.fixture
def other_process():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "identity_portal.settings_test",
        "DATABASE_URL": _database_url(),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHECKER],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def ask() -> bool:
        proc.stdin.write("check\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    def start(token: str) -> None:
        proc.stdin.write(token + "\n")
        proc.stdin.flush()

    yield start, ask
    proc.stdin.close()
    proc.wait(timeout=30)


def _issue(client, registered) -> str:
    response = token_request(client, registered)
    assert response.status_code == 200
    return json.loads(response.content)["access_token"]


@pytest.mark.postgres
def test_a_key_revoked_here_makes_its_tokens_inactive_in_another_process(
    transactional_db, client, signing_key, machine_factory, other_process
):
    start, ask = other_process
    start(_issue(client, machine_factory()))
    assert ask() is True  # the other process has parsed the key and trusts the token

    signing_key_revoke(kid=signing_key.kid, actor=Actor.cli("test"))

    assert ask() is False


@pytest.mark.postgres
def test_a_token_revoked_here_is_inactive_in_another_process(
    transactional_db, client, signing_key, machine_factory, other_process
):
    registered = machine_factory()
    token = _issue(client, registered)
    start, ask = other_process
    start(token)
    assert ask() is True

    client.post(
        "/oauth/revoke",
        data=f"token={token}",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
    )

    assert ask() is False
