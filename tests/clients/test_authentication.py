"""client_authenticate: who a machine is, from cache, with every denial audited."""

import time

import pytest
from django.core.cache import cache
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from redis.exceptions import ConnectionError as RedisConnectionError

from audit.choices import EventType
from audit.context import RequestContext
from audit.models import AuditEvent
from clients import machine_cache
from clients.authentication import (
    ClientAuthError,
    ClientCredentials,
    client_authenticate,
)
from clients.machine_cache import (
    machine_auth_entry_decode,
    machine_auth_entry_encode,
    machine_auth_entry_get,
    machine_auth_entry_load,
    machine_auth_entry_resolve,
    machine_cache_invalidate,
    machine_cache_key,
    machine_generation_key,
)
from clients.models import ClientSecret, Machine
from clients.services import (
    machine_disable,
    machine_update,
    secret_revoke,
)


def _creds(client_id, secret, method="client_secret_basic"):
    return ClientCredentials(client_id=client_id, secret=secret, method=method)


def _denials():
    return list(
        AuditEvent.objects.filter(event_type=EventType.TOKEN_DENIED).values_list(
            "reason", "source_ip", "target_id", "outcome"
        )
    )


def test_good_secret_returns_the_machine(machine_and_secret, request_ctx):
    machine, raw = machine_and_secret

    found = client_authenticate(
        credentials=_creds(machine.client_id, raw), context=request_ctx
    ).machine

    assert found.pk == machine.pk
    assert found.client_id == machine.client_id


def test_the_authenticated_client_names_the_method_that_verified_it(
    machine_and_secret, request_ctx
):
    machine, raw = machine_and_secret

    methods = [
        client_authenticate(
            credentials=_creds(machine.client_id, raw, method), context=request_ctx
        ).method
        for method in ("client_secret_basic", "client_secret_post")
    ]

    assert methods == ["client_secret_basic", "client_secret_post"]


def test_warm_cache_costs_no_sql_and_carries_scopes_and_audiences(machine_and_secret, request_ctx):
    machine, raw = machine_and_secret
    client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)

    with CaptureQueriesContext(connection) as queries:
        found = client_authenticate(
            credentials=_creds(machine.client_id, raw), context=request_ctx
        ).machine
        scopes = [scope.name for scope in found.allowed_scopes.all()]
        defaults = [scope.name for scope in found.default_scopes.all()]
        audiences = [audience.uri for audience in found.allowed_audiences.all()]
        default_audience = found.default_audience.uri

    assert len(queries) == 0
    assert (scopes, defaults, audiences, default_audience) == (
        ["read"],
        ["read"],
        ["https://api.example"],
        "https://api.example",
    )


def test_last_used_is_written_once_per_interval(machine_and_secret, request_ctx, time_machine):
    machine, raw = machine_and_secret
    time_machine.move_to("2030-01-01 12:00:00+00:00", tick=False)

    with CaptureQueriesContext(connection) as first:
        client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)
    time_machine.move_to("2030-01-01 12:00:30+00:00", tick=False)
    with CaptureQueriesContext(connection) as second:
        client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)
    machine.refresh_from_db()
    secret = ClientSecret.objects.get(machine=machine)

    updates = [q["sql"] for q in first.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 2
    assert [q for q in second.captured_queries if q["sql"].startswith("UPDATE")] == []
    assert machine.last_used_at.isoformat() == "2030-01-01T12:00:00+00:00"
    assert machine.last_used_ip == "203.0.113.7"
    assert secret.last_used_at.isoformat() == "2030-01-01T12:00:00+00:00"


def test_unknown_client_and_wrong_secret_fail_the_same_way(machine_and_secret, request_ctx):
    machine, raw = machine_and_secret

    with pytest.raises(ClientAuthError) as unknown:
        client_authenticate(credentials=_creds("no-such-client", raw), context=request_ctx)
    with pytest.raises(ClientAuthError) as wrong:
        client_authenticate(
            credentials=_creds(machine.client_id, raw[:-1] + "x"), context=request_ctx
        )

    assert type(unknown.value) is type(wrong.value)
    assert (str(unknown.value), unknown.value.args) == (str(wrong.value), wrong.value.args)
    assert vars(unknown.value).keys() == vars(wrong.value).keys() == {"reason", "description"}
    assert (unknown.value.error, unknown.value.status) == ("invalid_client", 401)
    assert (unknown.value.reason, wrong.value.reason) == ("unknown_client", "wrong_secret")
    assert _denials() == [
        ("unknown_client", "203.0.113.7", "no-such-client", "failure"),
        ("wrong_secret", "203.0.113.7", machine.client_id, "failure"),
    ]


def test_a_form_secret_failure_is_the_same_invalid_client(machine_and_secret, request_ctx):
    machine, _ = machine_and_secret

    with pytest.raises(ClientAuthError) as raised:
        client_authenticate(
            credentials=_creds(machine.client_id, "nope", "client_secret_post"),
            context=request_ctx,
        )

    assert (raised.value.error, raised.value.description) == (
        "invalid_client",
        "Client authentication failed.",
    )


def test_revoked_secret_is_denied_with_its_reason(
    machine_and_secret, request_ctx, cli_actor, django_capture_on_commit_callbacks
):
    machine, raw = machine_and_secret
    client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)
    with django_capture_on_commit_callbacks(execute=True):
        secret_revoke(actor=cli_actor, secret=ClientSecret.objects.get(machine=machine))

    with pytest.raises(ClientAuthError) as raised:
        client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)

    assert raised.value.reason == "secret_revoked"
    assert _denials()[-1][0] == "secret_revoked"


