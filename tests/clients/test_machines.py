"""Machine and registry services: validated input, one audit event each, nothing on failure."""

import pytest
from django.core.exceptions import ValidationError

from audit.choices import EventType
from audit.models import AuditEvent
from clients.models import Audience, ClientSecret, Machine, Scope
from clients.services import (
    audience_create,
    audience_uri_check,
    machine_delete,
    machine_disable,
    machine_enable,
    machine_register,
    machine_update,
    scope_create,
)


def _counts():
    return (
        Machine.objects.count(),
        ClientSecret.objects.count(),
        Scope.objects.count(),
        Audience.objects.count(),
        AuditEvent.objects.count(),
    )


def test_register_makes_a_confidential_client_credentials_machine(machine_and_secret):
    machine, raw = machine_and_secret

    machine.refresh_from_db()
    assert (machine.client_type, machine.authorization_grant_type) == (
        "confidential",
        "client-credentials",
    )
    assert (machine.client_secret, machine.hash_client_secret) == ("", False)
    assert machine.default_audience.uri == "https://api.example"  # the only audience
    assert machine.access_token_ttl == 600
    assert machine.rotation_grace == 86400
    assert [e.event_type for e in AuditEvent.objects.filter(target_id=machine.client_id)] == [
        EventType.MACHINE_REGISTERED,
        EventType.SECRET_CREATED,
    ]
    assert raw not in repr(list(AuditEvent.objects.values_list("details", flat=True)))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"scopes": ["nope"]}, "scopes"),
        ({"audiences": ["https://unknown.example"]}, "audiences"),
        ({"scopes": ["read"], "default_scopes": ["write"]}, "default_scopes"),
        ({"default_audience": "https://api.example"}, "default_audience"),
        ({"access_token_ttl": 0}, "access_token_ttl"),
        ({"access_token_ttl": 3601}, "access_token_ttl"),
        ({"ip_allowlist": ["10.0.0.0/33"]}, "ip_allowlist"),
        ({"owner_email": "not-an-email"}, "owner_email"),
        ({"name": "  "}, "name"),
        ({"max_secret_age": 5}, "max_secret_age"),
        ({"max_secret_age": 10 * 365 * 24 * 3600 + 1}, "max_secret_age"),
        ({"max_secret_age": 10**15}, "max_secret_age"),
        ({"name": "bad\x00name"}, "name"),
        ({"name": "bell\x07"}, "name"),
        ({"description": "nul\x00here"}, "description"),
        ({"description": "escape\x1b[31m"}, "description"),
        ({"owner_team": "team\nsplit"}, "owner_team"),
        ({"tags": ["ok", "t\x00"]}, "tags"),
        ({"rotation_grace": -1}, "rotation_grace"),
    ],
)
def test_register_refuses_bad_input_and_changes_nothing(
    cli_actor, scope_read, audience_api, kwargs, field
):
    scope_create(actor=cli_actor, name="write")
    before = _counts()

    with pytest.raises(ValidationError) as raised:
        machine_register(actor=cli_actor, **{"name": "m", **kwargs})

    assert field in raised.value.message_dict
    assert _counts() == before


def test_update_changes_fields_and_audits_them(machine_and_secret, cli_actor):
    machine, _ = machine_and_secret
    scope_create(actor=cli_actor, name="write")

    machine_update(
        actor=cli_actor,
        machine=machine,
        scopes=["read", "write"],
        access_token_ttl=300,
        ip_allowlist=["10.0.0.1/8"],
        tags=["prod", "prod", "billing"],
    )

    machine.refresh_from_db()
    assert sorted(s.name for s in machine.allowed_scopes.all()) == ["read", "write"]
    assert (machine.access_token_ttl, machine.ip_allowlist, machine.tags) == (
        300,
        ["10.0.0.0/8"],
        ["prod", "billing"],
    )
    event = AuditEvent.objects.get(event_type=EventType.MACHINE_UPDATED)
    assert event.details["changed"] == ["access_token_ttl", "ip_allowlist", "scopes", "tags"]
    assert event.details["after"]["scopes"] == ["read", "write"]


def test_update_without_change_writes_no_event(machine_and_secret, cli_actor):
    machine, _ = machine_and_secret
    before = _counts()

    machine_update(actor=cli_actor, machine=machine, access_token_ttl=600)

    assert _counts() == before


def test_removing_the_default_audience_clears_it(machine_and_secret, cli_actor):
    machine, _ = machine_and_secret

    machine_update(actor=cli_actor, machine=machine, audiences=[])

    machine.refresh_from_db()
    assert machine.default_audience is None


