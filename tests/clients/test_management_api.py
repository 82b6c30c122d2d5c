"""The management API: machines manage machines with their own tokens, within their scopes.

Tokens are real: each calling machine gets one from /oauth/token for the
management API's audience, as a CI job would.
"""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from audit.choices import EventType
from audit.models import AuditEvent
from clients.models import ApiIdempotencyKey, Audience, ClientSecret, Machine, Scope
from core.roles import AUDITORS, SECURITY_ADMINS
from tests.fixtures.core import console_login
from tests.fixtures.tokens import API
from tests.tokens.helpers import issue_token, token_request

pytestmark = pytest.mark.django_db
MACHINES = "/api/v1/machines"
PROBLEM = "application/problem+json"


def _manager(machine_factory, *scopes: str, name: str = "ci-deployer"):
    return machine_factory(
        name=name,
        scopes=scopes,
        default_scopes=scopes,
        audiences=(settings.MANAGEMENT_API_AUDIENCE,),
        default_audience=settings.MANAGEMENT_API_AUDIENCE,
    )


def _bearer(client, registered) -> dict:
    token = issue_token(client, registered)
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def _post(client, path, body=None, **headers):
    return client.post(
        path, data=json.dumps(body or {}), content_type="application/json", **headers
    )


def _patch(client, path, body, **headers):
    return client.patch(path, data=json.dumps(body), content_type="application/json", **headers)


def _new(name: str, **fields) -> dict:
    """A registration body: every machine needs an audience it may get tokens for."""
    Audience.objects.get_or_create(uri=API)
    return {"name": name, "audiences": [API], **fields}


def _events(event_type: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("id"))


@pytest.fixture
def deployer(client, signing_key, machine_factory):
    """A CI job's machine holding only ``machines:write``, and its bearer headers."""
    registered = _manager(machine_factory, "machines:write")
    return registered, _bearer(client, registered)


def test_a_machine_holding_only_machines_write_registers_rotates_and_disables_a_machine(
    client, deployer
):
    manager, auth = deployer

    created = _post(client, MACHINES, _new("billing-job"), **auth)
    assert created.status_code == 201, created.content
    assert created["Cache-Control"] == "no-store"
    body = created.json()
    client_id, first_secret = body["client_id"], body["client_secret"]
    assert body["name"] == "billing-job"
    assert body["scopes"] == []
    assert [secret["state"] for secret in body["secrets"]] == ["active"]

    rotated = _post(client, f"{MACHINES}/{client_id}/secrets", {"grace": 300}, **auth)
    assert rotated.status_code == 201, rotated.content
    assert rotated["Cache-Control"] == "no-store"
    second_secret = rotated.json()["client_secret"]
    assert second_secret != first_secret
    assert rotated.json()["secret"]["state"] == "active"

    disabled = _post(client, f"{MACHINES}/{client_id}/disable", **auth)
    assert disabled.status_code == 200
    assert disabled.json()["enabled"] is False
    assert Machine.objects.get(client_id=client_id).enabled is False

    for event_type in (
        EventType.MACHINE_REGISTERED,
        EventType.SECRET_ROTATED,
        EventType.MACHINE_DISABLED,
    ):
        (event,) = _events(event_type)
        assert (event.actor_kind, event.actor_id) == ("machine", manager.client_id)
        assert event.target_id == client_id
        assert first_secret not in json.dumps(event.details)
        assert second_secret not in json.dumps(event.details)


def test_the_registered_machine_gets_a_token_with_the_secret_the_api_returned(client, deployer):
    _, auth = deployer
    body = _post(client, MACHINES, _new("billing-job"), **auth).json()

    class Registered:
        client_id = body["client_id"]
        secret = body["client_secret"]

    response = token_request(client, Registered)

    assert response.status_code == 200, response.content
    assert response.json()["token_type"] == "Bearer"