def test_disabled_machine_is_denied(
    machine_and_secret, request_ctx, cli_actor, django_capture_on_commit_callbacks
):
    machine, raw = machine_and_secret
    client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)
    with django_capture_on_commit_callbacks(execute=True):
        machine_disable(actor=cli_actor, machine=machine)

    with pytest.raises(ClientAuthError) as raised:
        client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)

    assert raised.value.reason == "machine_disabled"


def test_ip_allow_list(machine_and_secret, cli_actor):
    machine, raw = machine_and_secret
    machine_update(actor=cli_actor, machine=machine, ip_allowlist=["10.0.0.0/8", "2001:db8::/32"])

    inside = client_authenticate(
        credentials=_creds(machine.client_id, raw), context=RequestContext(source_ip="10.1.2.3")
    ).machine
    inside_v6 = client_authenticate(
        credentials=_creds(machine.client_id, raw), context=RequestContext(source_ip="2001:db8::1")
    ).machine
    with pytest.raises(ClientAuthError) as outside:
        client_authenticate(
            credentials=_creds(machine.client_id, raw),
            context=RequestContext(source_ip="192.0.2.1"),
        )

    assert (inside.pk, inside_v6.pk) == (machine.pk, machine.pk)
    assert outside.value.reason == "ip_not_allowed"
    assert _denials() == [("ip_not_allowed", "192.0.2.1", machine.client_id, "failure")]


@pytest.mark.parametrize("source_ip", [None, "", "not-an-address", "10.0.0.1%eth0", "unix:/run/s"])
def test_an_allow_list_refuses_a_missing_or_unparseable_source_address(
    machine_and_secret, cli_actor, source_ip
):
    from clients.authentication import _ip_allowed

    machine, _ = machine_and_secret
    machine_update(actor=cli_actor, machine=machine, ip_allowlist=["0.0.0.0/0", "::/0"])
    entry = machine_auth_entry_load(machine.client_id)

    assert _ip_allowed("192.0.2.1", entry) is True
    assert _ip_allowed(source_ip, entry) is False


@pytest.mark.parametrize("remote_addr", [None, ""])
def test_an_allow_list_refuses_a_token_request_without_a_peer_address(
    client, machine_and_secret, cli_actor, remote_addr
):
    from tests.tokens.helpers import FORM, basic
    from tokens.models import IssuedToken

    machine, raw = machine_and_secret
    machine_update(actor=cli_actor, machine=machine, ip_allowlist=["0.0.0.0/0", "::/0"])

    response = client.post(
        "/oauth/token",
        data="grant_type=client_credentials",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(machine.client_id, raw),
        REMOTE_ADDR=remote_addr,
    )

    assert response.status_code == 401
    assert response.content == (
        b'{"error": "invalid_client", "error_description": "Client authentication failed."}'
    )
    assert IssuedToken.objects.count() == 0
    assert _denials() == [("ip_not_allowed", None, machine.client_id, "failure")]
    assert not Machine.objects.get(pk=machine.pk).last_used_at