def test_disable_enable_are_audited_once(machine_and_secret, cli_actor):
    machine, _ = machine_and_secret

    machine_disable(actor=cli_actor, machine=machine)
    machine_disable(actor=cli_actor, machine=machine)
    machine_enable(actor=cli_actor, machine=machine)

    machine.refresh_from_db()
    assert machine.enabled is True
    types = list(
        AuditEvent.objects.filter(event_type__startswith="machine.").values_list(
            "event_type", flat=True
        )
    )
    assert types == ["machine.registered", "machine.disabled", "machine.enabled"]


def test_delete_disables_and_revokes_but_keeps_the_history(machine_and_secret, cli_actor):
    machine, _ = machine_and_secret
    machine_update(actor=cli_actor, machine=machine, name="renamed")

    machine_delete(actor=cli_actor, machine=machine)

    machine.refresh_from_db()
    assert (machine.enabled, machine.deleted_at is not None) == (False, True)
    assert ClientSecret.objects.filter(machine=machine, revoked_at__isnull=True).count() == 0
    assert AuditEvent.objects.filter(target_id=machine.client_id).count() == 4
    with pytest.raises(ValidationError):
        machine_enable(actor=cli_actor, machine=machine)


def test_scope_names_follow_rfc_6749(db, cli_actor):
    with pytest.raises(ValidationError):
        scope_create(actor=cli_actor, name="has space")
    with pytest.raises(ValidationError):
        scope_create(actor=cli_actor, name='quote"')

    scope = scope_create(actor=cli_actor, name="orders:read", description=" Read orders ")

    assert (scope.name, scope.description) == ("orders:read", "Read orders")
    assert AuditEvent.objects.get().event_type == EventType.SCOPE_CREATED


def test_duplicate_scope_and_audience_are_refused(db, cli_actor, scope_read, audience_api):
    before = _counts()

    with pytest.raises(ValidationError):
        scope_create(actor=cli_actor, name="read")
    with pytest.raises(ValidationError):
        audience_create(actor=cli_actor, uri="https://api.example")

    assert _counts() == before


@pytest.mark.parametrize(
    "uri", ["api.example", "https://api.example/#frag", "ftp://x.example", "urn:", "", "https://"]
)
def test_audience_uris_must_be_absolute(db, cli_actor, uri):
    with pytest.raises(ValidationError):
        audience_create(actor=cli_actor, uri=uri)

    assert Audience.objects.count() == 0


def test_audience_accepts_https_and_urn(db, cli_actor):
    audience_create(actor=cli_actor, uri="https://api.example/v1")
    audience_create(actor=cli_actor, uri="urn:example:orders")

    assert list(Audience.objects.values_list("uri", flat=True)) == [
        "https://api.example/v1",
        "urn:example:orders",
    ]


def test_register_accepts_the_longest_secret_age_and_plain_whitespace(db, cli_actor, audience_api):
    machine, _ = machine_register(
        actor=cli_actor,
        name="m",
        audiences=[audience_api.uri],
        description="line one\r\nline two\tindented",
        max_secret_age=10 * 365 * 24 * 3600,
    )

    assert (machine.max_secret_age, machine.description) == (
        315360000,
        "line one\r\nline two\tindented",
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_secret_age": 10**15}, "max_secret_age"),
        ({"name": "bad\x00name"}, "name"),
        ({"description": "\x00"}, "description"),
        ({"owner_team": "a\x7f"}, "owner_team"),
        ({"tags": ["\x00"]}, "tags"),
    ],
)
def test_update_refuses_huge_ages_and_control_characters(
    machine_and_secret, cli_actor, kwargs, field
):
    machine, _ = machine_and_secret
    before = _counts()

    with pytest.raises(ValidationError) as raised:
        machine_update(actor=cli_actor, machine=machine, **kwargs)

    assert field in raised.value.message_dict
    assert _counts() == before
    machine.refresh_from_db()
    assert (machine.name, machine.description, machine.owner_team, machine.tags) == (
        "billing-job",
        "",
        "",
        [],
    )
    assert machine.max_secret_age is None


@pytest.mark.parametrize("uri", ["http://[::1", "https://[zz]/", "http://[::1]x/"])
def test_audience_check_turns_bad_ipv6_hosts_into_a_validation_error(uri):
    with pytest.raises(ValidationError) as raised:
        audience_uri_check(uri)

    assert raised.value.message_dict == {
        "uri": ["An audience is an absolute http(s) or urn: URI, no fragment."]
    }
