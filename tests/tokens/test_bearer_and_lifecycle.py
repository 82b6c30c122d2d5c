import json

import pytest
import time_machine
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.test import APIRequestFactory

from audit.models import AuditEvent
from clients.machine_cache import machine_cache_key
from tests.fixtures.tokens import OTHER_API
from tests.tokens.helpers import token_request
from tokens.api.authentication import BearerTokenAuthentication
from tokens.models import IssuedToken
from tokens.tasks import issued_tokens_purge

pytestmark = pytest.mark.django_db


def _authenticate(header: str):
    request = APIRequestFactory().get("/api/audit/events", HTTP_AUTHORIZATION=header)
    return BearerTokenAuthentication().authenticate(request)


def test_bearer_authentication_admits_an_active_token_as_a_machine(
    client, signing_key, machine_factory
):
    registered = machine_factory(scopes=("audit:read",), default_scopes=("audit:read",))
    token = json.loads(token_request(client, registered).content)["access_token"]

    user, claims = _authenticate(f"Bearer {token}")

    assert (user.is_authenticated, user.is_staff, user.is_superuser) == (True, False, False)
    assert user.client_id == registered.client_id
    assert user.has_scope("audit:read")
    assert claims["scope"] == "audit:read"
    assert claims["sub"] == str(registered.machine.subject)


def test_bearer_authentication_refuses_revoked_expired_disabled_and_junk(
    client, signing_key, machine_factory
):
    registered = machine_factory()
    token = json.loads(token_request(client, registered).content)["access_token"]

    assert _authenticate("Basic abc") is None
    for header in ("Bearer ", "Bearer a b", "Bearer junk", "Bearer " + token[:-4] + "AAAA"):
        with pytest.raises(AuthenticationFailed):
            _authenticate(header)
    later = timezone.now() + timezone.timedelta(seconds=601)
    with time_machine.travel(later), pytest.raises(AuthenticationFailed):
        _authenticate(f"Bearer {token}")
    type(registered.machine).objects.filter(pk=registered.machine.pk).update(enabled=False)
    with pytest.raises(AuthenticationFailed):
        _authenticate(f"Bearer {token}")


def test_purge_deletes_expired_records_and_keeps_their_audit_events(
    client, signing_key, machine_factory
):
    short = machine_factory(name="short", ttl=60)
    long = machine_factory(name="long", ttl=3600)
    token_request(client, short)
    token_request(client, long)

    with time_machine.travel(timezone.now() + timezone.timedelta(seconds=120)):
        purged = issued_tokens_purge()

    assert purged == 1
    assert list(IssuedToken.objects.values_list("machine__name", flat=True)) == ["long"]
    assert AuditEvent.objects.filter(event_type="token.issued").count() == 2


def test_a_token_costs_at_most_two_sql_round_trips_on_a_warm_path(
    client, signing_key, machine_factory
):
    registered = machine_factory()
    token_request(client, registered)  # warms the machine cache and the keyring
    token_request(client, registered, scope="orders:read")

    with CaptureQueriesContext(connection) as queries:
        response = token_request(client, registered, scope="orders:read", resource=OTHER_API)

    assert response.status_code == 200
    statements = [q["sql"] for q in queries.captured_queries]
    if connection.vendor == "postgresql":
        assert len(statements) == 1
        assert statements[0].startswith("WITH t AS (INSERT INTO")
    else:
        # SQLite: BEGIN is implicit; two INSERTs in one transaction (one commit).
        assert [s.split()[0] for s in statements if s.split()[0] == "INSERT"] == ["INSERT"] * 2
        assert len(statements) <= 4


@pytest.mark.postgres
def test_a_cold_token_request_costs_at_most_two_sql_round_trips(
    client, signing_key, machine_factory
):
    """Issue 13: a fleet's requests are mostly cold (a machine the cache has not seen)."""
    warm = machine_factory(name="warm")
    cold = machine_factory(name="cold")
    token_request(client, warm)  # the keyring, and this process's batch of usage times
    cache.delete(machine_cache_key(cold.client_id))  # never seen: no entry

    with CaptureQueriesContext(connection) as queries:
        response = token_request(client, cold)

    assert response.status_code == 200
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) == 2
    assert statements[0].startswith("SELECT (SELECT coalesce(json_agg(")
    assert statements[1].startswith("WITH t AS (INSERT INTO")
    # The entry was stored: the next request of this machine reads no machine row.
    with CaptureQueriesContext(connection) as again:
        assert token_request(client, cold).status_code == 200
    assert [q["sql"][:6] for q in again.captured_queries] == ["WITH t"]


@pytest.mark.postgres
def test_a_changed_machine_costs_one_cold_request_then_is_warm_again(
    client, signing_key, machine_factory, django_capture_on_commit_callbacks
):
    """Issue 13: no period after a change during which the machine is read from the database."""
    from audit.context import Actor
    from clients.services import machine_update

    changed = machine_factory(name="changed")
    token_request(client, changed)
    token_request(client, changed)  # warm
    with django_capture_on_commit_callbacks(execute=True):
        machine_update(actor=Actor.cli("pytest"), machine=changed.machine, access_token_ttl=120)

    with CaptureQueriesContext(connection) as next_request:
        first = token_request(client, changed)
    with CaptureQueriesContext(connection) as after:
        second = token_request(client, changed)

    assert [json.loads(r.content)["expires_in"] for r in (first, second)] == [120, 120]
    assert [q["sql"][:6] for q in next_request.captured_queries] == ["SELECT", "WITH t"]
    assert [q["sql"][:6] for q in after.captured_queries] == ["WITH t"]


def test_beat_schedules_the_token_lifecycle_tasks(settings):
    from identity_portal.celery import app

    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}

    assert {"tokens.tasks.signing_keys_advance", "tokens.tasks.issued_tokens_purge"} <= scheduled
    assert scheduled <= set(app.tasks)


DEAD_REDIS = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        # Port 9 (discard) is closed on loopback: a real refused connection.
        "LOCATION": "redis://127.0.0.1:9/0",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}


def test_tokens_are_issued_and_verified_while_the_cache_is_down(
    client, signing_key, machine_factory, settings
):
    registered = machine_factory()
    settings.CACHES = DEAD_REDIS

    response = token_request(client, registered)

    assert response.status_code == 200
    token = json.loads(response.content)["access_token"]
    user, claims = _authenticate(f"Bearer {token}")
    assert user.client_id == registered.client_id
    assert IssuedToken.objects.get().jti == claims["jti"]
