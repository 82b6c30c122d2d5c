"""POST /api/v1/machines/self/secret: a machine rotates its own secret (issue 12).

Every check goes through real token requests: the old and the new secret
both get tokens during the grace period, only the new one after it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from audit.models import AuditEvent
from clients.models import ClientSecret
from clients.services import secret_create, secret_revoke
from tests.tokens.helpers import FORM, basic, token_request

pytestmark = pytest.mark.django_db

URL = "/api/v1/machines/self/secret"
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def committing(django_capture_on_commit_callbacks):
    """Run what waits for commit (the cache tombstones) as a real commit would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def rotate(client, committing):
    """As ``curl -u id:secret -X POST URL`` sends it: no body, no content type."""

    def call(client_id: str, secret: str):
        with committing():
            return client.generic("POST", URL, b"", HTTP_AUTHORIZATION=basic(client_id, secret))

    return call


def test_a_machine_rotates_its_own_secret_and_both_work_during_the_grace(
    client, signing_key, machine_factory, rotate
):
    registered = machine_factory()
    registered.machine.rotation_grace = 3600
    registered.machine.save(update_fields=["rotation_grace"])
    with time_machine.travel(T0, tick=False):
        response = rotate(registered.client_id, registered.secret)

        assert response.status_code == 201
        assert response["Content-Type"] == "application/json"
        assert response["Cache-Control"] == "no-store"
        body = json.loads(response.content)
        assert sorted(body) == [
            "client_id",
            "client_secret",
            "client_secret_expires_at",
            "previous_secret_expires_at",
        ]
        assert body["client_id"] == registered.client_id
        assert body["client_secret"].startswith("mip_cs_")
        assert body["client_secret"] != registered.secret
        assert body["client_secret_expires_at"] == 0  # no maximum age
        assert body["previous_secret_expires_at"] == int((T0 + timedelta(hours=1)).timestamp())
        new = replace(registered, secret=body["client_secret"])
        # Both secrets get tokens during the grace period.
        assert token_request(client, registered).status_code == 200
        assert token_request(client, new).status_code == 200

    event = AuditEvent.objects.get(event_type="secret.rotated")
    assert (event.actor_kind, event.actor_id, event.target_id) == (
        "machine",
        registered.client_id,
        registered.client_id,
    )
    assert event.details["grace_seconds"] == 3600
    assert body["client_secret"] not in json.dumps(event.details)
    assert ClientSecret.objects.filter(machine=registered.machine).count() == 2

    with time_machine.travel(T0 + timedelta(hours=1, seconds=1), tick=False):
        assert token_request(client, registered).status_code == 401
        assert token_request(client, new).status_code == 200


def test_a_secret_in_its_grace_cannot_rotate_again(client, signing_key, machine_factory, rotate):
    # Whoever leaked the old secret must not get a fresh one and cut the new one short.
    registered = machine_factory()
    new_secret = json.loads(rotate(registered.client_id, registered.secret).content)[
        "client_secret"
    ]
    secrets_before = list(
        ClientSecret.objects.filter(machine=registered.machine).values_list("pk", "expires_at")
    )
    events_before = AuditEvent.objects.filter(event_type="secret.rotated").count()

    refused = rotate(registered.client_id, registered.secret)

    assert refused.status_code == 400
    assert json.loads(refused.content)["error"] == "invalid_request"
    assert new_secret not in refused.content.decode()
    assert (
        list(
            ClientSecret.objects.filter(machine=registered.machine).values_list("pk", "expires_at")
        )
        == secrets_before
    )
    assert AuditEvent.objects.filter(event_type="secret.rotated").count() == events_before
    # The newest secret still rotates.
    assert rotate(registered.client_id, new_secret).status_code == 201


def test_the_new_secret_carries_the_maximum_age_policy(
    client, signing_key, machine_factory, rotate
):
    registered = machine_factory()
    registered.machine.max_secret_age = 30 * 86400
    registered.machine.save(update_fields=["max_secret_age"])
    with time_machine.travel(T0, tick=False):
        body = json.loads(rotate(registered.client_id, registered.secret).content)
    assert body["client_secret_expires_at"] == int((T0 + timedelta(days=30)).timestamp())


def test_client_secret_post_in_a_form_body_works_too(
    client, signing_key, machine_factory, committing
):
    registered = machine_factory()
    with committing():
        response = client.post(
            URL,
            data=f"client_id={registered.client_id}&client_secret={registered.secret}&unknown=1",
            content_type=FORM,
        )
    assert response.status_code == 201
    assert ClientSecret.objects.filter(machine=registered.machine).count() == 2


def _assert_refused(response) -> None:
    assert response.status_code == 401
    assert json.loads(response.content) == {
        "error": "invalid_client",
        "error_description": "Client authentication failed.",
    }
    assert response["WWW-Authenticate"] == 'Basic realm="Machine Identity Portal"'


def test_a_wrong_secret_gets_401_audited_and_nothing_changes(
    client, signing_key, machine_factory, rotate
):
    registered = machine_factory()
    _assert_refused(rotate(registered.client_id, "mip_cs_" + "x" * 43))
    assert ClientSecret.objects.filter(machine=registered.machine).count() == 1
    assert not AuditEvent.objects.filter(event_type="secret.rotated").exists()
    denial = AuditEvent.objects.get(event_type="token.denied")
    assert (denial.reason, denial.target_id) == ("wrong_secret", registered.client_id)


