"""Client authentication and secrets: checks pinned by the mutation run (`make mutate`).

Each test here kills mutants that survived the rest of the suite: the usable-secret
predicate at its edges, the denial event's exact actor and target, and exception
messages that must never carry the failure reason.
"""

from datetime import UTC, datetime, timedelta

import pytest

from audit.choices import EventType
from audit.models import AuditEvent
from clients.authentication import (
    ClientAuthError,
    ClientCredentials,
    MalformedClientRequest,
    Throttled,
    client_authenticate,
)
from clients.credentials import secret_is_usable

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
DENIAL_FIELDS = (
    "actor_kind",
    "actor_id",
    "actor_display",
    "target_kind",
    "target_id",
    "target_display",
    "outcome",
    "reason",
    "details",
)


def _usable(**overrides) -> bool:
    values = {
        "created_at": NOW - timedelta(seconds=10),
        "expires_at": None,
        "revoked_at": None,
        "max_secret_age": None,
        "now": NOW,
    }
    values.update(overrides)
    return secret_is_usable(**values)


@pytest.mark.parametrize(
    ("overrides", "usable"),
    [
        ({}, True),
        ({"revoked_at": NOW - timedelta(seconds=1)}, False),
        # Revoked wins even when the secret would otherwise be usable for a long time.
        ({"revoked_at": NOW, "expires_at": NOW + timedelta(days=1)}, False),
        ({"expires_at": NOW + timedelta(seconds=1)}, True),
        ({"expires_at": NOW}, False),  # expires at this instant: no longer usable
        ({"expires_at": NOW - timedelta(seconds=1)}, False),
        ({"max_secret_age": 60}, True),  # created 10 s ago, may live 60 s
        ({"max_secret_age": 10}, False),  # created exactly max_secret_age ago
        ({"max_secret_age": 9}, False),
        # The earlier of its own expiry and the machine's maximum age applies.
        ({"max_secret_age": 5, "expires_at": NOW + timedelta(days=1)}, False),
        ({"max_secret_age": 3600, "expires_at": NOW - timedelta(seconds=1)}, False),
    ],
)
def test_secret_is_usable_at_its_edges(overrides, usable):
    assert _usable(**overrides) is usable


def test_the_failure_message_never_names_the_reason():
    error = ClientAuthError(reason="wrong_secret", used_basic=True)

    assert str(error) == "client authentication failed"
    assert error.args == ("client authentication failed",)
    assert (error.reason, error.used_basic) == ("wrong_secret", True)


def test_malformed_request_and_throttled_carry_their_values():
    malformed = MalformedClientRequest(
        error="invalid_request", description="a parameter is repeated", status=400, used_basic=False
    )
    throttled = Throttled(retry_after=7)

    assert str(malformed) == "a parameter is repeated"
    assert (malformed.error, malformed.status, malformed.used_basic) == (
        "invalid_request",
        400,
        False,
    )
    assert (throttled.args, throttled.retry_after) == ((7,), 7)


def _denials():
    return list(
        AuditEvent.objects.filter(event_type=EventType.TOKEN_DENIED)
        .order_by("id")
        .values_list(*DENIAL_FIELDS)
    )


def test_an_unknown_clients_denial_names_it_truncated_as_actor_and_target(db, request_ctx):
    client_id = "u" * 200  # within the 255 accepted, longer than the 128 recorded

    with pytest.raises(ClientAuthError):
        client_authenticate(
            credentials=ClientCredentials(
                client_id=client_id, secret="whatever", method="client_secret_post"
            ),
            context=request_ctx,
        )

    recorded = "u" * 128
    assert _denials() == [
        (
            "anonymous",
            recorded,
            recorded,
            "machine",
            recorded,
            recorded,
            "failure",
            "unknown_client",
            {"method": "client_secret_post"},
        )
    ]


def test_a_known_machines_denial_names_the_machine_as_actor_and_target(
    machine_and_secret, request_ctx
):
    machine, raw = machine_and_secret

    with pytest.raises(ClientAuthError):
        client_authenticate(
            credentials=ClientCredentials(
                client_id=machine.client_id, secret=raw + "x", method="client_secret_basic"
            ),
            context=request_ctx,
        )

    assert _denials() == [
        (
            "machine",
            machine.client_id,
            "billing-job",
            "machine",
            machine.client_id,
            "billing-job",
            "failure",
            "wrong_secret",
            {"method": "client_secret_basic"},
        )
    ]
