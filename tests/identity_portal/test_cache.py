"""The portal's cache backends: authenticated values that never run code, a fast get_many."""

from __future__ import annotations

import hmac
import logging
import os
import pickle
import threading
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.cache import cache

from identity_portal.cache import (
    MISS,
    FileBasedCache,
    RedisCache,
    SignedSerializer,
    cache_backends_check,
)


def _backend(location: str) -> RedisCache:
    return RedisCache(location, {"KEY_PREFIX": "mip-test", "OPTIONS": {"socket_timeout": 0.5}})


@pytest.mark.redis
def test_get_many_answers_as_djangos_get_many():
    cache.set_many({"a": 1, "b": "two", "c": {"three": [3]}})
    cache.set("other-version", 4, version=2)

    got = cache.get_many(["a", "b", "c", "missing", "other-version"])

    assert got == {"a": 1, "b": "two", "c": {"three": [3]}}
    assert cache.get_many(["other-version"], version=2) == {"other-version": 4}
    assert cache.get_many([]) == {}
    assert cache.incr("a") == 2  # ints stay raw integers in Redis, as Django stores them
    assert cache.get_many(["a"]) == {"a": 2}


@pytest.mark.redis
def test_a_killed_connection_is_replaced_and_the_read_retried():
    cache.set("kept", "value")
    assert cache.get_many(["kept"]) == {"kept": "value"}  # this thread's connection is open
    own = cache._cache._local.held[1][0]
    own.send_command("CLIENT", "ID")
    client_id = own.read_response()
    admin = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])

    # Only this connection: the Redis server may be shared with other tests' clients.
    assert admin.client_kill_filter(_id=client_id) == 1
    assert cache.get_many(["kept"]) == {"kept": "value"}
    assert cache._cache._local.held[1][0] is own  # the same connection object, reconnected


@pytest.mark.redis
def test_writes_go_on_the_threads_connection_and_answer_as_djangos():
    admin = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    cache.delete_many(["w-add", "w-set", "w-forever"])

    added = [cache.add("w-add", "first", 60), cache.add("w-add", "second", 60)]
    cache.set("w-set", {"x": 1}, 30)
    cache.set("w-forever", "kept", None)
    own = cache._cache._local.held[1][0]
    own.send_command("CLIENT", "ID")
    client_id = own.read_response()
    assert admin.client_kill_filter(_id=client_id) == 1
    cache.set("w-set", {"x": 2}, 30)  # the killed connection is replaced, the write retried

    assert added == [True, False]
    assert cache.get_many(["w-add", "w-set", "w-forever"]) == {
        "w-add": "first",
        "w-set": {"x": 2},
        "w-forever": "kept",
    }
    prefixed = [cache.make_key(k) for k in ("w-add", "w-set", "w-forever")]
    assert [admin.ttl(k) for k in prefixed] == [60, 30, -1]
    assert cache._cache._local.held[1][0] is own
    cache.delete_many(["w-add", "w-set", "w-forever"])


@pytest.mark.redis
def test_add_takes_a_key_once_with_its_timeout_on_the_threads_own_connection():
    cache.delete("taken")
    assert cache.get_many(["taken"]) == {}  # this thread's connection is open
    own = cache._cache._local.held[1][0]
    admin = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])

    assert cache.add("taken", 1, 60) is True
    assert cache.add("taken", 2, 60) is False
    assert cache.add("taken", {"other": "value"}, 60) is False

    assert cache.get("taken") == 1
    assert 0 < admin.ttl(cache.make_key("taken")) <= 60
    assert cache._cache._local.held[1][0] is own  # no pool checkout
    assert cache.add("forever", "v", None) is True  # without a timeout: Django's own path
    assert admin.ttl(cache.make_key("forever")) == -1
    cache.delete_many(["taken", "forever"])


@pytest.mark.redis
def test_an_add_on_a_killed_connection_is_sent_again_once():
    cache.delete("after-kill")
    cache.get_many(["after-kill"])
    own = cache._cache._local.held[1][0]
    own.send_command("CLIENT", "ID")
    client_id = own.read_response()
    admin = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    assert admin.client_kill_filter(_id=client_id) == 1

    assert cache.add("after-kill", 1, 60) is True
    assert cache.add("after-kill", 1, 60) is False
    cache.delete("after-kill")


