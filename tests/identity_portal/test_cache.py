"""The Redis cache backend's own get_many: same answers as Django's, one connection per thread."""

from __future__ import annotations

import threading

import pytest
import redis
from django.conf import settings
from django.core.cache import cache

from identity_portal.cache import RedisCache


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
    own = cache._cache._local.held[1]
    own.send_command("CLIENT", "ID")
    client_id = own.read_response()
    admin = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])

    # Only this connection: the Redis server may be shared with other tests' clients.
    assert admin.client_kill_filter(_id=client_id) == 1
    assert cache.get_many(["kept"]) == {"kept": "value"}
    assert cache._cache._local.held[1] is own  # the same connection object, reconnected


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
        connections[name] = backend._cache._local.held[1]

    threads = [threading.Thread(target=read, args=(n,)) for n in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    read("main")

    assert len({id(c) for c in connections.values()}) == 3
    backend.delete("k")
