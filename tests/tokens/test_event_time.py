"""A token's audit event keeps the moment it was issued to the microsecond.

The token's ``iat`` is whole seconds (RFC 7519 NumericDate); the event's time
was once that value too, so a token issued at 12:00:00.700 sorted before a
machine change recorded at 12:00:00.300, and the newest-first log lied.
"""

from datetime import UTC, datetime

import jwt
import time_machine

from audit.context import Actor, Target
from audit.models import AuditEvent
from audit.services import audit_record
from tests.tokens.helpers import issue_token
from tokens.models import IssuedToken

MOMENT = datetime(2026, 12, 1, 12, 0, 0, 700000, tzinfo=UTC)


def test_the_event_keeps_the_microseconds_the_token_keeps_whole_seconds(
    signing_key, machine_factory, client
):
    registered = machine_factory()

    with time_machine.travel(MOMENT, tick=False):
        token = issue_token(client, registered)

    event = AuditEvent.objects.get(event_type="token.issued")
    record = IssuedToken.objects.get()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert event.occurred_at == MOMENT
    assert record.issued_at == datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert claims["iat"] == int(MOMENT.timestamp())


def test_a_token_sorts_after_a_change_made_earlier_in_the_same_second(
    signing_key, machine_factory, client
):
    registered = machine_factory()
    with time_machine.travel(MOMENT.replace(microsecond=300000), tick=False):
        audit_record(
            event_type="machine.enabled",
            actor=Actor.cli("test"),
            target=Target(kind="machine", id=registered.client_id, display="orders-worker"),
        )

    with time_machine.travel(MOMENT, tick=False):
        issue_token(client, registered)

    # Only the two events in question: the fixtures' own events (the signing
    # key's, the machine's creation) carry the real clock, which may lie on
    # either side of MOMENT.
    newest = (
        AuditEvent.objects.filter(event_type__in=["token.issued", "machine.enabled"])
        .order_by("-occurred_at", "-id")
        .values_list("event_type", flat=True)
    )
    assert list(newest) == ["token.issued", "machine.enabled"]
