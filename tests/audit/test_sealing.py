"""Sealing committed events into the chain, and the ORM's refusal to change them."""

from __future__ import annotations

import itertools

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from audit import chain
from audit.choices import CheckpointKind
from audit.models import AuditCheckpoint, AuditEvent, AuditSeal
from audit.selectors import audit_chain_verify, audit_events_sealed, audit_unsealed_count
from audit.services import audit_checkpoint_create, audit_seal_pending
from audit.tasks import audit_checkpoint_task, audit_prune_task, audit_seal_pending_task


def test_audit_record_inserts_an_unsealed_event(make_events):
    [event] = make_events(1)

    stored = AuditEvent.objects.get(pk=event.pk)
    assert AuditSeal.objects.count() == 0
    assert audit_unsealed_count() == 1
    assert stored.details == {
        "jti": "jti-0",
        "scope": "read write",
        "aud": ["https://api.test"],
        "n": 0,
    }


def test_sealing_chains_events_in_id_order_from_the_genesis(make_events):
    events = make_events(5)

    assert audit_seal_pending(batch_size=2) == 5

    sealed = list(audit_events_sealed().order_by("position"))
    assert [e.pk for e in sealed] == [e.pk for e in events]
    assert [e.position for e in sealed] == [1, 2, 3, 4, 5]
    assert sealed[0].prev_hash == chain.GENESIS_HASH
    for previous, current in itertools.pairwise(sealed):
        assert current.prev_hash == previous.hash
    assert audit_chain_verify().ok


def test_events_recorded_after_a_seal_go_to_the_next_batch(make_events):
    make_events(2)
    audit_seal_pending()
    make_events(1)

    assert audit_unsealed_count() == 1
    assert audit_seal_pending() == 1
    assert audit_seal_pending() == 0
    assert list(AuditSeal.objects.values_list("position", "event_id")) == [
        (n + 1, pk) for n, pk in enumerate(AuditEvent.objects.values_list("id", flat=True))
    ]


def test_hostile_user_agent_with_nul_is_stored_without_it(db):
    from audit.context import Actor, RequestContext
    from audit.services import audit_record

    event = audit_record(
        event_type="token.denied",
        actor=Actor(kind="anonymous"),
        context=RequestContext(user_agent="evil\x00agent"),
    )

    assert AuditEvent.objects.get(pk=event.pk).user_agent == "evil\ufffdagent"


@pytest.mark.parametrize(
    ("details", "key"),
    [
        ({"nested": [{"client_secret": "x"}]}, "client_secret"),
        ({"Token": "x"}, "Token"),
        ({"a": 1, "b": ({"c": [{"private_key": {}}]},)}, "private_key"),
        ({"list": [[{"PASSWORD": None}]]}, "PASSWORD"),
    ],
)
def test_details_carrying_a_secret_are_refused(db, details, key):
    from audit.context import Actor
    from audit.services import audit_record

    with pytest.raises(ValueError) as refused:
        audit_record(event_type="secret.created", actor=Actor.system(), details=details)
    assert str(refused.value) == f"audit details must not carry {key!r}"
    assert AuditEvent.objects.count() == 0


def test_details_nested_without_a_secret_are_recorded(db):
    from audit.context import Actor
    from audit.services import audit_record

    details = {"a": [1, {"b": ("x", {"kid": "k1"})}], "scope": "read", "n": None}

    event = audit_record(event_type="secret.created", actor=Actor.system(), details=details)

    assert AuditEvent.objects.get(pk=event.pk).details == {
        "a": [1, {"b": ["x", {"kid": "k1"}]}],
        "scope": "read",
        "n": None,
    }


def test_orm_refuses_to_change_or_delete_events_seals_and_checkpoints(make_events):
    [event] = make_events(1)
    audit_seal_pending()
    checkpoint = audit_checkpoint_create()
    seal = AuditSeal.objects.get()
    before = list(audit_events_sealed().values_list("position", "hash", "reason"))

    for attempt in (
        lambda: AuditEvent.objects.update(reason="x"),
        lambda: AuditEvent.objects.all().delete(),
        event.delete,
        event.save,
        lambda: AuditSeal.objects.update(position=9),
        lambda: AuditSeal.objects.all().delete(),
        seal.delete,
        seal.save,
        lambda: AuditCheckpoint.objects.update(position=9),
        lambda: AuditCheckpoint.objects.all().delete(),
        checkpoint.delete,
        checkpoint.save,
    ):
        with pytest.raises(ValidationError):
            attempt()

    assert list(audit_events_sealed().values_list("position", "hash", "reason")) == before
    assert AuditCheckpoint.objects.count() == 1


def test_checkpoint_is_signed_also_when_nothing_happened(db):
    first = audit_checkpoint_create()
    second = audit_checkpoint_create()

    assert (first.position, first.head_hash) == (0, chain.GENESIS_HASH)
    assert (second.position, second.head_hash) == (0, chain.GENESIS_HASH)
    assert first.kind == CheckpointKind.SCHEDULED
    assert audit_chain_verify().ok


def test_checkpoint_signs_the_current_head(make_events):
    make_events(3)
    audit_seal_pending()

    checkpoint = audit_checkpoint_create()

    head = AuditSeal.objects.get(position=3)
    assert (checkpoint.position, checkpoint.head_hash) == (3, head.hash)
    assert checkpoint.signature != ""


def test_tasks_call_the_services(make_events):
    make_events(2)

    assert audit_seal_pending_task() == 2
    assert audit_checkpoint_task() == 2
    assert audit_prune_task() == 0
    assert AuditCheckpoint.objects.count() == 1


def test_beat_schedules_sealing_checkpoints_and_pruning(settings):
    schedule = settings.CELERY_BEAT_SCHEDULE

    assert schedule["audit-seal"] == {"task": "audit.seal_pending", "schedule": 10.0}
    assert schedule["audit-checkpoint"] == {"task": "audit.checkpoint", "schedule": 300.0}
    assert schedule["audit-prune"]["task"] == "audit.prune"


def test_seal_and_checkpoint_commands(make_events, capsys):
    make_events(3)

    call_command("audit_seal")
    call_command("audit_checkpoint")

    out = capsys.readouterr().out
    assert "sealed 3 events" in out
    assert "checkpoint at position 3" in out


def test_audit_keys_are_published_as_jwks(client, db):
    response = client.get("/.well-known/audit-keys.json")

    assert response.status_code == 200
    [key] = response.json()["keys"]
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
    assert key["kid"] == chain.jwk_thumbprint(key)
    assert "d" not in key
