"""A key change the cache could not be told about is reported, not a plain success.

Transactional: the keyring's version bump runs after the real commit, inside
the command or the console action, which is what they must report on.
"""

import json
from io import StringIO

import pytest
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.urls import reverse

from tests.fixtures.core import CacheWritesFail, console_login
from tokens.choices import KeyState
from tokens.keyring import KEYRING_NOT_TOLD, VERSION_CACHE_KEY
from tokens.models import SigningKey

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cache_down_for_writes(monkeypatch):
    monkeypatch.setattr("tokens.keyring.cache", CacheWritesFail())


def test_keys_revoke_prints_the_change_and_exits_3_when_the_cache_was_not_told(
    signing_key, cache_down_for_writes, caplog
):
    from core import metrics

    counted = metrics.CACHE_ERRORS.labels("keyring_version_bump")._value.get()
    out = StringIO()

    with pytest.raises(CommandError) as raised:
        call_command("keys", "revoke", signing_key.kid, stdout=out)

    assert (raised.value.returncode, str(raised.value)) == (3, KEYRING_NOT_TOLD)
    # The operators' side: each failed bump logs a warning of its own and is counted.
    warned = caplog.messages.count(
        "keyring: cache unreachable; other processes reload within seconds"
    )
    assert warned >= 1
    assert metrics.CACHE_ERRORS.labels("keyring_version_bump")._value.get() == counted + warned
    assert json.loads(out.getvalue()) == {"kid": signing_key.kid, "state": KeyState.REVOKED}
    assert SigningKey.objects.get(pk=signing_key.pk).state == KeyState.REVOKED


def test_keys_revoke_is_a_plain_success_when_the_cache_was_told(signing_key):
    out = StringIO()

    call_command("keys", "revoke", signing_key.kid, stdout=out)

    assert json.loads(out.getvalue()) == {"kid": signing_key.kid, "state": KeyState.REVOKED}
    assert cache.get(VERSION_CACHE_KEY) is not None


def test_console_revoke_warns_when_the_cache_was_not_told(
    client, admin_user, signing_key, cache_down_for_writes
):
    console_login(client, admin_user)

    response = client.post(
        reverse("admin:tokens_signingkey_changelist"),
        {"action": "revoke_keys", "_selected_action": [signing_key.pk]},
    )

    assert response.status_code == 302
    shown = [(m.level_tag, m.message) for m in get_messages(response.wsgi_request)]
    assert shown == [
        ("warning", f"Revoked key {signing_key.kid}."),
        ("error", KEYRING_NOT_TOLD),
    ]
    assert SigningKey.objects.get(pk=signing_key.pk).state == KeyState.REVOKED
