"""What reading a machine's cache entry costs: the token path's decode, before and after.

Not a test. Two modes, per operation:

- ``cold``: the first time a process sees a stored entry (the per-process
  memos are cleared every time): the value is authenticated and the entry and
  its Machine are rebuilt;
- ``warm``: what every token request pays once the process has seen the
  entry: the cache backend's decoding of the stored value, the memo lookup and
  the check that the entry is the requested machine's.

    DJANGO_SETTINGS_MODULE=identity_portal.settings_test \\
        python bench/cache_decode.py warm 20000 --time     # microseconds per operation
    valgrind --tool=callgrind python bench/cache_decode.py warm 2000   # minus a run with 0

No database or Redis is needed: the entry is built in memory, the backend's
serializer is called directly.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import sys
import time
import timeit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "identity_portal.settings_test")

import django

django.setup()

from django.utils import timezone  # noqa: E402

from clients import machine_cache  # noqa: E402
from clients.models import Audience, Machine, Scope  # noqa: E402
from identity_portal.cache import RedisCache  # noqa: E402


def _entry() -> machine_cache.MachineAuthEntry:
    audience = Audience(id=1, uri="https://api.example", name="API")
    scopes = tuple(Scope(id=i, name=f"scope{i}", description="") for i in range(1, 4))
    machine = Machine(
        id=7,
        client_id="A" * 40,
        name="billing-job",
        client_type="confidential",
        authorization_grant_type="client-credentials",
        default_audience=audience,
        tags=["a", "b"],
        ip_allowlist=["10.0.0.0/8"],
        created=timezone.now(),
        updated=timezone.now(),
    )
    secrets = tuple(
        machine_cache.CachedSecret(
            id=i,
            pepper_id="p2",
            digest_version=2,
            digest="ab" * 32,
            expires_at=time.time() + 99,
            revoked_at=None,
        )
        for i in (1, 2)
    )
    return machine_cache.MachineAuthEntry(
        machine=machine,
        allowed_scopes=scopes,
        default_scopes=scopes[:1],
        allowed_audiences=(audience,),
        secrets=secrets,
        networks=(ipaddress.ip_network("10.0.0.0/8"),),
    )


def main() -> None:
    mode, count = sys.argv[1], int(sys.argv[2])
    entry = _entry()
    client_id = entry.machine.client_id
    generation, read_at = "bench-generation", time.time()
    raw = machine_cache.machine_auth_entry_encode(
        dataclasses.replace(entry, generation=generation, generation_read_at=read_at)
    )
    serializer = RedisCache("redis://127.0.0.1:1/0", {})._cache._serializer
    key = "mip:1:" + machine_cache.machine_cache_key(client_id)
    stored = serializer.dumps(raw, key)

    def cold():
        machine_cache._decoded.clear()
        serializer._verified.clear()
        warm()

    def warm():
        # bytes(): Redis hands every request a new bytes object.
        found = machine_cache.machine_auth_entry_resolve(
            client_id, serializer.loads(bytes(stored), key), generation, read_at=read_at
        )
        if found is None:
            raise SystemExit("the entry did not decode")

    operation = {"cold": cold, "warm": warm}[mode]
    operation()
    if "--time" in sys.argv:
        best = min(timeit.timeit(operation, number=count) / count for _ in range(5))
        print(  # noqa: T201 (a command-line tool talking to its user)
            f"{mode}: {best * 1e6:.2f} us/op; entry {len(raw)} bytes, stored {len(stored)}"
        )
    else:
        for _ in range(count):
            operation()


if __name__ == "__main__":
    main()
