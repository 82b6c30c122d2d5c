"""The keyring's own rules: which key signs, when a process reloads, and what it reports.

The reload intervals run on ``tokens.keyring.monotonic`` (time-machine does not
move ``time.monotonic``), moved here by hand; the cache is replaced where the
keyring holds it to play an unreachable Redis.
"""

from __future__ import annotations

import logging

import pytest
from django.core.cache import cache
from django.db import DatabaseError
from redis.exceptions import ConnectionError as RedisConnectionError

from audit.context import Actor
from tokens import keyring
from tokens.keyring import (
    FALLBACK_RELOAD_SECONDS,
    VERSION_CACHE_KEY,
    KeyNotAuthentic,
    KeyProblem,
    NoSigningKey,
    keyring_current,
    keyring_reload,
)
from tokens.services import signing_key_create

ACTOR = Actor.cli("test")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _CacheDown:
    """Every read and write fails as an unreachable Redis would."""

    def get(self, *args, **kwargs):
        raise RedisConnectionError("Connection refused")

    add = set = get


@pytest.fixture
def clock(monkeypatch, settings):
    settings.KEYRING_CHECK_INTERVAL = 1.0
    moved = _Clock()
    monkeypatch.setattr(keyring, "monotonic", moved)
    return moved


def test_a_process_sees_its_own_key_change_at_once_and_after_its_commit(
    signing_key, clock, django_capture_on_commit_callbacks
):
    ring = keyring_current()

    with django_capture_on_commit_callbacks(execute=True):
        # Inside the change's transaction, well within the check interval.
        added = signing_key_create(algorithm="ES256", activate_now=False, actor=Actor.cli("test"))
        inside = keyring_current()
    after = keyring_current()  # the commit's version bump has run

    assert inside is not ring
    assert added.kid in {jwk["kid"] for jwk in inside.jwks}
    assert added.kid in {jwk["kid"] for jwk in after.jwks}


def test_each_active_algorithm_signs_with_its_own_key(signing_key):
    eddsa = signing_key_create(algorithm="EdDSA", activate_now=True, actor=ACTOR)

    ring = keyring_current()

    assert ring.signer("ES256").kid == signing_key.kid
    assert ring.signer("EdDSA").kid == eddsa.kid
    # An algorithm without an active key: the oldest active key rather than no token.
    assert ring.signer("RS256").kid == signing_key.kid


def test_no_active_key_signs_nothing(db):
    signing_key_create(algorithm="ES256", actor=ACTOR)  # pending only

    with pytest.raises(NoSigningKey):
        keyring_current().signer("ES256")


def test_a_key_not_authentic_reads_as_its_reason():
    refused = KeyNotAuthentic("kid_mismatch")

    assert (str(refused), refused.reason) == ("kid_mismatch", "kid_mismatch")


def test_within_the_check_interval_the_ring_is_used_without_asking_the_cache(signing_key, clock):
    ring = keyring_current()
    cache.set(VERSION_CACHE_KEY, 12345, timeout=None)  # another process changed a key

    clock.now = 1000.5
    assert keyring_current() is ring
    clock.now = 1001.0  # exactly the interval: ask the cache, see the change
    changed = keyring_current()
    assert changed is not ring
    assert changed.version == "12345"


def test_an_unchanged_version_keeps_the_ring_and_restarts_the_interval(signing_key, clock):
    ring = keyring_current()

    clock.now += 1.5
    assert keyring_current() is ring
    assert ring.checked_at == 1001.5


def test_without_the_cache_the_ring_reloads_from_the_database_every_few_seconds(
    signing_key, clock, monkeypatch, caplog
):
    from core import metrics

    counted = metrics.CACHE_ERRORS.labels("keyring_version_read")._value.get()
    monkeypatch.setattr(keyring, "cache", _CacheDown())
    ring = keyring_current()
    assert (ring.version, ring.loaded_at) == (None, 1000.0)

    clock.now = 1000.0 + FALLBACK_RELOAD_SECONDS - 0.5
    assert keyring_current() is ring
    clock.now = 1000.0 + FALLBACK_RELOAD_SECONDS  # exactly the fallback interval since the load
    reloaded = keyring_current()
    assert reloaded is not ring
    assert (reloaded.version, reloaded.loaded_at) == (None, 1000.0 + FALLBACK_RELOAD_SECONDS)
    assert caplog.messages.count("keyring: cache unreachable, falling back to the database") == 3
    assert metrics.CACHE_ERRORS.labels("keyring_version_read")._value.get() == counted + 3


def test_a_ring_loaded_by_another_thread_meanwhile_is_used_not_loaded_again(
    signing_key, clock, monkeypatch
):
    keyring_current()
    clock.now += 2
    theirs = keyring._load("theirs")

    def read_while_another_thread_loads():
        keyring._ring = theirs
        return "theirs"

    monkeypatch.setattr(keyring, "_cached_version", read_while_another_thread_loads)

    assert keyring_current() is theirs


def test_a_ring_dropped_by_a_key_change_meanwhile_is_loaded_again(signing_key, clock, monkeypatch):
    keyring_current()
    clock.now += 2

    def read_while_a_key_changes():
        keyring._ring = None  # keyring_changed() on another thread
        return "changed"

    monkeypatch.setattr(keyring, "_cached_version", read_while_a_key_changes)
    ring = keyring_current()

    assert ring is keyring._ring
    assert (ring.version, ring.signer("ES256").kid) == ("changed", signing_key.kid)


def test_the_probes_first_reload_records_the_cached_version(signing_key):
    cache.set(VERSION_CACHE_KEY, 777, timeout=None)

    ring = keyring_reload()

    assert ring is keyring._ring
    assert (ring.version, ring.signer("ES256").kid) == ("777", signing_key.kid)


def test_the_probes_reload_does_not_need_the_cache(signing_key, monkeypatch, caplog):
    """Readiness reloads from the database; with Redis down it must not read the cache."""
    cache.set(VERSION_CACHE_KEY, 5, timeout=None)
    loaded = keyring_current()
    monkeypatch.setattr(keyring, "cache", _CacheDown())

    ring = keyring_reload()

    assert ring is not loaded
    assert ring.version == "5"
    assert "keyring: cache unreachable, falling back to the database" not in caplog.messages


def test_each_problem_is_logged_with_its_trust_and_a_failed_record_is_tried_again(
    monkeypatch, caplog
):
    recorded = []

    def record(*, kid, reason, trusted):
        recorded.append(kid)
        if kid == "a" and len(recorded) == 1:
            raise DatabaseError("database unavailable")
        return True

    monkeypatch.setattr("tokens.services.signing_key_problem_record", record)
    problems = [
        KeyProblem(kid="a", reason="not_authentic", trusted=False),
        KeyProblem(kid="b", reason="public_jwk_mismatch", trusted=True),
    ]
    caplog.set_level(logging.WARNING, logger="tokens.keyring")

    keyring._problems_report(problems)

    assert recorded == ["a", "b"]  # a failed record does not stop the next one
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "keyring: signing key 'a' is not trusted: not_authentic"),
        ("ERROR", "keyring: could not record the problem of key 'a'"),
        (
            "WARNING",
            "keyring: signing key 'b' is trusted under its derived public key: public_jwk_mismatch",
        ),
    ]
    caplog.clear()
    keyring._problems_report(problems)
    assert recorded == ["a", "b", "a"]  # only the one not recorded yet
    assert caplog.messages == ["keyring: signing key 'a' is not trusted: not_authentic"]
