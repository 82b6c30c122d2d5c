"""Attacks on machine authentication, scripted as an attacker would run them.

The attacker holds the database credentials or can write to Redis, but not
the server secrets (peppers, SECRET_KEY). Each attack must get the answer any
stranger gets, change nothing, and run no code of theirs.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import connection

from audit.models import AuditEvent
from clients.machine_cache import machine_cache_key
from clients.throttling import throttle_keys
from identity_portal.services import WORKER_HEARTBEAT_KEY
from tests.fixtures.tokens import API
from tests.tokens.helpers import FORM, basic, verify
from tokens.keyring import VERSION_CACHE_KEY
from tokens.models import IssuedToken

INVALID_CLIENT = (
    b'{"error": "invalid_client", "error_description": "Client authentication failed."}'
)


def _ask(client, client_id: str, secret: str, **params):
    body = "&".join(f"{k}={v}" for k, v in {"grant_type": "client_credentials", **params}.items())
    return client.post(
        "/oauth/token", data=body, content_type=FORM, HTTP_AUTHORIZATION=basic(client_id, secret)
    )


def _denials() -> list[tuple[str, str]]:
    return list(
        AuditEvent.objects.filter(event_type="token.denied")
        .order_by("id")
        .values_list("reason", "target_id")
    )


# --- a secret row moved to a more privileged machine ------------------------------


@pytest.mark.postgres
def test_a_secret_row_moved_with_sql_to_another_machine_authenticates_nothing(
    client, signing_key, machine_factory
):
    low = machine_factory(name="low", scopes=("orders:read",), default_scopes=("orders:read",))
    high = machine_factory(
        name="high", scopes=("orders:read", "orders:write"), default_scopes=("orders:write",)
    )
    with connection.cursor() as cursor:  # the attacker's one UPDATE
        cursor.execute(
            "UPDATE clients_clientsecret SET machine_id = %s WHERE machine_id = %s",
            [high.machine.pk, low.machine.pk],
        )
    cache.clear()  # the attacker waits for the cached entries to expire
    tokens_before = IssuedToken.objects.count()

    response = _ask(client, high.client_id, low.secret, scope="orders:write")

    assert response.status_code == 401
    assert response.content == INVALID_CLIENT
    assert response["WWW-Authenticate"] == 'Basic realm="Machine Identity Portal"'
    assert IssuedToken.objects.count() == tokens_before == 0
    assert _denials() == [("wrong_secret", high.client_id)]
    # The moved row works on its first machine no more either; high's own secret still does.
    assert _ask(client, low.client_id, low.secret).status_code == 401
    assert _ask(client, high.client_id, high.secret).status_code == 200


# --- a pickle planted in the cache ---------------------------------------------------


class _Payload:
    """What the attacker plants: unpickling it would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(key: str, value: bytes) -> None:
    """Write raw bytes under a cache key, as someone with access to Redis would."""
    cache._cache.get_client(write=True).set(cache.make_key(key), value)


@pytest.fixture
def payload(tmp_path) -> tuple[bytes, Path]:
    marker = tmp_path / "code-ran"
    return pickle.dumps(_Payload(marker)), marker


@pytest.mark.redis
def test_a_pickle_planted_under_an_unknown_client_ids_key_runs_nothing(
    client, signing_key, payload
):
    value, marker = payload
    _plant(machine_cache_key("no-such-client"), value)

    response = _ask(client, "no-such-client", "mip_cs_guess")

    assert not marker.exists()
    assert (response.status_code, response.content) == (401, INVALID_CLIENT)
    assert _denials() == [("unknown_client", "no-such-client")]


@pytest.mark.redis
def test_pickles_planted_under_a_machines_keys_run_nothing_and_tokens_are_issued(
    client, signing_key, machine_factory, payload
):
    value, marker = payload
    registered = machine_factory()
    # Django's own format too: a pickled bytes value, as the previous release stored it.
    _plant(machine_cache_key(registered.client_id), pickle.dumps(value))
    _plant(VERSION_CACHE_KEY, value)
    keys = throttle_keys(client_id=registered.client_id, ip="127.0.0.1")
    for key in (*keys.blocks, keys.fail_pair):
        _plant(key, value)

    response = _ask(client, registered.client_id, registered.secret)

    assert not marker.exists()
    assert response.status_code == 200
    claims = verify(json.loads(response.content)["access_token"], audience=API)
    assert claims["client_id"] == registered.client_id
    assert IssuedToken.objects.count() == 1


@pytest.mark.redis
def test_a_pickle_planted_under_a_django_cache_key_runs_nothing(client, payload, db):
    value, marker = payload
    _plant(WORKER_HEARTBEAT_KEY, value)

    response = client.get("/readyz")

    assert not marker.exists()
    assert json.loads(response.content)["worker_last_seen"] is None
    assert cache.get(WORKER_HEARTBEAT_KEY, "a miss") == "a miss"


@pytest.mark.redis
@pytest.mark.parametrize(
    "value",
    [b"garbage", b"~1b" + b"\x00" * 32 + b"{}", b"~1j" + b"\x00" * 32 + b'{"forged": true}'],
    ids=["garbage", "forged-bytes", "forged-json"],
)
def test_a_malformed_or_forged_entry_is_a_miss(client, signing_key, machine_factory, value):
    registered = machine_factory()
    _plant(machine_cache_key(registered.client_id), value)

    good = _ask(client, registered.client_id, registered.secret)
    bad = _ask(client, registered.client_id, "mip_cs_wrong")

    assert good.status_code == 200
    assert (bad.status_code, bad.content) == (401, INVALID_CLIENT)
    assert _denials() == [("wrong_secret", registered.client_id)]
    assert cache._cache.get_client().get(
        cache.make_key(machine_cache_key(registered.client_id))
    ) == (
        value  # not ours, so never overwritten by a reader
    )
