"""Key changes reach every process: checked with a second, real process."""

import json
import os
import subprocess
import sys

import pytest

import tokens.keyring as keyring_module
from audit.context import Actor
from tests.fixtures.celery_worker import ROOT, _database_url
from tests.tokens.helpers import FORM, basic, token_request
from tokens.keyring import keyring_current
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


class _Clock:
    """The keyring's monotonic clock, moved by hand (time-machine does not move it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.postgres
@pytest.mark.redis
def test_a_key_rotated_by_another_process_signs_here_after_the_check_interval(
    transactional_db, signing_key, monkeypatch, settings
):
    settings.KEYRING_CHECK_INTERVAL = 1.0
    clock = _Clock()
    monkeypatch.setattr(keyring_module, "monotonic", clock)
    ring = keyring_current()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "identity_portal.settings_test",
        "DATABASE_URL": _database_url(),
    }

    rotated = subprocess.run(
        [sys.executable, "manage.py", "keys", "rotate", "--alg", "ES256", "--now"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    new_kid = json.loads(rotated.stdout)["kid"]

    clock.now += 0.9
    assert keyring_current() is ring
    assert ring.signer("ES256").kid == signing_key.kid
    clock.now += 0.2
    assert keyring_current().signer("ES256").kid == new_kid
    assert signing_key.kid in keyring_current().verifiers