def test_max_secret_age_expires_a_secret(machine_and_secret, request_ctx, cli_actor, time_machine):
    machine, raw = machine_and_secret
    machine_update(actor=cli_actor, machine=machine, max_secret_age=3600)
    time_machine.move_to(ClientSecret.objects.get(machine=machine).created_at, tick=False)
    time_machine.shift(3599)
    client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)

    time_machine.shift(2)
    with pytest.raises(ClientAuthError) as raised:
        client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)

    assert raised.value.reason == "secret_expired"


def test_secret_pasted_as_client_id_is_not_audited_in_clear(machine_and_secret, request_ctx):
    _, raw = machine_and_secret

    with pytest.raises(ClientAuthError):
        client_authenticate(credentials=_creds(raw, raw), context=request_ctx)

    event = AuditEvent.objects.get(event_type=EventType.TOKEN_DENIED)
    assert (event.actor_id, event.target_id, event.actor_display) == (
        "[redacted]",
        "[redacted]",
        "[redacted]",
    )


def test_a_change_is_not_seen_before_commit(
    machine_and_secret, request_ctx, cli_actor, django_capture_on_commit_callbacks
):
    machine, raw = machine_and_secret
    client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        machine_update(actor=cli_actor, machine=machine, access_token_ttl=120)
    found = client_authenticate(
        credentials=_creds(machine.client_id, raw), context=request_ctx
    ).machine

    assert len(callbacks) == 1
    assert found.access_token_ttl == 600


def test_a_change_invalidates_the_cached_machine(
    machine_and_secret, request_ctx, cli_actor, django_capture_on_commit_callbacks
):
    machine, raw = machine_and_secret
    client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)

    with django_capture_on_commit_callbacks(execute=True):
        machine_update(actor=cli_actor, machine=machine, access_token_ttl=120)
    found = client_authenticate(
        credentials=_creds(machine.client_id, raw), context=request_ctx
    ).machine

    assert found.access_token_ttl == 120


def test_a_deleted_machine_is_unknown(machine_and_secret, request_ctx, cli_actor):
    from clients.services import machine_delete

    machine, raw = machine_and_secret
    machine_delete(actor=cli_actor, machine=machine)

    with pytest.raises(ClientAuthError) as raised:
        client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)

    assert raised.value.reason == "unknown_client"
    assert Machine.objects.filter(pk=machine.pk, enabled=False).exists()


def _load_then(monkeypatch, change):
    """Interleave a change between a reader's database read and its cache write.

    The next ``machine_auth_entry_load`` reads the rows, then ``change`` commits
    (its after-commit invalidation runs), then the reader goes on with what it
    read: the race a stale entry would come from, without a sleep.
    """
    load = machine_cache.machine_auth_entry_load

    def load_then_change(client_id):
        monkeypatch.setattr(machine_cache, "machine_auth_entry_load", load)  # once
        read = load(client_id)
        change()
        return read

    monkeypatch.setattr(machine_cache, "machine_auth_entry_load", load_then_change)


def _counting_loads(monkeypatch) -> list[str]:
    """Each client_id read from the database from now on, in order."""
    loads = []
    load = machine_cache.machine_auth_entry_load

    def counted(client_id):
        loads.append(client_id)
        return load(client_id)

    monkeypatch.setattr(machine_cache, "machine_auth_entry_load", counted)
    return loads


@pytest.mark.redis
def test_redis_commands_of_a_warm_a_cold_and_a_changed_machines_request(
    machine_and_secret,
    request_ctx,
    cli_actor,
    django_capture_on_commit_callbacks,
    monkeypatch,
    time_machine,
):
    from redis.connection import AbstractConnection

    machine, raw = machine_and_secret
    time_machine.move_to("2026-01-05 12:00:00+00:00", tick=False)
    sent = []
    send_command = AbstractConnection.send_command

    def recorded(self, *args, **kwargs):
        sent.append(str(args[0]))
        return send_command(self, *args, **kwargs)

    def commands_of(call) -> list[str]:
        sent.clear()
        call()
        return list(sent)

    def request():
        client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)

    machine_auth_entry_get("mip_ci_someone_else")  # this thread's connections are open
    monkeypatch.setattr(AbstractConnection, "send_command", recorded)
    cold = commands_of(request)
    warm = commands_of(request)
    with django_capture_on_commit_callbacks(execute=True):
        machine_update(actor=cli_actor, machine=machine, access_token_ttl=120)
    changed = commands_of(request)
    warm_again = commands_of(request)

    # One MGET (entry, generation, throttle state); a miss adds one SET of the entry.
    assert (cold, warm, changed, warm_again) == (
        ["MGET", "SET"],
        ["MGET"],
        ["MGET", "SET"],
        ["MGET"],
    )


