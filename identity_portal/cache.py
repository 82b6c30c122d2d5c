"""Django's Redis cache backend, keeping one Redis client per process.

Django's ``RedisCacheClient`` builds a new ``redis.Redis`` object for every
operation (its connection pool is reused, the client is not). Building one
costs about 100 us of CPU, more than signing a token, and the token endpoint
reads the cache on every request. A ``redis.Redis`` client is thread-safe
and holds no per-operation state, so one per pool is enough.
"""

from __future__ import annotations

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient


class ReusedClientRedisCacheClient(RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients: dict[int, object] = {}

    def get_client(self, key=None, *, write=False):
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            client = self._client(connection_pool=self._get_connection_pool(write))
            self._clients[index] = client
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = ReusedClientRedisCacheClient