@pytest.mark.redis
def test_an_add_whose_answer_is_lost_is_not_sent_again(monkeypatch):
    cache.delete("lost-answer")
    cache.get_many(["lost-answer"])
    own = cache._cache._local.held[1][0]
    sent = []
    real_send = own.send_command

    def send(*args, **kwargs):
        sent.append(args[0])
        return real_send(*args, **kwargs)

    def lost(*args, **kwargs):
        raise redis.exceptions.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(own, "send_command", send)
    monkeypatch.setattr(own, "read_response", lost)

    with pytest.raises(redis.exceptions.ConnectionError):
        cache.add("lost-answer", 1, 60)

    # Sent once and applied: resending would have answered "taken" for this very call.
    assert sent == ["SET"]
    monkeypatch.undo()
    assert cache.add("lost-answer", 1, 60) is False
    cache.delete("lost-answer")


def test_an_unreachable_redis_raises_a_redis_error_for_the_caller_to_handle():
    backend = _backend("redis://127.0.0.1:1/0")  # nothing listens there
    with pytest.raises(redis.exceptions.ConnectionError):
        backend.get_many(["anything"])


@pytest.mark.redis
def test_each_thread_reads_on_a_connection_of_its_own():
    backend = _backend(settings.CACHES["default"]["LOCATION"])
    backend.set("k", "v")
    connections = {}

    def read(name):
        assert backend.get_many(["k"]) == {"k": "v"}
        connections[name] = backend._cache._local.held[1][0]

    threads = [threading.Thread(target=read, args=(n,)) for n in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    read("main")

    assert len({id(c) for c in connections.values()}) == 3
    backend.delete("k")


# --- nothing read from the cache runs code ----------------------------------------


class _WritesAMarker:
    """A pickle that, if ever unpickled, creates a file: proof that code ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _planted(tmp_path: Path) -> tuple[bytes, Path]:
    marker = tmp_path / "pwned"
    return pickle.dumps(_WritesAMarker(marker)), marker


def _mac_key(secret_key: str) -> bytes:
    return hmac.digest(secret_key.encode(), b"machine-identity-portal/cache-values/v1", "sha256")


def test_values_are_authenticated_envelopes_bound_to_their_key(settings):
    serializer = SignedSerializer()
    body = b'{"a":[1,"two"]}'
    tag = hmac.digest(_mac_key(settings.SECRET_KEY), b"mip:1:k\x00j" + body, "sha256")

    assert serializer.dumps({"a": [1, "two"]}, "mip:1:k") == b"~1j" + tag + body
    assert serializer.loads(b"~1j" + tag + body, "mip:1:k") == {"a": [1, "two"]}
    assert serializer.dumps(7, "mip:1:k") == 7  # digits, so Redis INCR works
    assert serializer.loads(b"7", "mip:1:k") == 7
    stored = serializer.dumps(b"\x00raw", "mip:1:k")
    assert serializer.loads(stored, "mip:1:k") == b"\x00raw"
    # The same value under another key, a flipped bit, another SECRET_KEY: all misses.
    assert serializer.loads(stored, "mip:1:other") is MISS
    assert serializer.loads(stored[:-1] + b"x", "mip:1:k") is MISS
    settings.SECRET_KEY = "another-secret-key-" + "y" * 40
    assert serializer.loads(stored, "mip:1:k") is MISS
    assert serializer.loads(b"~1j" + tag + body, "mip:1:k") is MISS


def test_an_authentic_value_of_an_unknown_kind_is_a_miss(settings):
    serializer = SignedSerializer()
    body = pickle.dumps("a future kind")

    value = b"~1p" + serializer._tag("mip:1:k", b"p", body) + body

    assert serializer.loads(value, "mip:1:k") is MISS


def test_a_pickle_is_a_miss_that_runs_nothing_and_is_logged_once(tmp_path, caplog):
    serializer = SignedSerializer()
    payload, marker = _planted(tmp_path)
    caplog.set_level(logging.WARNING, logger="identity_portal.cache")

    answers = [serializer.loads(payload, "mip:1:planted") for _ in range(3)]

    assert answers == [MISS, MISS, MISS]
    assert not marker.exists()
    assert [r.getMessage() for r in caplog.records] == [
        "cache: ignored a value under mip:1:planted that is not ours (forged, malformed or "
        "written under another SECRET_KEY); read as a miss"
    ]
    assert str(marker) not in caplog.text


def test_values_that_are_not_json_are_refused_when_written():
    with pytest.raises(TypeError) as raised:
        SignedSerializer().dumps({1, 2}, "mip:1:a-set")

    assert str(raised.value) == (
        "cache values are JSON types or bytes, never pickled: 'mip:1:a-set' got set"
    )


@pytest.mark.redis
def test_a_pickle_planted_in_redis_is_a_miss_and_runs_nothing(tmp_path):
    payload, marker = _planted(tmp_path)
    raw = cache._cache.get_client(write=True)
    raw.set(cache.make_key("planted"), payload)
    raw.set(cache.make_key("garbage"), b"\x80\x05not even a pickle")
    cache.set("kept", {"ok": True})

    assert cache.get("planted", "default") == "default"
    assert cache.get_many(["planted", "garbage", "kept"]) == {"kept": {"ok": True}}
    assert cache.add("planted", "mine") is False  # present, just not ours
    assert not marker.exists()


def test_the_file_cache_stores_envelopes_and_treats_a_pickle_file_as_expired(
    tmp_path, time_machine
):
    time_machine.move_to("2030-01-01 12:00:00+00:00", tick=False)
    backend = FileBasedCache(str(tmp_path / "cache"), {})
    backend.set("k", {"v": 1}, 60)
    backend.set("n", 5, None)
    path = Path(backend._key_to_file("k"))

    assert path.read_bytes().startswith(b"~1 1893499260.0\n~1j")
    assert backend.get("k") == {"v": 1}
    assert backend.incr("n") == 6
    assert backend.touch("k", 120) is True
    time_machine.shift(100)
    assert backend.get("k") == {"v": 1}
    time_machine.shift(21)
    assert backend.get("k") is None

    # Django's own format (pickled expiry, pickled value), as an attacker would plant it.
    payload, marker = _planted(tmp_path)
    planted = Path(backend._key_to_file("planted"))
    planted.write_bytes(pickle.dumps(None) + payload)
    assert backend.get("planted", "default") == "default"
    assert not marker.exists()
    assert not planted.exists()  # deleted like an expired file
    assert backend.add("planted", "mine") is True
    assert backend.get("planted") == "mine"


def test_a_file_moved_to_another_key_is_a_miss(tmp_path):
    backend = FileBasedCache(str(tmp_path / "cache"), {})
    backend.set("a", "value of a")
    Path(backend._key_to_file("b")).write_bytes(Path(backend._key_to_file("a")).read_bytes())

    assert backend.get("b", "default") == "default"
    assert backend.touch("b") is False


def test_djangos_pickling_backends_are_refused_at_start(settings):
    settings.CACHES = {
        "default": {"BACKEND": "identity_portal.cache.RedisCache", "LOCATION": "redis://x"},
        "other": {"BACKEND": "django.core.cache.backends.redis.RedisCache"},
        "files": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache"},
    }

    errors = cache_backends_check()

    assert [(e.id, e.msg.split(",")[0]) for e in errors] == [
        (
            "identity_portal.E101",
            "CACHES['other'] uses django.core.cache.backends.redis.RedisCache",
        ),
        (
            "identity_portal.E101",
            "CACHES['files'] uses django.core.cache.backends.filebased.FileBasedCache",
        ),
    ]


def test_the_configured_caches_pass_the_check():
    assert cache_backends_check() == []


def test_celery_accepts_json_only_and_refuses_a_pickled_message(tmp_path):
    from kombu.exceptions import ContentDisallowed
    from kombu.serialization import dumps, loads, prepare_accept_content

    from identity_portal.celery import app

    marker = tmp_path / "pwned"
    content_type, encoding, body = dumps(_WritesAMarker(marker), serializer="pickle")

    assert app.conf.accept_content == ["json"]
    assert app.conf.result_accept_content == ["json"]
    assert (app.conf.task_serializer, app.conf.result_serializer) == ("json", "json")
    assert content_type == "application/x-python-serialize"
    accept = prepare_accept_content(app.conf.accept_content)  # as the worker does
    with pytest.raises(ContentDisallowed):
        loads(body, content_type, encoding, accept=accept)
    assert not marker.exists()
    json_type, json_encoding, json_body = dumps({"a": 1}, serializer="json")
    assert loads(json_body, json_type, json_encoding, accept=accept) == {"a": 1}


@pytest.mark.parametrize(
    "backend",
    ["identity_portal.cache.FileBasedCache", pytest.param("redis", marks=pytest.mark.redis)],
)
def test_cache_backed_sessions_keep_working(settings, tmp_path, backend):
    from django.contrib.sessions.backends.cache import SessionStore
    from django.core.cache import caches

    if backend == "redis":
        config = {"BACKEND": "identity_portal.cache.RedisCache", "LOCATION": settings.REDIS_URL}
    else:
        config = {"BACKEND": backend, "LOCATION": str(tmp_path / "sessions")}
    settings.CACHES = {**settings.CACHES, "sessions": config}
    settings.SESSION_CACHE_ALIAS = "sessions"

    store = SessionStore()
    store["_auth_user_id"] = "42"
    store["flags"] = {"mfa": True, "seen": [1, 2]}
    store.save()
    loaded = SessionStore(session_key=store.session_key)

    assert dict(loaded.items()) == {"_auth_user_id": "42", "flags": {"mfa": True, "seen": [1, 2]}}
    assert loaded.exists(store.session_key) is True
    store.delete()
    caches["sessions"].close()