def test_a_reader_that_read_before_a_disable_stores_an_entry_no_request_serves(
    machine_and_secret, request_ctx, cli_actor, django_capture_on_commit_callbacks, monkeypatch
):
    machine, raw = machine_and_secret
    key = machine_cache_key(machine.client_id)

    def disable():
        with django_capture_on_commit_callbacks(execute=True):
            machine_disable(actor=cli_actor, machine=Machine.objects.get(pk=machine.pk))

    _load_then(monkeypatch, disable)
    # The request in flight read the machine before the disable: it is answered as the
    # machine was, and it stores what it read, after the change committed.
    in_flight = client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)
    stored = machine_auth_entry_decode(cache.get(key))
    generation = cache.get(machine_generation_key(machine.client_id))
    loads = _counting_loads(monkeypatch)

    with pytest.raises(ClientAuthError) as next_request:
        client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)
    with pytest.raises(ClientAuthError) as warm_request:
        client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)

    assert in_flight.machine.enabled is True
    assert (stored.machine.enabled, stored.generation) == (True, "")
    assert len(generation) == 32
    assert next_request.value.reason == warm_request.value.reason == "machine_disabled"
    assert loads == [machine.client_id]  # the next request reloaded once, then cached
    assert machine_auth_entry_decode(cache.get(key)).machine.enabled is False
    assert machine_auth_entry_decode(cache.get(key)).generation == generation


def test_a_reader_that_read_before_a_revoke_cannot_keep_the_secret_alive(
    machine_and_secret, request_ctx, cli_actor, django_capture_on_commit_callbacks, monkeypatch
):
    machine, raw = machine_and_secret
    client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)
    with django_capture_on_commit_callbacks(execute=True):
        machine_update(actor=cli_actor, machine=machine, access_token_ttl=120)  # a generation

    def revoke():
        with django_capture_on_commit_callbacks(execute=True):
            secret_revoke(actor=cli_actor, secret=ClientSecret.objects.get(machine=machine))

    _load_then(monkeypatch, revoke)
    client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)
    with pytest.raises(ClientAuthError) as raised:
        client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)

    assert raised.value.reason == "secret_revoked"


def test_a_change_is_seen_by_the_next_request_which_caches_it(
    machine_and_secret, request_ctx, cli_actor, django_capture_on_commit_callbacks, monkeypatch
):
    machine, raw = machine_and_secret
    client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)
    loads = _counting_loads(monkeypatch)

    with django_capture_on_commit_callbacks(execute=True):
        machine_update(actor=cli_actor, machine=machine, access_token_ttl=120)
    ttls = [
        client_authenticate(
            credentials=_creds(machine.client_id, raw), context=request_ctx
        ).machine.access_token_ttl
        for _ in range(3)
    ]

    assert ttls == [120, 120, 120]
    assert loads == [machine.client_id]


def test_a_registered_machine_is_cached_from_its_first_request(
    cli_actor,
    scope_read,
    audience_api,
    request_ctx,
    django_capture_on_commit_callbacks,
    monkeypatch,
):
    from clients.services import machine_register

    with django_capture_on_commit_callbacks(execute=True):
        machine, raw = machine_register(
            actor=cli_actor, name="new", scopes=["read"], audiences=["https://api.example"]
        )
    loads = _counting_loads(monkeypatch)

    found = [
        client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)
        for _ in range(3)
    ]

    assert [m.machine.pk for m in found] == [machine.pk] * 3
    assert loads == [machine.client_id]


