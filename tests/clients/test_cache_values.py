"""The machine cache entry: JSON rows, decoded once, and never trusted beyond its machine."""

import dataclasses
import logging

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from clients.authentication import ClientCredentials, client_authenticate
from clients.machine_cache import (
    _row,
    machine_auth_entry_decode,
    machine_auth_entry_encode,
    machine_auth_entry_get,
    machine_auth_entry_load,
    machine_cache_key,
    machine_cache_keys,
    machine_generation_key,
)
from clients.models import Machine
from clients.services import machine_update


def _authenticate(client_id, raw, ctx):
    return client_authenticate(
        credentials=ClientCredentials(client_id=client_id, secret=raw, method="client_secret_post"),
        context=ctx,
    ).machine


@pytest.mark.parametrize("client_id", ["mip_abc", "ünïcode id", "x" * 300])
def test_the_token_paths_two_keys_are_the_entry_key_and_the_generation_key(client_id):
    entry_key, generation_key = machine_cache_keys(client_id)

    assert entry_key == machine_cache_key(client_id)
    assert generation_key == machine_generation_key(client_id)
    assert entry_key.startswith("clients:machine:v") and len(entry_key.split(":")[-1]) == 40
    assert generation_key.startswith("clients:machine-generation:")


def test_an_entry_survives_encoding_field_for_field_without_sql(machine_and_secret, cli_actor):
    machine, _ = machine_and_secret
    machine_update(
        actor=cli_actor, machine=machine, ip_allowlist=["10.0.0.0/8", "2001:db8::/48"], tags=["eu"]
    )
    loaded = machine_auth_entry_load(machine.client_id)
    raw = machine_auth_entry_encode(loaded)

    with CaptureQueriesContext(connection) as queries:
        decoded = machine_auth_entry_decode(raw)
        found = decoded.machine_with_relations()
        relations = (
            [s.name for s in found.allowed_scopes.all()],
            [s.name for s in found.default_scopes.all()],
            [a.uri for a in found.allowed_audiences.all()],
            found.default_audience.uri,
        )

    assert len(queries) == 0
    assert raw.startswith(b'{"machine":[')
    fields = [f.attname for f in Machine._meta.concrete_fields]
    assert [getattr(found, f) for f in fields] == [getattr(loaded.machine, f) for f in fields]
    assert found._state.adding is False and found._state.db == "default"
    assert relations == (["read"], ["read"], ["https://api.example"], "https://api.example")
    assert decoded.secrets == loaded.secrets
    assert decoded.secrets[0].digest_version == 2
    assert [str(n) for n in decoded.networks] == ["10.0.0.0/8", "2001:db8::/48"]


@pytest.mark.postgres
def test_rows_encoded_as_the_database_sent_them_decode_as_rows_rebuilt_from_instances(
    machine_and_secret, cli_actor
):
    machine, _ = machine_and_secret
    machine_update(actor=cli_actor, machine=machine, ip_allowlist=["10.0.0.0/8"], tags=["eu"])
    loaded = machine_auth_entry_load(machine.client_id)

    from_database = machine_auth_entry_decode(machine_auth_entry_encode(loaded))
    from_instances = machine_auth_entry_decode(
        machine_auth_entry_encode(dataclasses.replace(loaded, rows=None))
    )

    assert loaded.rows is not None
    for decoded in (from_database, from_instances):
        assert _row(decoded.machine) == _row(loaded.machine)
        assert _row(decoded.machine.default_audience) == _row(loaded.machine.default_audience)
        for name in ("allowed_scopes", "default_scopes", "allowed_audiences"):
            assert [_row(r) for r in getattr(decoded, name)] == [
                _row(r) for r in getattr(loaded, name)
            ]
        assert (decoded.secrets, decoded.networks) == (loaded.secrets, loaded.networks)


def test_another_machines_entry_under_this_key_is_a_miss_logged_once(
    machine_and_secret, machine_factory, request_ctx, caplog
):
    machine, raw = machine_and_secret
    other = machine_factory(name="other")
    foreign = machine_auth_entry_encode(machine_auth_entry_load(other.client_id))
    cache.set(machine_cache_key(machine.client_id), foreign, 300)
    caplog.set_level(logging.WARNING, logger="clients.machine_cache")

    found = [_authenticate(machine.client_id, raw, request_ctx) for _ in range(3)]

    assert {m.pk for m in found} == {machine.pk}
    assert cache.get(machine_cache_key(machine.client_id)) == foreign  # not overwritten
    assert [r.getMessage() for r in caplog.records] == [
        "machine cache: ignored an entry that is not usable (another machine's entry)"
    ]


def test_undecodable_bytes_are_a_miss_that_does_not_cache(machine_and_secret, request_ctx, caplog):
    machine, raw = machine_and_secret
    key = machine_cache_key(machine.client_id)
    caplog.set_level(logging.WARNING, logger="clients.machine_cache")
    for junk in (b"not json", b'{"machine":[1,2]}', b"[]"):
        cache.set(key, junk, 300)

        assert _authenticate(machine.client_id, raw, request_ctx).pk == machine.pk
        assert machine_auth_entry_get(machine.client_id).machine.pk == machine.pk
        assert cache.get(key) == junk

    assert [r.getMessage() for r in caplog.records] == [
        "machine cache: ignored an entry that is not usable (JSONDecodeError)",
        "machine cache: ignored an entry that is not usable (ValueError)",
        "machine cache: ignored an entry that is not usable (TypeError)",
    ]
