"""A secret's digest binds its machine: a row moved to another machine authenticates nothing."""

import hashlib
import hmac
import importlib

import pytest
from django.apps import apps
from django.conf import settings
from django.core.cache import cache

from audit.context import RequestContext
from clients.authentication import ClientAuthError, ClientCredentials, client_authenticate
from clients.constants import SECRET_PREFIX
from clients.credentials import (
    UnknownDigestVersion,
    client_key_binding,
    secret_digest,
    secret_digest_legacy_bind,
)
from clients.models import ClientSecret

CTX = RequestContext(source_ip="203.0.113.7")
migration = importlib.import_module("clients.migrations.0002_clientsecret_digest_version")


def _reason(client_id, raw) -> str:
    cache.clear()  # rows changed behind the services' back: no cached entry hides them
    try:
        client_authenticate(
            credentials=ClientCredentials(
                client_id=client_id, secret=raw, method="client_secret_basic"
            ),
            context=CTX,
        )
    except ClientAuthError as exc:
        return exc.reason
    return "ok"


def _pepper(pepper_id="p2") -> bytes:
    return settings.SERVER_SECRETS.peppers[pepper_id]


def test_a_digest_covers_the_client_id_with_unambiguous_framing():
    secret = SECRET_PREFIX + "s" * 43

    expected = hmac.new(
        _pepper(), b"mip-cs-v2\x00billing\x00" + secret.encode(), hashlib.sha256
    ).hexdigest()

    assert secret_digest(secret=secret, client_id="billing", pepper_id="p2") == expected
    assert secret_digest(secret=secret, client_id="billinG", pepper_id="p2") != expected
    with pytest.raises(ValueError) as nul:
        secret_digest(secret=secret, client_id="bill\x00ing", pepper_id="p2")
    assert str(nul.value) == "a client_id never holds NUL"
    with pytest.raises(UnknownDigestVersion) as unknown:
        secret_digest(secret=secret, client_id="billing", pepper_id="p2", version=3)
    assert unknown.value.args == (3,)  # names the version the row claims


def test_a_key_binding_covers_the_client_id_and_the_canonical_jwk():
    # Keys out of order and a non-ASCII kid: the JSON is sorted, compact and ASCII.
    jwk = {
        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
        "kty": "OKP",
        "kid": "clé",
        "crv": "Ed25519",
    }

    expected = hmac.new(
        _pepper(),
        b"mip-ck-v1\x00billing\x00"
        b'{"crv":"Ed25519","kid":"cl\\u00e9","kty":"OKP",'
        b'"x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}',
        hashlib.sha256,
    ).hexdigest()

    assert client_key_binding(client_id="billing", public_jwk=jwk, pepper_id="p2") == expected
    with pytest.raises(ValueError) as nul:
        client_key_binding(client_id="bill\x00ing", public_jwk=jwk, pepper_id="p2")
    assert str(nul.value) == "a client_id never holds NUL"


def test_a_secret_row_moved_to_another_machine_authenticates_nothing(
    machine_and_secret, machine_factory
):
    machine, raw = machine_and_secret
    target = machine_factory(name="payments-admin")
    row = ClientSecret.objects.get(machine=machine)

    ClientSecret.objects.filter(pk=row.pk).update(machine_id=target.machine.pk)

    assert _reason(target.client_id, raw) == "wrong_secret"
    assert _reason(machine.client_id, raw) == "wrong_secret"  # gone from its own machine
    assert _reason(target.client_id, target.secret) == "ok"


def _legacy_row(machine, raw, pepper_id="p2") -> ClientSecret:
    """A row as an earlier release stored it: HMAC(pepper, secret), not yet bound."""
    return ClientSecret.objects.create(
        machine=machine,
        digest=hmac.new(_pepper(pepper_id), raw.encode(), hashlib.sha256).hexdigest(),
        digest_version=0,
        pepper_id=pepper_id,
        display_prefix=raw[:11],
        last_four=raw[-4:],
        created_at=ClientSecret.objects.filter(machine=machine).earliest("created_at").created_at,
    )


