"""When the cache cannot be told about a revoke or a disable, the console and the CLI say so.

Transactional: the cache is told after the real commit, inside the view or the
command, which is what the console and the CLI must report on.
"""

import json
from io import StringIO

import pytest
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.core.management import CommandError, call_command

from clients.cache_outcome import cache_failure_report, cache_failures_collected
from clients.machine_cache import MACHINE_CACHE_FAILURE_MESSAGE, machine_generation_key
from clients.models import ClientSecret, Machine
from tests.fixtures.core import CacheWritesFail, console_login

pytestmark = pytest.mark.django_db(transaction=True)

WARNING = (
    "The change is saved, but the cache could not be told: other processes may keep using "
    "the previous state of this machine and its secrets for up to 300 s. Check the cache "
    "(Redis), then repeat the action to tell it again."
)


@pytest.fixture
def cache_down_for_writes(monkeypatch):
    monkeypatch.setattr("clients.machine_cache.cache", CacheWritesFail())


def test_the_message_is_the_one_people_read():
    assert MACHINE_CACHE_FAILURE_MESSAGE == WARNING


def test_failures_are_collected_once_each_and_only_inside_a_collector():
    cache_failure_report(message="outside: nobody listens")
    with cache_failures_collected() as failures:
        cache_failure_report(message="a")
        cache_failure_report(message="a")
        with cache_failures_collected() as inner:
            cache_failure_report(message="b")
        cache_failure_report(message="c")

    assert (failures, inner) == (["a", "c"], ["b"])


def _machine_json(out: StringIO) -> dict:
    return json.loads(out.getvalue())


def test_cli_disable_prints_the_change_and_exits_3_when_the_cache_was_not_told(
    machine_and_secret, cache_down_for_writes
):
    machine, _ = machine_and_secret
    out = StringIO()

    with pytest.raises(CommandError) as raised:
        call_command("machine", "disable", machine.client_id, stdout=out)

    assert raised.value.returncode == 3
    assert str(raised.value) == WARNING
    assert _machine_json(out) == {"client_id": machine.client_id, "enabled": False}
    assert Machine.objects.get(pk=machine.pk).enabled is False


def test_cli_revoke_secret_exits_3_when_the_cache_was_not_told(
    machine_and_secret, cache_down_for_writes
):
    machine, _ = machine_and_secret
    secret = ClientSecret.objects.get(machine=machine)
    out = StringIO()

    with pytest.raises(CommandError) as raised:
        call_command(
            "machine", "revoke-secret", machine.client_id, secret.display_prefix, stdout=out
        )

    assert (raised.value.returncode, str(raised.value)) == (3, WARNING)
    assert _machine_json(out)["revoked"]["id"] == secret.pk
    assert ClientSecret.objects.get(pk=secret.pk).revoked_at is not None


def test_cli_reports_plain_success_when_the_cache_was_told(machine_and_secret):
    machine, _ = machine_and_secret
    registered = cache.get(machine_generation_key(machine.client_id))
    out = StringIO()

    call_command("machine", "disable", machine.client_id, stdout=out)

    assert _machine_json(out) == {"client_id": machine.client_id, "enabled": False}
    assert len(registered) == 32
    assert cache.get(machine_generation_key(machine.client_id)) not in (None, registered)


def test_repeating_a_disable_tells_the_cache_again(machine_and_secret, monkeypatch):
    machine, _ = machine_and_secret
    monkeypatch.setattr("clients.machine_cache.cache", CacheWritesFail())
    with pytest.raises(CommandError):
        call_command("machine", "disable", machine.client_id, stdout=StringIO())
    monkeypatch.undo()  # the cache is back
    registered = cache.get(machine_generation_key(machine.client_id))

    call_command("machine", "disable", machine.client_id, stdout=StringIO())

    assert len(registered) == 32
    assert cache.get(machine_generation_key(machine.client_id)) not in (None, registered)


def _messages(response) -> list[tuple[str, str]]:
    return [(m.level_tag, m.message) for m in get_messages(response.wsgi_request)]


def test_console_disable_action_warns_when_the_cache_was_not_told(
    client, admin_user, machine_and_secret, cache_down_for_writes
):
    machine, _ = machine_and_secret
    console_login(client, admin_user)

    response = client.post(
        "/console/clients/machine/",
        {"action": "disable_selected", "_selected_action": [machine.pk]},
    )

    assert response.status_code == 302
    assert _messages(response) == [("success", "1 machine(s) disabled."), ("warning", WARNING)]
    assert Machine.objects.get(pk=machine.pk).enabled is False


def test_console_revoke_and_delete_warn_when_the_cache_was_not_told(
    client, admin_user, machine_and_secret, cache_down_for_writes
):
    machine, _ = machine_and_secret
    secret = ClientSecret.objects.get(machine=machine)
    console_login(client, admin_user)

    revoked = client.post(f"/console/clients/machine/{machine.pk}/secrets/{secret.pk}/revoke/")
    deleted = client.post(f"/console/clients/machine/{machine.pk}/delete/", {"post": "yes"})

    assert _messages(revoked) == [("success", f"Secret {secret} revoked."), ("warning", WARNING)]
    assert ("warning", WARNING) in _messages(deleted)
    assert Machine.objects.get(pk=machine.pk).deleted_at is not None


def test_console_warns_of_nothing_when_the_cache_was_told(client, admin_user, machine_and_secret):
    machine, _ = machine_and_secret
    console_login(client, admin_user)

    response = client.post(
        "/console/clients/machine/",
        {"action": "disable_selected", "_selected_action": [machine.pk]},
    )

    assert _messages(response) == [("success", "1 machine(s) disabled.")]