def test_a_machine_cannot_grant_a_scope_its_token_does_not_carry(client, deployer):
    Scope.objects.create(name="orders:read")
    _, auth = deployer
    before = Machine.objects.count()

    response = _post(client, MACHINES, _new("greedy", scopes=["orders:read"]), **auth)

    assert response.status_code == 403
    assert response["Content-Type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == 403
    assert problem["title"] == "Forbidden"
    assert "lacking orders:read" in problem["detail"]
    assert Machine.objects.count() == before
    assert _events(EventType.MACHINE_REGISTERED) == []


def test_a_machine_cannot_give_itself_a_scope_it_lacks(client, deployer):
    manager, auth = deployer
    Scope.objects.create(name="keys:write")

    response = _patch(client, f"{MACHINES}/{manager.client_id}", {"scopes": ["keys:write"]}, **auth)

    assert response.status_code == 403
    assert sorted(s.name for s in manager.machine.allowed_scopes.all()) == ["machines:write"]
    assert _events(EventType.MACHINE_UPDATED) == []


def test_a_machine_cannot_take_over_a_more_powerful_machine(client, deployer, machine_factory):
    powerful = machine_factory(name="orders-worker")  # holds orders:read, orders:write, openid
    _, auth = deployer
    secrets_before = ClientSecret.objects.filter(machine=powerful.machine).count()

    rotate = _post(client, f"{MACHINES}/{powerful.client_id}/secrets", **auth)
    disable = _post(client, f"{MACHINES}/{powerful.client_id}/disable", **auth)
    rename = _patch(client, f"{MACHINES}/{powerful.client_id}", {"name": "mine"}, **auth)

    assert [rotate.status_code, disable.status_code, rename.status_code] == [403, 403, 403]
    assert "also holds openid, orders:read, orders:write" in rotate.json()["detail"]
    powerful.machine.refresh_from_db()
    assert (powerful.machine.enabled, powerful.machine.name) == (True, "orders-worker")
    assert ClientSecret.objects.filter(machine=powerful.machine).count() == secrets_before


def test_machines_read_reads_and_cannot_write(client, signing_key, machine_factory):
    reader = _manager(machine_factory, "machines:read", name="inventory")
    auth = _bearer(client, reader)

    listed = client.get(MACHINES, **auth)
    refused = _post(client, MACHINES, _new("x"), **auth)

    assert listed.status_code == 200
    assert [m["client_id"] for m in listed.json()["results"]] == [reader.client_id]
    assert refused.status_code == 403
    assert Machine.objects.count() == 1


def test_a_token_for_another_audience_or_no_token_is_refused(client, signing_key, machine_factory):
    elsewhere = machine_factory(
        name="elsewhere",
        scopes=("machines:write",),
        default_scopes=("machines:write",),
        audiences=(API,),
        default_audience=API,
    )
    auth = _bearer(client, elsewhere)

    wrong_audience = _post(client, MACHINES, _new("x"), **auth)
    anonymous = _post(client, MACHINES, _new("x"))
    garbage = _post(client, MACHINES, _new("x"), HTTP_AUTHORIZATION="Bearer not.a.jwt")

    assert wrong_audience.status_code == 403
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"] == 'Bearer realm="Machine Identity Portal"'
    assert anonymous["Content-Type"] == PROBLEM
    assert garbage.status_code == 401
    assert Machine.objects.filter(name="x").count() == 0


def test_keys_need_keys_write(client, signing_key, machine_factory):
    writer = _manager(machine_factory, "machines:write", name="w")
    keeper = _manager(machine_factory, "keys:write", name="k")

    refused = _post(client, "/api/v1/keys/rotate", **_bearer(client, writer))
    listed = client.get("/api/v1/keys", **_bearer(client, writer))
    rotated = _post(
        client, "/api/v1/keys/rotate", {"algorithm": "EdDSA"}, **_bearer(client, keeper)
    )

    assert refused.status_code == 403
    assert listed.status_code == 200
    assert [key["kid"] for key in listed.json()] == [signing_key.kid]
    assert rotated.status_code == 201
    assert rotated.json()["algorithm"] == "EdDSA"
    assert rotated.json()["state"] == "pending"
    assert "private_key_wrapped" not in rotated.json()
    (event,) = _events(EventType.KEY_CREATED)[-1:]
    assert (event.actor_kind, event.actor_id) == ("machine", keeper.client_id)

    revoked = _post(
        client, f"/api/v1/keys/{rotated.json()['kid']}/revoke", **_bearer(client, keeper)
    )
    unknown = _post(client, "/api/v1/keys/no-such-kid/revoke", **_bearer(client, keeper))
    assert revoked.status_code == 200
    assert revoked.json()["state"] == "revoked"
    assert unknown.status_code == 404
    assert unknown["Content-Type"] == PROBLEM


def _user(username: str, group: str | None):
    user = get_user_model().objects.create_user(username=username, password="correct horse 42")
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def test_an_auditor_reads_and_is_refused_every_change(client, signing_key):
    console_login(client, _user("audrey", AUDITORS))

    assert client.get(MACHINES).status_code == 200
    assert client.get("/api/v1/keys").status_code == 200
    assert _post(client, MACHINES, _new("x")).status_code == 403
    assert _post(client, "/api/v1/keys/rotate").status_code == 403
    assert _post(client, "/api/v1/scopes", {"name": "x:y"}).status_code == 403
    assert Machine.objects.count() == 0
    assert Scope.objects.filter(name="x:y").count() == 0


def test_a_console_user_without_a_role_is_refused(client):
    console_login(client, _user("bob", None))
    assert client.get(MACHINES).status_code == 403


def test_a_session_short_of_its_second_factor_is_not_signed_in(client, signing_key):
    client.force_login(_user("sally", SECURITY_ADMINS))  # password only, no TOTP yet

    assert client.get(MACHINES).status_code == 401
    assert _post(client, MACHINES, _new("x")).status_code == 401
    assert Machine.objects.count() == 0


def test_a_security_admin_session_writes_only_with_the_csrf_token(signing_key):
    browser = Client(enforce_csrf_checks=True)
    admin = _user("sally", SECURITY_ADMINS)
    console_login(browser, admin)

    without = _post(browser, MACHINES, _new("from-console"))
    assert without.status_code == 403
    assert "CSRF" in without.json()["detail"]
    assert Machine.objects.count() == 0

    token = "k" * 32  # what the console's pages would have set: the cookie and its echo
    browser.cookies["csrftoken"] = token
    with_token = _post(browser, MACHINES, _new("from-console"), HTTP_X_CSRFTOKEN=token)
    assert with_token.status_code == 201
    (event,) = _events(EventType.MACHINE_REGISTERED)
    assert (event.actor_kind, event.actor_id) == ("user", str(admin.pk))


def test_a_retried_create_with_the_same_idempotency_key_creates_nothing_twice(client, deployer):
    _, auth = deployer
    first = _post(client, MACHINES, _new("once"), HTTP_IDEMPOTENCY_KEY="abc-1", **auth)
    again = _post(client, MACHINES, _new("once"), HTTP_IDEMPOTENCY_KEY="abc-1", **auth)

    assert (first.status_code, again.status_code) == (201, 201)
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert again.json()["client_id"] == first.json()["client_id"]
    assert "client_secret" not in again.json()  # a secret is shown once
    assert again.json()["secret_already_shown"] is True
    assert Machine.objects.filter(name="once").count() == 1
    assert len(_events(EventType.MACHINE_REGISTERED)) == 1
    stored = ApiIdempotencyKey.objects.get(key="abc-1")
    assert first.json()["client_secret"] not in json.dumps(stored.body)


def test_an_idempotency_key_reused_for_another_request_is_refused(client, deployer):
    _, auth = deployer
    _post(client, MACHINES, _new("one"), HTTP_IDEMPOTENCY_KEY="k", **auth)

    other = _post(client, MACHINES, _new("two"), HTTP_IDEMPOTENCY_KEY="k", **auth)

    assert other.status_code == 422
    assert other["Content-Type"] == PROBLEM
    assert Machine.objects.filter(name="two").count() == 0


def test_a_refused_request_leaves_its_idempotency_key_free(client, deployer):
    _, auth = deployer
    bad = _post(client, MACHINES, _new(""), HTTP_IDEMPOTENCY_KEY="k2", **auth)
    good = _post(client, MACHINES, _new("fixed"), HTTP_IDEMPOTENCY_KEY="k2", **auth)

    assert bad.status_code == 400
    assert good.status_code == 201
    assert "Idempotent-Replayed" not in good


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
def test_a_malformed_idempotency_key_is_refused(client, deployer, key):
    _, auth = deployer
    response = _post(client, MACHINES, _new("k"), HTTP_IDEMPOTENCY_KEY=key, **auth)
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["Idempotency-Key"]
    assert Machine.objects.filter(name="k").count() == 0


def test_a_stale_if_match_is_refused_and_changes_nothing(client, deployer):
    _, auth = deployer
    client_id = _post(client, MACHINES, _new("v1"), **auth).json()["client_id"]
    read = client.get(f"{MACHINES}/{client_id}", **auth)
    etag = read["ETag"]
    assert _patch(client, f"{MACHINES}/{client_id}", {"description": "by someone else"}, **auth)

    stale = _patch(client, f"{MACHINES}/{client_id}", {"name": "v2"}, HTTP_IF_MATCH=etag, **auth)

    assert stale.status_code == 412
    assert stale["Content-Type"] == PROBLEM
    assert Machine.objects.get(client_id=client_id).name == "v1"
    current = client.get(f"{MACHINES}/{client_id}", **auth)["ETag"]
    fresh = _patch(client, f"{MACHINES}/{client_id}", {"name": "v2"}, HTTP_IF_MATCH=current, **auth)
    assert fresh.status_code == 200
    assert fresh.json()["name"] == "v2"
    assert fresh["ETag"] not in (etag, current)


def test_callers_over_their_rate_get_429_with_retry_after(client, deployer, settings):
    settings.MANAGEMENT_API_RATE = "3/minute"
    _, auth = deployer
    statuses = [client.get(MACHINES, **auth).status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]
    limited = client.get(MACHINES, **auth)
    assert limited["Content-Type"] == PROBLEM
    assert 1 <= int(limited["Retry-After"]) <= 60


def test_invalid_input_is_a_problem_document_naming_the_fields(client, deployer):
    _, auth = deployer
    response = _post(
        client,
        MACHINES,
        {"name": "x", "access_token_ttl": "soon", "scopes": "orders:read", "audiences": [1] * 101},
        **auth,
    )

    assert response.status_code == 400
    problem = response.json()
    assert problem["type"].endswith("/invalid")
    assert sorted(problem["errors"]) == ["access_token_ttl", "audiences", "scopes"]
    assert Machine.objects.filter(name="x").count() == 0


@pytest.mark.parametrize(
    "body", [b"{", b"[]", b'"name"', b"\xff\xfe", b'{"name": null}', b'{"name": "a\\u0000b"}']
)
def test_malformed_bodies_get_4xx_and_change_nothing(client, deployer, body):
    _, auth = deployer
    response = client.post(MACHINES, data=body, content_type="application/json", **auth)
    assert 400 <= response.status_code < 500
    assert response["Content-Type"] == PROBLEM
    assert Machine.objects.count() == 1  # the deployer itself


def test_an_unknown_filter_is_refused_rather_than_ignored(client, deployer):
    _, auth = deployer
    response = client.get(MACHINES, {"enabeld": "false"}, **auth)
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["enabeld"]


def test_listing_filters_and_pages_with_a_cursor(client, deployer):
    _, auth = deployer
    for index in range(3):
        _post(client, MACHINES, _new(f"job-{index}", owner_team="batch"), **auth)

    page = client.get(MACHINES, {"owner_team": "batch", "page_size": 2}, **auth).json()
    rest = client.get(page["next"], **auth).json()

    assert [m["name"] for m in page["results"]] == ["job-0", "job-1"]
    assert [m["name"] for m in rest["results"]] == ["job-2"]
    assert rest["next"] is None
