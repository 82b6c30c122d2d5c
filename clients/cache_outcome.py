"""Telling the person who made a change when the cache could not be told about it.

A revoke or a disable commits in the database first; the shared cache is told
after commit (a new generation, a tombstone, a version bump). When that write fails, the change
is real but other processes may act on their cached copy of the old state
until it expires: a revoked secret or a disabled machine keeps getting
tokens there for a while. The console and the CLI must then say so instead
of reporting plain success.

The failure happens after the service's transaction has ended, so a service
cannot return it. The caller collects it instead, around the outermost
transaction (the console view, the CLI command)::

    with cache_failures_collected() as failures:
        machine_disable(actor=actor, machine=machine)
    for message in failures:
        ...  # a console warning, a line on stderr

Whoever writes to the cache after a commit (the machine cache here, the
signing keyring in ``tokens``) calls ``cache_failure_report`` when its write
finally fails; outside a collector (a Celery task) the log line it already
wrote is all there is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_collector: ContextVar[list[str] | None] = ContextVar("cache_failures", default=None)


@contextmanager
def cache_failures_collected() -> Iterator[list[str]]:
    """Collect, in order and without repeats, what the cache could not be told."""
    failures: list[str] = []
    token = _collector.set(failures)
    try:
        yield failures
    finally:
        _collector.reset(token)


def cache_failure_report(*, message: str) -> None:
    """Tell the collecting caller, if any, in words for the person who made the change."""
    failures = _collector.get()
    if failures is not None and message not in failures:
        failures.append(message)