def test_an_unknown_client_id_is_remembered_until_its_generation_changes(
    db, request_ctx, monkeypatch, django_capture_on_commit_callbacks
):
    loads = _counting_loads(monkeypatch)
    for _ in range(2):
        with pytest.raises(ClientAuthError):
            client_authenticate(credentials=_creds("mip_ci_nobody", "x"), context=request_ctx)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        machine_cache_invalidate(client_id="mip_ci_nobody")
    with pytest.raises(ClientAuthError) as raised:
        client_authenticate(credentials=_creds("mip_ci_nobody", "x"), context=request_ctx)

    assert loads == ["mip_ci_nobody", "mip_ci_nobody"]
    assert raised.value.reason == "unknown_client"
    assert cache.get(machine_cache_key("mip_ci_nobody"))[:2] == [
        "missing",
        cache.get(machine_generation_key("mip_ci_nobody")),
    ]


def test_authentication_works_while_the_cache_is_down(machine_and_secret, request_ctx, settings):
    machine, raw = machine_and_secret
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }

    found = client_authenticate(
        credentials=_creds(machine.client_id, raw), context=request_ctx
    ).machine
    with pytest.raises(ClientAuthError) as raised:
        client_authenticate(credentials=_creds(machine.client_id, "wrong"), context=request_ctx)

    assert found.pk == machine.pk
    assert raised.value.reason == "wrong_secret"
    assert _denials()[-1][0] == "wrong_secret"


def test_an_unknown_client_id_is_remembered_at_most_its_miss_ttl(
    db, request_ctx, monkeypatch, time_machine
):
    loads = _counting_loads(monkeypatch)
    time_machine.move_to("2026-01-05 12:00:00+00:00", tick=False)
    machine_auth_entry_get("mip_ci_nobody")
    marker = cache.get(machine_cache_key("mip_ci_nobody"))

    # A second before the marker's 30 s end: whatever the cache backend's own expiry
    # does at the boundary (Redis keeps real time, locmem and file caches move with
    # time-machine), the marker answers.
    time_machine.move_to("2026-01-05 12:00:29+00:00", tick=False)
    machine_auth_entry_get("mip_ci_nobody")
    cache.set(machine_cache_key("mip_ci_nobody"), marker, 300)  # replayed past its life
    time_machine.move_to("2026-01-05 12:00:31+00:00", tick=False)
    machine_auth_entry_get("mip_ci_nobody")

    assert marker == ["missing", "", 1767614400.0]
    assert loads == ["mip_ci_nobody", "mip_ci_nobody"]


def test_an_entry_is_served_at_most_its_ttl_after_its_generation_was_read(
    machine_and_secret, request_ctx, monkeypatch, time_machine
):
    machine, raw = machine_and_secret
    time_machine.move_to("2026-01-05 12:00:00+00:00", tick=False)
    client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)
    stored = cache.get(machine_cache_key(machine.client_id))
    loads = _counting_loads(monkeypatch)

    # Whatever the cache says of its expiry (a Redis writer can replay the bytes). A
    # second before the end: locmem and file caches expire with time-machine, Redis not.
    time_machine.move_to("2026-01-05 12:04:59+00:00", tick=False)
    client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)
    cache.set(machine_cache_key(machine.client_id), stored, 300)
    time_machine.move_to("2026-01-05 12:05:01+00:00", tick=False)
    client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)

    assert machine_auth_entry_decode(stored).generation_read_at == 1767614400.0
    assert loads == [machine.client_id]


def test_a_replayed_entry_serves_a_disabled_machine_no_longer_than_its_ttl(
    machine_and_secret, request_ctx, cli_actor, django_capture_on_commit_callbacks, time_machine
):
    machine, raw = machine_and_secret
    key, generation_key = (
        machine_cache_key(machine.client_id),
        machine_generation_key(machine.client_id),
    )
    time_machine.move_to("2026-01-05 12:00:00+00:00", tick=False)
    client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)
    captured = cache.get(key)  # someone who can read and write Redis keeps the entry
    with django_capture_on_commit_callbacks(execute=True):
        machine_disable(actor=cli_actor, machine=machine)

    outcomes = []
    for moment in ("12:04:59", "12:05:01"):
        time_machine.move_to(f"2026-01-05 {moment}+00:00", tick=False)
        cache.set(key, captured, 300)  # ...and puts it back with its generation (none)
        cache.delete(generation_key)
        try:
            client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)
            outcomes.append("issued")
        except ClientAuthError as refused:
            outcomes.append(refused.reason)

    # The documented bound (MACHINE_CACHE_TTL after the entry was read), not forever.
    assert outcomes == ["issued", "machine_disabled"]