def test_a_revoked_or_expired_secret_gets_401(
    client, signing_key, machine_factory, cli_actor, rotate
):
    registered = machine_factory()
    secret = ClientSecret.objects.get(machine=registered.machine)
    secret_revoke(actor=cli_actor, secret=secret)
    _assert_refused(rotate(registered.client_id, registered.secret))

    expiring = machine_factory(name="expiring")
    ClientSecret.objects.filter(machine=expiring.machine).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    _assert_refused(rotate(expiring.client_id, expiring.secret))
    reasons = sorted(
        AuditEvent.objects.filter(event_type="token.denied").values_list("reason", flat=True)
    )
    assert reasons == ["secret_expired", "secret_revoked"]
    assert ClientSecret.objects.count() == 2
    assert not AuditEvent.objects.filter(event_type="secret.rotated").exists()


def test_repeated_failures_are_throttled_like_the_token_endpoint(
    client, signing_key, machine_factory, rotate
):
    registered = machine_factory()
    with time_machine.travel(T0, tick=False):
        statuses = [rotate(registered.client_id, "mip_cs_wrong").status_code for _ in range(6)]
        throttled = rotate(registered.client_id, registered.secret)
    assert statuses == [401] * 6
    assert throttled.status_code == 429
    assert json.loads(throttled.content)["error"] == "slow_down"
    assert throttled["Retry-After"] == "1"
    # The token endpoint shares the count: the pair is blocked there as well.
    with time_machine.travel(T0, tick=False):
        assert token_request(client, registered).status_code == 429
    assert ClientSecret.objects.filter(machine=registered.machine).count() == 1


@pytest.mark.parametrize(
    ("method", "kwargs", "status"),
    [
        ("get", {}, 405),
        ("post", {"data": b'{"kty":"EC"}', "content_type": "application/json"}, 400),
        ("post", {"data": b"client_id=a&client_id=b", "content_type": FORM}, 400),
        ("post", {"data": b"\xff\xfe", "content_type": FORM}, 400),
    ],
)
def test_bad_requests_get_a_clear_4xx_and_change_nothing(
    client, signing_key, machine_factory, method, kwargs, status
):
    registered = machine_factory()
    response = getattr(client, method)(
        URL, HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret), **kwargs
    )
    assert response.status_code == status
    assert "error" in json.loads(response.content)
    assert ClientSecret.objects.filter(machine=registered.machine).count() == 1
    assert not AuditEvent.objects.filter(event_type="secret.rotated").exists()


def test_a_single_use_bootstrap_secret_rotates_itself_a_lasting_one(
    client, signing_key, machine_factory, cli_actor, rotate, committing
):
    registered = machine_factory()
    ClientSecret.objects.filter(machine=registered.machine).update(revoked_at=timezone.now())
    with committing():
        secret, raw = secret_create(actor=cli_actor, machine=registered.machine, max_uses=1)
    bootstrap = replace(registered, secret=raw)

    response = rotate(bootstrap.client_id, bootstrap.secret)
    assert response.status_code == 201
    lasting = replace(registered, secret=json.loads(response.content)["client_secret"])

    # The single use is spent: refused everywhere, the lasting secret works.
    _assert_refused(token_request(client, bootstrap))
    _assert_refused(rotate(bootstrap.client_id, bootstrap.secret))
    assert token_request(client, lasting).status_code == 200
    secret.refresh_from_db()
    assert (secret.max_uses, secret.use_count) == (1, 1)
    assert list(
        AuditEvent.objects.filter(event_type="token.denied").values_list("reason", flat=True)
    ) == ["secret_used_up", "secret_used_up"]


def test_an_n_use_secret_authenticates_n_times(client, signing_key, machine_factory, cli_actor):
    registered = machine_factory()
    ClientSecret.objects.filter(machine=registered.machine).update(revoked_at=timezone.now())
    _, raw = secret_create(actor=cli_actor, machine=registered.machine, max_uses=3)
    limited = replace(registered, secret=raw)
    statuses = [token_request(client, limited).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 401]


def test_a_not_before_secret_works_only_from_its_time(
    client, signing_key, machine_factory, cli_actor
):
    registered = machine_factory()
    with time_machine.travel(T0, tick=False):
        _secret, raw = secret_create(
            actor=cli_actor, machine=registered.machine, not_before=T0 + timedelta(hours=2)
        )
        later = replace(registered, secret=raw)
        _assert_refused(token_request(client, later))
    assert AuditEvent.objects.get(event_type="token.denied").reason == "secret_not_yet_valid"
    created = AuditEvent.objects.filter(event_type="secret.created").latest("id")
    assert created.details["not_before"] == (T0 + timedelta(hours=2)).isoformat()
    with time_machine.travel(T0 + timedelta(hours=2), tick=False):
        assert token_request(client, later).status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_uses": 0}, "max_uses"),
        ({"max_uses": -1}, "max_uses"),
        ({"max_uses": "3"}, "max_uses"),
        ({"not_before": datetime(2026, 6, 1, 12, 0)}, "not_before"),  # noqa: DTZ001 (naive on purpose)
        ({"not_before": "2026-06-01"}, "not_before"),
    ],
)
def test_bad_limits_are_refused_and_nothing_is_created(machine_factory, cli_actor, kwargs, field):
    from django.core.exceptions import ValidationError

    registered = machine_factory()
    with pytest.raises(ValidationError) as caught:
        secret_create(actor=cli_actor, machine=registered.machine, **kwargs)
    assert list(caught.value.message_dict) == [field]
    assert ClientSecret.objects.filter(machine=registered.machine).count() == 1
