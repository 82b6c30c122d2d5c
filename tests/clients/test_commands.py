"""The operator CLIs: JSON on stdout, audited as cli, refused input exits 2 and changes nothing."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from audit.context import Actor
from audit.models import AuditEvent
from clients.authentication import ClientCredentials, client_authenticate
from clients.models import Audience, ClientSecret, Machine, Scope
from clients.services import secret_create


def _run(*args) -> object:
    out = StringIO()
    call_command(*args, stdout=out)
    return json.loads(out.getvalue())


def _counts():
    return (
        Machine.objects.count(),
        ClientSecret.objects.count(),
        Scope.objects.count(),
        Audience.objects.count(),
        AuditEvent.objects.count(),
    )


def test_machine_create_prints_working_credentials(db, request_ctx):
    _run("scope", "create", "read", "--description", "Read things")
    _run("audience", "create", "https://api.example", "--name", "API")

    result = _run(
        "machine", "create", "--name", "bench", "--scope", "read",
        "--audience", "https://api.example", "--ttl", "300", "--owner", "ops@example.test",
    )  # fmt: skip

    machine = client_authenticate(
        credentials=ClientCredentials(
            client_id=result["client_id"],
            secret=result["client_secret"],
            method="client_secret_basic",
        ),
        context=request_ctx,
    ).machine
    assert (machine.name, machine.access_token_ttl, machine.owner_email) == (
        "bench",
        300,
        "ops@example.test",
    )
    assert (result["scopes"], result["audiences"], result["default_audience"]) == (
        ["read"],
        ["https://api.example"],
        "https://api.example",
    )
    assert set(AuditEvent.objects.values_list("actor_kind", flat=True)) == {"cli"}


@pytest.mark.parametrize(
    "args",
    [
        ("--scope", "missing"),
        ("--audience", "https://missing.example"),
        ("--ttl", "999999"),
    ],
)
def test_machine_create_refuses_unknown_registry_entries(db, args):
    _run("scope", "create", "read")
    before = _counts()

    with pytest.raises(CommandError) as raised:
        call_command("machine", "create", "--name", "x", *args, stdout=StringIO())

    assert raised.value.returncode == 2
    assert _counts() == before


def test_rotate_revoke_disable_enable_and_list(machine_and_secret):
    machine, first = machine_and_secret

    rotated = _run("machine", "rotate-secret", machine.client_id, "--grace", "60")
    first_prefix = first[:11]
    revoked = _run("machine", "revoke-secret", machine.client_id, first_prefix)
    disabled = _run("machine", "disable", machine.client_id)
    enabled = _run("machine", "enable", machine.client_id)
    listing = _run("machine", "list")

    assert rotated["client_secret"].startswith("mip_cs_")
    assert rotated["client_secret"] != first
    assert revoked["revoked"]["revoked_at"] is not None
    assert (disabled["enabled"], enabled["enabled"]) == (False, True)
    assert [m["client_id"] for m in listing] == [machine.client_id]
    assert len(listing[0]["secrets"]) == 2
    assert "client_secret" not in listing[0]
    assert rotated["client_secret"] not in json.dumps(listing)
    assert list(
        AuditEvent.objects.filter(actor_kind="cli", target_id=machine.client_id)
        .order_by("id")
        .values_list("event_type", flat=True)
    ) == [
        "machine.registered",
        "secret.created",
        "secret.rotated",
        "secret.revoked",
        "machine.disabled",
        "machine.enabled",
    ]


@pytest.mark.parametrize(
    "args",
    [
        ("machine", "rotate-secret", "no-such-client"),
        ("machine", "disable", "no-such-client"),
        ("machine", "revoke-secret", "{client_id}", "mip_cs_zzzz"),
        ("machine", "revoke-secret", "{client_id}", "mip_cs_"),
        ("machine", "rotate-secret", "{client_id}", "--grace", "-5"),
        ("scope", "create", "bad scope"),
        ("audience", "create", "not-a-uri"),
        ("audience", "create", "http://[::1"),
        ("machine", "create", "--name", "bad\x00name"),
        ("machine", "create", "--name", "ok", "--description", "\x1b[2J"),
        ("machine", "create", "--name", "ok", "--team", "a\x00"),
        ("machine", "create", "--name", "ok", "--tag", "t\x07"),
    ],
)
def test_refused_commands_exit_2_and_change_nothing(machine_and_secret, args):
    machine, _ = machine_and_secret

    secret_create(actor=Actor.cli(), machine=machine)  # two secrets: "mip_cs_" is ambiguous
    before = _counts()

    with pytest.raises(CommandError) as raised:
        call_command(*[a.format(client_id=machine.client_id) for a in args], stdout=StringIO())

    assert raised.value.returncode == 2
    assert _counts() == before


@pytest.mark.parametrize(
    "prefix",
    ["", "m", "mip_cs", "mip_cs_", "…", "mip_cs_…", "xyz_cs_AbCd", "{raw}", "{raw_prefix}Z"],
)
def test_revoke_secret_refuses_a_prefix_that_is_not_one_and_never_echoes_it(
    machine_and_secret, prefix
):
    machine, raw = machine_and_secret
    typed = prefix.format(raw=raw, raw_prefix=raw[:11])
    before = _counts()

    with pytest.raises(CommandError) as raised:
        call_command("machine", "revoke-secret", machine.client_id, typed, stdout=StringIO())

    assert raised.value.returncode == 2
    assert _counts() == before
    assert ClientSecret.objects.get(machine=machine).revoked_at is None
    assert str(raised.value) == (
        "A secret prefix is mip_cs_ followed by 1 to 4 characters, "
        "as the console and `machine list` show it."
    )


def test_revoke_secret_takes_the_display_form_and_a_shorter_prefix(machine_and_secret):
    machine, raw = machine_and_secret
    secret = ClientSecret.objects.get(machine=machine)

    revoked = _run("machine", "revoke-secret", machine.client_id, f"{raw[:8]}…{raw[-4:]}")

    assert revoked["revoked"]["id"] == secret.pk
    assert revoked["revoked"]["revoked_at"] is not None


@pytest.mark.postgres
def test_a_nul_in_machine_text_exits_2_on_postgresql(db):
    before = _counts()

    with pytest.raises(CommandError) as raised:
        call_command("machine", "create", "--name", "nul\x00name", stdout=StringIO())

    assert raised.value.returncode == 2
    assert str(raised.value) == "name: Control characters are not allowed."
    assert _counts() == before


def test_revoke_secret_does_not_echo_an_unknown_prefix(machine_and_secret):
    machine, raw = machine_and_secret
    other = "mip_cs_" + ("A" if raw[7] != "A" else "B")
    before = _counts()

    with pytest.raises(CommandError) as raised:
        call_command("machine", "revoke-secret", machine.client_id, other, stdout=StringIO())

    assert raised.value.returncode == 2
    assert str(raised.value) == "No secret of this machine starts with the given prefix."
    assert _counts() == before