def test_a_reader_stalled_past_the_entry_lifetime_stores_nothing(machine_and_secret, time_machine):
    machine, _ = machine_and_secret
    time_machine.move_to("2026-01-05 12:00:00+00:00", tick=False)
    read_at = time.time()
    time_machine.move_to("2026-01-05 12:04:59.5+00:00", tick=False)

    found = machine_auth_entry_resolve(machine.client_id, None, None, read_at=read_at)

    assert found.machine.pk == machine.pk
    assert cache.get(machine_cache_key(machine.client_id)) is None


class _FlakyCache:
    """The real cache whose next ``failures`` writes fail as a Redis hiccup would."""

    def __init__(self, failures: int):
        self.failures = failures

    def set(self, *args, **kwargs):
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("Connection reset by peer")
        return cache.set(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(cache, name)


def test_the_generation_write_is_retried_once(
    machine_and_secret, cli_actor, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    machine, _ = machine_and_secret
    generation_key = machine_generation_key(machine.client_id)
    monkeypatch.setattr("clients.machine_cache.cache", _FlakyCache(failures=1))

    with django_capture_on_commit_callbacks(execute=True):
        secret_revoke(actor=cli_actor, secret=ClientSecret.objects.get(machine=machine))

    assert len(cache.get(generation_key)) == 32
    assert [r.levelname for r in caplog.records if r.name == "clients.machine_cache"] == ["WARNING"]


def test_a_failed_generation_write_is_logged_as_an_error(
    machine_and_secret, cli_actor, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    machine, raw = machine_and_secret
    monkeypatch.setattr("clients.machine_cache.cache", _FlakyCache(failures=2))

    with django_capture_on_commit_callbacks(execute=True):
        secret_revoke(actor=cli_actor, secret=ClientSecret.objects.get(machine=machine))

    records = [r for r in caplog.records if r.name == "clients.machine_cache"]
    assert [r.levelname for r in records] == ["WARNING", "ERROR"]
    assert records[-1].getMessage() == (
        "machine cache invalidation failed, a stale entry may live up to 300 s: ConnectionError"
    )
    assert raw not in caplog.text and machine.client_id not in caplog.text
    assert ClientSecret.objects.get(machine=machine).revoked_at is not None


def test_equal_cached_bytes_decode_once_and_a_change_decodes_anew(
    machine_and_secret, cli_actor, django_capture_on_commit_callbacks, time_machine
):
    machine, _ = machine_and_secret
    before = machine_auth_entry_load(machine.client_id)
    raw = machine_auth_entry_encode(before)

    first = machine_auth_entry_decode(raw)
    # Equal bytes fetched again (a new bytes object each time): the same decoded entry.
    assert machine_auth_entry_decode(bytes(bytearray(raw))) is first
    assert first.machine.access_token_ttl == before.machine.access_token_ttl

    with django_capture_on_commit_callbacks(execute=True):
        machine_update(actor=cli_actor, machine=machine, access_token_ttl=77)
    changed = machine_auth_entry_encode(machine_auth_entry_load(machine.client_id))

    assert changed != raw
    assert machine_auth_entry_decode(changed).machine.access_token_ttl == 77
    assert machine_auth_entry_decode(raw) is first  # the old bytes still decode as before


def test_the_cache_holds_the_encoded_entry_and_serves_it(machine_and_secret, time_machine):
    machine, _ = machine_and_secret
    key = machine_cache_key(machine.client_id)
    time_machine.move_to("2026-01-05 12:00:00+00:00", tick=False)
    assert cache.get(key) is None

    loaded = machine_auth_entry_get(machine.client_id)  # a miss: read and cached
    cached = cache.get(key)

    assert isinstance(cached, bytes)
    assert machine_auth_entry_decode(cached).machine.pk == loaded.machine.pk == machine.pk
    assert machine_auth_entry_get(machine.client_id) is machine_auth_entry_decode(cached)


def test_a_revocation_wins_over_an_entry_decoded_and_memoised_by_earlier_requests(
    machine_and_secret, request_ctx, cli_actor, django_capture_on_commit_callbacks, time_machine
):
    machine, raw = machine_and_secret
    time_machine.move_to("2026-01-05 12:00:00+00:00", tick=False)
    for _ in range(3):  # a miss fills the cache, the next reads decode and memoise it
        client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)
    assert isinstance(cache.get(machine_cache_key(machine.client_id)), bytes)

    with django_capture_on_commit_callbacks(execute=True):
        secret_revoke(actor=cli_actor, secret=ClientSecret.objects.get(machine=machine))
    with pytest.raises(ClientAuthError) as raised:
        client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)

    assert raised.value.reason == "secret_revoked"


def test_a_change_tombstones_the_previous_cache_version_and_renews_the_generation(
    machine_and_secret, cli_actor, django_capture_on_commit_callbacks
):
    machine, _ = machine_and_secret
    previous = machine_cache_key(machine.client_id, 5)
    cache.set(previous, "an entry a node of the previous release cached", 300)
    generations = []

    for ttl in (60, 61):
        with django_capture_on_commit_callbacks(execute=True):
            machine_update(actor=cli_actor, machine=machine, access_token_ttl=ttl)
        generations.append(cache.get(machine_generation_key(machine.client_id)))

    assert machine_cache_key(machine.client_id) != previous
    assert cache.get(previous) == "tombstone"
    assert [len(g) for g in generations] == [32, 32]
    assert generations[0] != generations[1]


def test_uses_of_several_machines_are_written_in_one_batch_per_interval(
    machine_and_secret, request_ctx, time_machine, cli_actor
):
    from clients.services import machine_register

    machine, raw = machine_and_secret
    other, other_raw = machine_register(
        actor=cli_actor, name="other-job", scopes=["read"], audiences=["https://api.example"]
    )
    time_machine.move_to("2030-01-01 12:00:00+00:00", tick=False)
    client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)
    time_machine.move_to("2030-01-01 12:00:05+00:00", tick=False)

    with CaptureQueriesContext(connection) as noted:
        client_authenticate(credentials=_creds(other.client_id, other_raw), context=request_ctx)
    time_machine.move_to("2030-01-01 12:01:01+00:00", tick=False)
    with CaptureQueriesContext(connection) as flushed:
        client_authenticate(credentials=_creds(machine.client_id, raw), context=request_ctx)

    assert [q for q in noted.captured_queries if q["sql"].startswith("UPDATE")] == []
    updates = [q["sql"] for q in flushed.captured_queries if q["sql"].startswith("UPDATE")]
    used = dict(Machine.objects.values_list("name", "last_used_at"))
    secrets_used = dict(ClientSecret.objects.values_list("machine__name", "last_used_at"))
    if connection.vendor == "postgresql":
        assert len(updates) == 2  # one per table, whatever the batch size
    else:
        assert len(updates) == 4  # SQLite: one per row, no round trips to save
    assert {k: v.isoformat() for k, v in used.items()} == {
        "billing-job": "2030-01-01T12:01:01+00:00",
        "other-job": "2030-01-01T12:00:05+00:00",
    }
    assert {k: v.isoformat() for k, v in secrets_used.items()} == {
        "billing-job": "2030-01-01T12:01:01+00:00",
        "other-job": "2030-01-01T12:00:05+00:00",
    }


