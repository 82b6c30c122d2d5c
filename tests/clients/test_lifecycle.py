"""Secret expiry with warnings, and stale machines: the periodic jobs of issue 12.

Time moves with time-machine; the jobs run as beat runs them (the Celery
tasks, eagerly), and their notifications are delivered by the dispatcher to
Django's test mail outbox.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.core.exceptions import ValidationError
from django.test import override_settings

from audit.models import AuditEvent
from clients.lifecycle import machines_stale_sweep, secrets_expire
from clients.models import Audience, ClientSecret, Machine
from clients.services import machine_enable, machine_register, machine_update, secret_rotate
from clients.tasks import machines_stale_task, secrets_expire_task
from jobs.models import JobRun
from notifications.models import Delivery, Notification
from notifications.tasks import notifications_dispatch_task

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
DAY = 86400


def _events(event_type: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("id"))


def _register(cli_actor, **kwargs):
    kwargs.setdefault("owner_email", "owner@example.test")
    kwargs.setdefault("owner_team", "payments")
    if "audiences" not in kwargs:  # a machine needs one to be registered
        audience = Audience.objects.get_or_create(uri="https://lifecycle.example")[0]
        kwargs["audiences"] = [audience.uri]
    return machine_register(actor=cli_actor, name=kwargs.pop("name", "billing"), **kwargs)


def _run_day(day: int) -> None:
    with time_machine.travel(T0 + timedelta(days=day), tick=False):
        secrets_expire_task()
        notifications_dispatch_task()


def test_an_owner_is_warned_once_then_told_once_when_the_secret_expires(cli_actor):
    with time_machine.travel(T0, tick=False):
        machine, _ = _register(cli_actor, max_secret_age=30 * DAY)
    secret = ClientSecret.objects.get(machine=machine)

    for day in (1, 15):  # before the 14-day warning period
        _run_day(day)
    assert mail.outbox == []
    for day in (16, 17, 29):  # inside it: warned once
        _run_day(day)
    assert [m.subject for m in mail.outbox] == [
        "[Machine Identity Portal] A client secret of billing expires soon"
    ]
    assert mail.outbox[0].to == ["owner@example.test"]
    for day in (30, 31, 45):  # past the maximum age: told once
        _run_day(day)

    assert [m.subject for m in mail.outbox] == [
        "[Machine Identity Portal] A client secret of billing expires soon",
        "[Machine Identity Portal] A client secret of billing has expired",
    ]
    secret.refresh_from_db()
    assert secret.warned_at == T0 + timedelta(days=16)
    assert secret.expired_at == T0 + timedelta(days=30)
    warned, expired = _events("secret.expiring"), _events("secret.expired")
    assert len(warned) == 1 and len(expired) == 1
    assert expired[0].details == {
        "secret_id": secret.pk,
        "display": f"{secret.display_prefix}…{secret.last_four}",
        "expired_at": (T0 + timedelta(days=30)).isoformat(),
        "superseded": False,
    }
    assert (expired[0].actor_kind, expired[0].actor_display) == ("system", "secret expiry")
    assert warned[0].details["expires_at"] == (T0 + timedelta(days=30)).isoformat()
    # The raw secret is nowhere in what was sent.
    assert all(secret.display_prefix in m.body for m in mail.outbox)
    assert sorted(Notification.objects.values_list("kind", flat=True)) == [
        "secret.expired",
        "secret.expiring",
    ]
    assert set(Delivery.objects.values_list("state", flat=True)) == {"delivered"}


def test_the_defaults_come_from_settings_and_a_machine_overrides_them(cli_actor):
    with override_settings(SECRET_MAX_AGE=10 * DAY, SECRET_WARNING_PERIOD=2 * DAY):
        with time_machine.travel(T0, tick=False):
            default, _ = _register(cli_actor, name="default")
            own, _ = _register(
                cli_actor, name="own", max_secret_age=20 * DAY, secret_warning_period=DAY
            )
            never, _ = _register(cli_actor, name="never", max_secret_age=0)
        with time_machine.travel(T0 + timedelta(days=8), tick=False):
            assert secrets_expire().as_dict() == {"warned": 1, "expired": 0}
        with time_machine.travel(T0 + timedelta(days=19), tick=False):
            assert secrets_expire().as_dict() == {"warned": 1, "expired": 1}
        with time_machine.travel(T0 + timedelta(days=400), tick=False):
            assert secrets_expire().as_dict() == {"warned": 0, "expired": 1}
    expired = {e.target_id for e in _events("secret.expired")}
    assert expired == {default.client_id, own.client_id}
    assert ClientSecret.objects.get(machine=never).expired_at is None


def test_a_rotated_away_secret_expires_quietly(cli_actor, django_capture_on_commit_callbacks):
    with time_machine.travel(T0, tick=False):
        machine, _ = _register(cli_actor, rotation_grace=3600)
        old = ClientSecret.objects.get(machine=machine)
        secret_rotate(actor=cli_actor, machine=machine)
    with time_machine.travel(T0 + timedelta(hours=2), tick=False):
        assert secrets_expire().as_dict() == {"warned": 0, "expired": 1}
    event = _events("secret.expired")[0]
    assert (event.details["secret_id"], event.details["superseded"]) == (old.pk, True)
    assert Notification.objects.count() == 0


def test_running_the_expiry_job_twice_changes_nothing_the_second_time(cli_actor):
    with time_machine.travel(T0, tick=False):
        _register(cli_actor, max_secret_age=DAY)
    with time_machine.travel(T0 + timedelta(days=2), tick=False):
        assert secrets_expire().as_dict() == {"warned": 0, "expired": 1}
        assert secrets_expire().as_dict() == {"warned": 0, "expired": 0}
        assert secrets_expire_task() == {"warned": 0, "expired": 0}
    assert len(_events("secret.expired")) == 1
    assert Notification.objects.count() == 1
    run = JobRun.objects.get(name="clients.secrets_expire")
    assert (run.runs, run.last_outcome, run.last_result) == (
        1,
        "success",
        {"warned": 0, "expired": 0},
    )


def test_batches_cover_every_row(cli_actor):
    with time_machine.travel(T0, tick=False):
        for n in range(5):
            _register(cli_actor, name=f"m{n}", max_secret_age=DAY)
    with time_machine.travel(T0 + timedelta(days=2), tick=False):
        assert secrets_expire(batch_size=2).as_dict() == {"warned": 0, "expired": 5}


# --- stale machines -------------------------------------------------------------------


def test_a_stale_machine_is_reported_once(cli_actor):
    with time_machine.travel(T0, tick=False):
        machine, _ = _register(cli_actor)
    with time_machine.travel(T0 + timedelta(days=29), tick=False):
        assert machines_stale_sweep().as_dict() == {"reported": 0, "disabled": 0}
    with time_machine.travel(T0 + timedelta(days=31), tick=False):
        machines_stale_task()
        machines_stale_task()
        notifications_dispatch_task()
    machine.refresh_from_db()
    assert machine.enabled is True
    assert machine.stale_reported_at == T0 + timedelta(days=31)
    (event,) = _events("machine.stale")
    assert event.details == {
        "idle_since": T0.isoformat(),
        "last_used_at": None,
        "stale_days": 30,
        "action": "report",
    }
    assert [m.subject for m in mail.outbox] == [
        "[Machine Identity Portal] Machine billing has not been used for a while"
    ]


def test_a_machine_whose_policy_says_disable_is_disabled_and_can_be_enabled_again(
    cli_actor, django_capture_on_commit_callbacks
):
    with time_machine.travel(T0, tick=False):
        machine, _ = _register(cli_actor, stale_action="disable")
    with time_machine.travel(T0 + timedelta(days=31), tick=False):
        assert machines_stale_sweep().as_dict() == {"reported": 0, "disabled": 1}
    machine.refresh_from_db()
    assert machine.enabled is False
    disabled = _events("machine.disabled")
    assert [(e.reason, e.actor_kind) for e in disabled] == [("stale", "system")]

    with time_machine.travel(T0 + timedelta(days=32), tick=False):
        machine_enable(actor=cli_actor, machine=machine)
        # Re-enabled by a person: the job leaves it alone for this idle period.
        assert machines_stale_sweep().as_dict() == {"reported": 0, "disabled": 0}
    Machine.objects.filter(pk=machine.pk).update(last_used_at=T0 + timedelta(days=40))
    with time_machine.travel(T0 + timedelta(days=69), tick=False):
        assert machines_stale_sweep().as_dict() == {"reported": 0, "disabled": 0}
    with time_machine.travel(T0 + timedelta(days=71), tick=False):
        # Used, then idle for a full period again: judged afresh.
        assert machines_stale_sweep().as_dict() == {"reported": 0, "disabled": 1}


@override_settings(STALE_MACHINE_ACTION="disable", STALE_MACHINE_DAYS=10)
def test_the_default_action_and_period_come_from_settings(cli_actor):
    with time_machine.travel(T0, tick=False):
        _reported, _ = _register(cli_actor, name="reported", stale_action="report")
        _register(cli_actor, name="disabled")
    with time_machine.travel(T0 + timedelta(days=11), tick=False):
        assert machines_stale_sweep().as_dict() == {"reported": 1, "disabled": 1}


@override_settings(STALE_MACHINE_DAYS=0)
def test_stale_days_zero_turns_the_check_off(cli_actor):
    with time_machine.travel(T0, tick=False):
        _register(cli_actor)
    with time_machine.travel(T0 + timedelta(days=900), tick=False):
        assert machines_stale_sweep().as_dict() == {"reported": 0, "disabled": 0}
    assert _events("machine.stale") == []


# --- the policies are validated -----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"stale_action": "delete"}, "stale_action"),
        ({"secret_warning_period": -1}, "secret_warning_period"),
        ({"secret_warning_period": "14d"}, "secret_warning_period"),
        ({"max_secret_age": 59}, "max_secret_age"),
    ],
)
def test_bad_policies_are_refused_and_nothing_changes(cli_actor, kwargs, field):
    machine, _ = _register(cli_actor)
    before = AuditEvent.objects.count()
    with pytest.raises(ValidationError) as caught:
        machine_update(actor=cli_actor, machine=machine, **kwargs)
    assert list(caught.value.message_dict) == [field]
    fresh = Machine.objects.get(pk=machine.pk)
    assert (fresh.stale_action, fresh.secret_warning_period, fresh.max_secret_age) == (
        "",
        None,
        None,
    )
    assert AuditEvent.objects.count() == before


def test_a_policy_change_is_audited(cli_actor):
    machine, _ = _register(cli_actor)
    machine_update(
        actor=cli_actor, machine=machine, stale_action="disable", secret_warning_period=DAY
    )
    event = _events("machine.updated")[-1]
    assert event.details["changed"] == ["secret_warning_period", "stale_action"]
    assert event.details["after"] == {"secret_warning_period": DAY, "stale_action": "disable"}
