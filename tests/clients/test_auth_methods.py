"""The registry of client authentication methods and a machine's own list of allowed methods."""

import base64
import json
from io import StringIO
from urllib.parse import urlencode

import pytest
from django.core.management import CommandError, call_command

from audit.choices import EventType
from audit.models import AuditEvent
from clients.auth_methods import (
    Presented,
    auth_methods_check,
    auth_methods_supported,
    auth_methods_with_secret,
    presented_method,
)
from clients.authentication import ClientAuthError, ClientCredentials, client_authenticate
from clients.models import ClientSecret, Machine
from clients.services import machine_register, machine_update
from core.errors import InvalidRequest
from tests.fixtures.core import console_login

FORM = "application/x-www-form-urlencoded"
SECRET_METHODS = ["client_secret_basic", "client_secret_post"]


def _run(*args) -> dict:
    out = StringIO()
    call_command(*args, stdout=out)
    return json.loads(out.getvalue())


def _authenticate(client_id, secret, method, context):
    return client_authenticate(
        credentials=ClientCredentials(client_id=client_id, secret=secret, method=method),
        context=context,
    )


def test_the_registry_lists_the_secret_methods_first_and_says_they_use_a_secret():
    assert auth_methods_supported()[:2] == SECRET_METHODS
    assert auth_methods_with_secret() == frozenset(SECRET_METHODS)


def test_method_names_are_checked_against_the_registry_and_put_in_its_order():
    assert auth_methods_check(["client_secret_post", "client_secret_basic"]) == SECRET_METHODS
    with pytest.raises(ValueError, match="Unknown authentication method"):
        auth_methods_check(["client_secret_jwt"])
    # The message an operator reads names every unknown method, sorted.
    with pytest.raises(ValueError) as raised:
        auth_methods_check(["tls_client_auth", "client_secret_post", "client_secret_jwt"])
    assert str(raised.value) == (
        "Unknown authentication method(s): client_secret_jwt, tls_client_auth."
    )


def test_two_methods_in_one_request_are_refused():
    presented = Presented(authorization="Basic eDp5", form={"client_secret": ["s"]})

    with pytest.raises(InvalidRequest) as raised:
        presented_method(presented)

    assert raised.value.description == "use one client authentication method, not two"


def test_every_method_says_where_its_credentials_travel():
    from clients.auth_methods import AUTHORIZATION, CLIENT_AUTH_PARAMETERS, auth_methods

    carriers = {name: method.carried_in for name, method in auth_methods().items()}

    assert carriers == {
        "client_secret_basic": {AUTHORIZATION},
        "client_secret_post": {"client_secret"},
        "private_key_jwt": {"client_assertion", "client_assertion_type"},
        "federated_jwt": {"client_assertion", "client_assertion_type"},
    }
    assert set().union(*carriers.values()) <= CLIENT_AUTH_PARAMETERS | {AUTHORIZATION}


@pytest.mark.parametrize(
    ("authorization", "form", "asked", "found"),
    [
        ("Basic eDp5", {"client_id": ["x"]}, ["client_secret_basic"], "client_secret_basic"),
        (
            None,
            {"client_id": ["x"], "client_secret": ["s"]},
            ["client_secret_post"],
            "client_secret_post",
        ),
        (None, {"client_id": ["x"]}, [], None),
        (
            None,
            {"client_assertion_type": ["urn:x"]},
            ["private_key_jwt", "federated_jwt"],
            "private_key_jwt",
        ),
    ],
)
def test_only_the_methods_whose_carrier_is_present_are_asked(
    monkeypatch, authorization, form, asked, found
):
    """A Basic request does not pay for reading an assertion, nor an assertion for Basic."""
    from clients.auth_methods import auth_methods

    calls = []
    for method in auth_methods().values():

        def presents(presented, method=method):
            calls.append(method.name)
            return method.name == found

        monkeypatch.setattr(method, "presents", presents)

    chosen = presented_method(Presented(authorization=authorization, form=form))

    assert calls == asked
    assert (chosen.name if chosen else None) == found


def test_a_machine_gets_both_secret_methods_by_default(machine_and_secret):
    machine, _ = machine_and_secret

    assert machine.auth_methods == SECRET_METHODS
    registered = AuditEvent.objects.get(event_type=EventType.MACHINE_REGISTERED)
    assert registered.details["auth_methods"] == SECRET_METHODS