def test_a_method_that_names_no_machine_never_authenticates(db, monkeypatch):
    """Defence in depth for the method registry: a method whose credentials name no
    machine (``client_id_for`` None) and that answers success is still refused."""
    from clients.auth_methods import AuthMethod, Credentials, Verification

    class Lenient(AuthMethod):
        name = "lenient_for_test"
        label = "says yes"

        def client_id_for(self, credentials):
            return None

        def verify(self, **kwargs):
            return Verification(details={"said": "yes"})

    monkeypatch.setattr("clients.authentication.auth_method", lambda name: Lenient())

    with pytest.raises(ClientAuthError) as raised:
        client_authenticate(
            credentials=Credentials(client_id=None, method="lenient_for_test"),
            context=RequestContext(source_ip="192.0.2.1"),
        )

    assert raised.value.reason == "unknown_client"
    denied = AuditEvent.objects.get(event_type=EventType.TOKEN_DENIED)
    assert (denied.reason, denied.details) == (
        "unknown_client",
        {"method": "lenient_for_test", "said": "yes"},
    )
    # No machine named, none recorded: no placeholder an auditor could take for a client_id.
    assert (
        denied.actor_kind,
        denied.actor_id,
        denied.actor_display,
        denied.target_kind,
        denied.target_id,
        denied.target_display,
    ) == ("anonymous", "", "", "machine", "", "")
