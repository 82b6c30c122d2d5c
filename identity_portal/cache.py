"""The portal's cache backends: values that no reader unpickles, and a fast Redis read.

**Nothing read from the cache runs code.** Django's own Redis and file
caches pickle every value and unpickle whatever they read back, so anyone
who can write to Redis (or to the cache folder) can run code in every web
worker. Here every value is stored as an envelope that the reader
authenticates before it decodes anything::

    b"~1" kind tag body
    kind: b"j" (body is JSON) or b"b" (body is raw bytes, e.g. a machine cache entry)
    tag:  HMAC-SHA256(key derived from SECRET_KEY, cache key || 0x00 || kind || body)

The cache key is inside the tag, so a value copied from one key to another
is refused too. Integers stay plain digits, as Django stores them, so Redis
``INCR`` keeps working; parsing digits runs no code. A value that is neither
(a pickle planted by an attacker, a value written under another
``SECRET_KEY``, garbage) is a cache miss, logged once per key and process
with the key only, never the value. Values must be JSON types (or bytes):
anything else is refused when it is written, loudly, rather than pickled.

**The token path's one read is cheap.** Two costs of Django's Redis client
are removed, both measured on the token path:

- Django's ``RedisCacheClient`` builds a new ``redis.Redis`` object for
  every operation (its connection pool is reused, the client is not).
  Building one costs about 100 us of CPU, more than signing a token. A
  ``redis.Redis`` client is thread-safe and holds no per-operation state, so
  one per pool is enough.
- ``get_many`` (the token path's single read: machine entry and throttle
  state in one MGET) takes a connection from the pool and gives it back on
  every call, which costs a ``poll`` to check the idle socket, two ``getpid``
  and redis-py's retry machinery: about 40 us a call. Here each thread keeps
  a connection of its own for it (and for ``add`` and ``set``, the cold token
  path's write of a machine entry and a client assertion's ``jti`` taken in
  the replay cache: one per pool, so writes still go to the primary), made by
  the same pool (same address, credentials and timeouts). A broken
  connection (Redis restarted) is dropped and the command retried once on a
  new one, as redis-py's client does, except ``add``: its idle connection is
  checked before it sends, and it is resent only when sending failed (a
  ``SET NX`` whose answer was lost may have been applied, and a resend would
  answer "taken" for the very call that took it). A second failure raises
  ``RedisError`` to the caller, as before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import tempfile
import threading
import time

from django.conf import settings
from django.core import checks
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.filebased import FileBasedCache as DjangoFileBasedCache
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient
from django.core.files import locks
from django.core.files.move import file_move_safe
from django.core.signals import setting_changed
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

MAGIC = b"~1"
KIND_JSON = b"j"
KIND_BYTES = b"b"
_TAG_LENGTH = 32
_HEADER_LENGTH = len(MAGIC) + 1 + _TAG_LENGTH
# The MAC key is HMAC(SECRET_KEY, this label): a key of its own, so a cache value can
# never pass for a session, a signed cookie or anything else SECRET_KEY signs.
_MAC_CONTEXT = b"machine-identity-portal/cache-values/v1"
# Keys whose refused values were already logged by this process (bounded).
_REPORTED_MAX = 1024
# Verified bytes values remembered by this process (each about a kilobyte).
_VERIFIED_MAX = 4096
_JSON_DECODER = json.JSONDecoder()


class _Miss:
    def __repr__(self) -> str:
        return "MISS"


# What ``SignedSerializer.loads`` returns for a value it refuses; the backends turn it
# into a plain miss (the caller's default).
MISS = _Miss()


class SignedSerializer:
    """Cache values as authenticated envelopes: JSON or bytes, never pickle.

    ``loads`` checks the tag before it parses anything. The derived key is
    computed once per ``SECRET_KEY``. Bytes values (the machine cache's
    entries, read on every token request) are remembered once verified: the
    same stored bytes under the same key are not authenticated twice, and the
    reader gets the same bytes object back (whose hash Python keeps).
    """

    def __init__(self) -> None:
        self._mac_key: bytes | None = None
        self._verified: dict[tuple[str, bytes], bytes] = {}
        self._reported: set[str] = set()
        setting_changed.connect(self._setting_changed, weak=False)

    def _setting_changed(self, *, setting: str, **kwargs) -> None:
        if setting == "SECRET_KEY":
            self._mac_key = None
            self._verified.clear()

    def _key(self) -> bytes:
        key = self._mac_key
        if key is None:
            secret = settings.SECRET_KEY.encode("utf-8")
            key = self._mac_key = hmac.digest(secret, _MAC_CONTEXT, "sha256")
        return key

    def _tag(self, key: str, kind: bytes, body: bytes) -> bytes:
        message = b"".join((key.encode("utf-8"), b"\x00", kind, body))
        # hmac.new, not the one-shot hmac.digest: with OpenSSL 3 the one-shot fetches
        # and sets up an EVP_MAC on every call, which cost each token request some
        # 270 cache lines of OpenSSL's own tables (bench.instructions --cache-sim);
        # hmac.new's path is the one the secret check already keeps warm.
        return hmac.new(self._key(), message, hashlib.sha256).digest()

    def dumps(self, value: object, key: str) -> bytes | int:
        # Plain digits for integers, as Django stores them, so Redis INCR works on them.
        if type(value) is int:
            return value
        if isinstance(value, bytes):
            kind, body = KIND_BYTES, value
        else:
            try:
                body = json.dumps(value, separators=(",", ":")).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"cache values are JSON types or bytes, never pickled: {key!r} got "
                    f"{type(value).__name__}"
                ) from exc
            kind = KIND_JSON
        return MAGIC + kind + self._tag(key, kind, body) + body

    def loads(self, data: bytes, key: str) -> object:
        if data[:2] != MAGIC:
            try:
                return int(data)
            except ValueError:
                return self.refused(key)
        kind = data[2:3]
        if kind == KIND_BYTES:
            body = self._verified.get((key, data))
            if body is not None:
                return body
        body = data[_HEADER_LENGTH:]
        if not hmac.compare_digest(data[3:_HEADER_LENGTH], self._tag(key, kind, body)):
            return self.refused(key)
        if kind == KIND_BYTES:
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
            self._verified[(key, data)] = body
            return body
        if kind == KIND_JSON:
            # Our own UTF-8 (the tag verified it): no encoding to detect, as json.loads would.
            return _JSON_DECODER.decode(body.decode("utf-8"))
        return self.refused(key)

    def refused(self, key: str) -> _Miss:
        """A value we did not write: a miss, logged once per key (never its content)."""
        if key not in self._reported and len(self._reported) < _REPORTED_MAX:
            self._reported.add(key)
            logger.warning(
                "cache: ignored a value under %s that is not ours (forged, malformed or "
                "written under another SECRET_KEY); read as a miss",
                key,
            )
        return MISS


serializer = SignedSerializer()

# Bumped in a forked child: a connection made before the fork belongs to the parent.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


class ReusedClientRedisCacheClient(RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._serializer = serializer
        self._clients: dict[int, object] = {}
        self._local = threading.local()

    def get_client(self, key=None, *, write=False):
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            client = self._client(connection_pool=self._get_connection_pool(write))
            self._clients[index] = client
        return client

    def _own_connection(self, *, write: bool = False):
        # One per pool this thread uses: writes go to the primary even when reads
        # may go to a replica (several LOCATIONs).
        index = self._get_connection_pool_index(write)
        held = getattr(self._local, "held", None)
        if held is None or held[0] != _fork_generation:
            held = self._local.held = (_fork_generation, {})
        connection = held[1].get(index)
        if connection is None:
            connection = held[1][index] = self._get_connection_pool(write).make_connection()
        return connection

    def _own_command(self, *args, write: bool = False, once: bool = False):
        """One command on this thread's own connection, retried once if the connection broke.

        The cold token path's write of a machine entry and the invalidations go
        this way too: redis-py's client takes a pooled connection and gives it
        back around every command, which cost more CPU than the command.
        A repeated ``SET`` writes the same value. ``once``: a command that must
        not be applied twice (``SET NX``): the idle connection is checked first,
        as the pool checks the connections it hands out (one ``poll``), and one
        that Redis closed is replaced before anything is sent; a send that fails
        is resent once, a failure while reading the answer is raised.
        """
        for attempt in (1, 2):
            connection = self._own_connection(write=write)
            if once:
                try:
                    stale = connection.can_read()
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    stale = True
                if stale:
                    connection.disconnect()
            try:
                connection.send_command(*args)
                if not once:
                    return connection.read_response()
            except (RedisConnectionError, RedisTimeoutError):
                connection.disconnect()
                if attempt == 2:
                    raise
                continue
            except BaseException:
                # Whatever was half sent or half read must not be read by the next call.
                connection.disconnect()
                raise
            try:
                return connection.read_response()
            except BaseException:
                connection.disconnect()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    # Django's methods with the key passed to the serializer (the tag covers it).

    def add(self, key, value, timeout):
        client = self.get_client(key, write=True)
        value = self._serializer.dumps(value, key)
        if timeout == 0:
            if ret := bool(client.set(key, value, nx=True)):
                client.delete(key)
            return ret
        expiry = () if timeout is None else ("EX", timeout)
        return (
            self._own_command("SET", key, value, *expiry, "NX", write=True, once=True) is not None
        )

    def get(self, key, default):
        value = self.get_client(key).get(key)
        if value is None:
            return default
        value = self._serializer.loads(value, key)
        return default if value is MISS else value

    def set(self, key, value, timeout):
        client = self.get_client(key, write=True)
        value = self._serializer.dumps(value, key)
        if timeout == 0:
            client.delete(key)
        else:
            expiry = () if timeout is None else ("EX", timeout)
            self._own_command("SET", key, value, *expiry, write=True)

    def set_many(self, data, timeout):
        client = self.get_client(None, write=True)
        pipeline = client.pipeline()
        pipeline.mset({key: self._serializer.dumps(value, key) for key, value in data.items()})
        if timeout is not None:
            for key in data:
                pipeline.expire(key, timeout)
        pipeline.execute()

    def get_many(self, keys):
        keys = list(keys)
        if not keys:
            return {}
        values = self._own_command("MGET", *keys)
        loads = self._serializer.loads
        found = {}
        for key, value in zip(keys, values, strict=True):
            if value is not None:
                value = loads(value, key)
                if value is not MISS:
                    found[key] = value
        return found


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = ReusedClientRedisCacheClient

    def validate_key(self, key):
        """No memcached portability warnings: Redis keys are binary-safe.

        Django's check walks every character of every key in Python to warn
        about keys memcached would refuse (spaces, control characters, over 250
        bytes); on the token path's five keys that cost more than the MGET's own
        client work. Django's documentation allows a backend that accepts a
        wider range of keys to skip it; ours are built from validated ids.
        """


class FileBasedCache(DjangoFileBasedCache):
    """Django's file cache with the same envelopes, for the embedded tier.

    Every process of the host reads the cache folder, so its files are no
    more trusted than Redis. A file starts with one line holding its expiry
    (POSIX seconds, ``-`` for never), then the envelope. A file in any other
    format (a pickle from an earlier release, a planted one) counts as
    expired: it is deleted and read as a miss.
    """

    def get(self, key, default=None, version=None):
        fname = self._key_to_file(key, version)
        try:
            with open(fname, "rb") as f:
                if not self._is_expired(f):
                    value = serializer.loads(f.read(), self.make_key(key, version))
                    if value is not MISS:
                        return value
        except FileNotFoundError:
            pass
        return default

    def _write_entry(self, file, timeout, value, key: str) -> None:
        expiry = self.get_backend_timeout(timeout)
        encoded = serializer.dumps(value, key)
        if type(encoded) is int:
            encoded = str(encoded).encode()
        file.write(MAGIC + b" " + (b"-" if expiry is None else repr(expiry).encode()) + b"\n")
        file.write(encoded)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        self._createdir()  # the folder may have been deleted at any time
        fname = self._key_to_file(key, version)
        self._cull()
        fd, tmp_path = tempfile.mkstemp(dir=self._dir)
        renamed = False
        try:
            with open(fd, "wb") as f:
                self._write_entry(f, timeout, value, self.make_key(key, version))
            file_move_safe(tmp_path, fname, allow_overwrite=True)
            renamed = True
        finally:
            if not renamed:
                os.remove(tmp_path)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        full_key = self.make_key(key, version)
        try:
            with open(self._key_to_file(key, version), "r+b") as f:
                try:
                    locks.lock(f, locks.LOCK_EX)
                    if self._is_expired(f):
                        return False
                    value = serializer.loads(f.read(), full_key)
                    if value is MISS:
                        return False
                    f.seek(0)
                    f.truncate()
                    self._write_entry(f, timeout, value, full_key)
                    return True
                finally:
                    locks.unlock(f)
        except FileNotFoundError:
            return False

    def _is_expired(self, f):
        """Read the expiry line; a file without one is treated as expired and deleted."""
        line = f.readline(64)
        try:
            if not line.startswith(MAGIC + b" ") or not line.endswith(b"\n"):
                raise ValueError("no expiry line")
            text = line[len(MAGIC) + 1 : -1]
            expiry = None if text == b"-" else float(text)
        except ValueError:
            serializer.refused(os.path.basename(f.name))
            expiry = 0.0
        if expiry is not None and expiry < time.time():
            f.close()
            self._delete(f.name)
            return True
        return False


# Backends whose values are never unpickled from a store that another process writes.
SAFE_BACKENDS = frozenset(
    {
        "identity_portal.cache.RedisCache",
        "identity_portal.cache.FileBasedCache",
        # In-process only: nobody else writes to them.
        "django.core.cache.backends.locmem.LocMemCache",
        "django.core.cache.backends.dummy.DummyCache",
    }
)


@checks.register(checks.Tags.caches)
def cache_backends_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Refuse Django's pickling backends for a cache that other processes write to."""
    return [
        checks.Error(
            f"CACHES[{alias!r}] uses {config.get('BACKEND')}, which unpickles what it reads: "
            "anyone who can write to that store could run code in the portal.",
            hint="Use identity_portal.cache.RedisCache or identity_portal.cache.FileBasedCache.",
            id="identity_portal.E101",
        )
        for alias, config in settings.CACHES.items()
        if config.get("BACKEND") not in SAFE_BACKENDS
    ]