def test_create_with_one_method_prints_it_and_the_other_method_is_refused(
    db, request_ctx, audience_api
):
    result = _run(
        "machine",
        "create",
        "--name",
        "basic-only",
        "--auth-method",
        "client_secret_basic",
        "--audience",
        audience_api.uri,
    )

    assert result["auth_methods"] == ["client_secret_basic"]
    assert result["client_secret"].startswith("mip_cs_")
    machine = _authenticate(
        result["client_id"], result["client_secret"], "client_secret_basic", request_ctx
    ).machine
    assert machine.client_id == result["client_id"]
    with pytest.raises(ClientAuthError) as raised:
        _authenticate(
            result["client_id"], result["client_secret"], "client_secret_post", request_ctx
        )
    assert raised.value.reason == "method_not_allowed"
    denial = AuditEvent.objects.get(event_type=EventType.TOKEN_DENIED)
    assert (denial.reason, denial.details) == (
        "method_not_allowed",
        {"method": "client_secret_post"},
    )


def test_create_without_auth_method_prints_both_secret_methods(db, audience_api):
    result = _run("machine", "create", "--name", "default", "--audience", audience_api.uri)

    assert result["auth_methods"] == SECRET_METHODS
    assert ClientSecret.objects.filter(machine__client_id=result["client_id"]).count() == 1


@pytest.mark.parametrize("method", ["client_secret_jwt", "none", ""])
def test_create_with_an_unknown_method_exits_2_and_changes_nothing(db, method):
    before = (Machine.objects.count(), ClientSecret.objects.count(), AuditEvent.objects.count())

    with pytest.raises(CommandError) as raised:
        call_command("machine", "create", "--name", "x", "--auth-method", method, stdout=StringIO())

    assert raised.value.returncode == 2
    assert (Machine.objects.count(), ClientSecret.objects.count(), AuditEvent.objects.count()) == (
        before
    )


def test_taking_a_method_away_refuses_it_at_once(
    machine_and_secret, cli_actor, request_ctx, django_capture_on_commit_callbacks
):
    machine, raw = machine_and_secret
    _authenticate(machine.client_id, raw, "client_secret_post", request_ctx)

    with django_capture_on_commit_callbacks(execute=True):
        machine_update(actor=cli_actor, machine=machine, auth_methods=["client_secret_basic"])

    with pytest.raises(ClientAuthError) as raised:
        _authenticate(machine.client_id, raw, "client_secret_post", request_ctx)
    assert raised.value.reason == "method_not_allowed"
    updated = AuditEvent.objects.get(event_type=EventType.MACHINE_UPDATED)
    assert updated.details == {
        "changed": ["auth_methods"],
        "after": {"auth_methods": ["client_secret_basic"]},
    }


def test_a_machine_with_no_method_is_refused(db, cli_actor, audience_api):
    with pytest.raises(Exception) as raised:
        machine_register(
            actor=cli_actor, name="none", auth_methods=[], audiences=[audience_api.uri]
        )

    assert raised.value.message_dict == {
        "auth_methods": ["At least one authentication method is required."]
    }
    assert Machine.objects.count() == 0


def test_a_wrong_method_answers_the_same_bytes_as_a_wrong_secret(
    client, machine_and_secret, cli_actor, clean_cache
):
    machine, raw = machine_and_secret
    machine_update(actor=cli_actor, machine=machine, auth_methods=["client_secret_basic"])
    form = {"grant_type": "client_credentials", "client_id": machine.client_id}

    not_allowed = client.post(
        "/oauth/token", urlencode({**form, "client_secret": raw}), content_type=FORM
    )
    basic = base64.b64encode(f"{machine.client_id}:{raw}x".encode()).decode()
    wrong = client.post(
        "/oauth/token",
        urlencode({"grant_type": "client_credentials"}),
        content_type=FORM,
        HTTP_AUTHORIZATION="Basic " + basic,
    )

    assert not_allowed.status_code == 401
    assert (not_allowed.content, not_allowed["WWW-Authenticate"]) == (
        wrong.content,
        wrong["WWW-Authenticate"],
    )
    reasons = AuditEvent.objects.filter(event_type=EventType.TOKEN_DENIED).order_by("id")
    assert [event.reason for event in reasons] == ["method_not_allowed", "wrong_secret"]


def test_the_console_form_offers_every_registered_method(client, db):
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.create_superuser("root", "root@example.test", "pw-unused-1")
    console_login(client, admin)

    page = client.get("/console/clients/machine/add/").content.decode()

    for name in auth_methods_supported():
        assert f'value="{name}"' in page