def test_the_migration_binds_earlier_digests_to_their_machine(machine_and_secret, machine_factory):
    machine, _ = machine_and_secret
    target = machine_factory(name="payments-admin")
    raw = SECRET_PREFIX + "L" * 43
    legacy = _legacy_row(machine, raw)
    unbound = legacy.digest
    retired = _legacy_row(machine, SECRET_PREFIX + "R" * 43)
    ClientSecret.objects.filter(pk=retired.pk).update(pepper_id="gone")

    migration.bind_digests(apps, None)

    legacy.refresh_from_db()
    retired.refresh_from_db()
    assert legacy.digest_version == 1
    assert legacy.digest == secret_digest_legacy_bind(
        unbound_digest=unbound, client_id=machine.client_id, pepper=_pepper()
    )
    assert (
        legacy.digest
        == hmac.new(
            _pepper(),
            b"mip-cs-v1w\x00" + machine.client_id.encode() + b"\x00" + unbound.encode(),
            hashlib.sha256,
        ).hexdigest()
    )
    assert (retired.digest_version, retired.pepper_id) == (1, "gone")
    assert _reason(machine.client_id, raw) == "ok"
    # Moved after the migration, the bound row works nowhere.
    ClientSecret.objects.filter(pk=legacy.pk).update(machine_id=target.machine.pk)
    assert _reason(target.client_id, raw) == "wrong_secret"
    assert _reason(machine.client_id, raw) == "wrong_secret"


def test_flipping_a_rows_digest_version_verifies_nothing(machine_and_secret):
    machine, _ = machine_and_secret
    raw = SECRET_PREFIX + "F" * 43
    legacy = _legacy_row(machine, raw)
    unbound = legacy.digest
    migration.bind_digests(apps, None)

    # An attacker who knows the earlier unbound digest (an old backup) and flips the
    # row to version 2 would need HMAC("mip-cs-v2"...) to equal HMAC("mip-cs-v1w"...).
    ClientSecret.objects.filter(pk=legacy.pk).update(digest_version=2)
    assert _reason(machine.client_id, unbound) == "wrong_secret"
    assert _reason(machine.client_id, raw) == "wrong_secret"
    ClientSecret.objects.filter(pk=legacy.pk).update(digest_version=7)  # unknown: nothing
    assert _reason(machine.client_id, raw) == "wrong_secret"
    ClientSecret.objects.filter(pk=legacy.pk).update(digest_version=1)
    assert _reason(machine.client_id, raw) == "ok"


@pytest.mark.migrations
@pytest.mark.django_db(transaction=True)
def test_migrating_a_database_of_the_previous_release_binds_its_digests(machine_and_secret):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    machine, _ = machine_and_secret
    raw = SECRET_PREFIX + "M" * 43
    unbound = hmac.new(_pepper(), raw.encode(), hashlib.sha256).hexdigest()
    # Only rows of the previous release: going back drops the version column, and a
    # version-2 row would come back as a legacy one (the migration cannot be reversed).
    ClientSecret.objects.all().delete()
    executor = MigrationExecutor(connection)
    executor.migrate([("clients", "0001_initial")])
    try:
        with connection.cursor() as cursor:  # a row as the previous release wrote it
            cursor.execute(
                "INSERT INTO clients_clientsecret (machine_id, digest, pepper_id, display_prefix,"
                " last_four, created_at, created_by) VALUES (%s, %s, 'p2', %s, %s, %s, '')",
                [machine.pk, unbound, raw[:11], raw[-4:], machine.created],
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    row = ClientSecret.objects.get()
    assert row.digest_version == 1
    assert row.digest == secret_digest(
        secret=raw, client_id=machine.client_id, pepper_id="p2", version=1
    )
    assert _reason(machine.client_id, raw) == "ok"
