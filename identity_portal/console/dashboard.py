"""The dashboard's reads, gathered from each app's selectors.

Nothing here counts the audit event table: charts, top machines and failure
reasons read the hourly counts the sealer keeps (``audit.models.AuditHourlyCount``),
the backlog is an index range above the sealed horizon, and the chain's state
comes from its newest checkpoint. ``bench/console_bench.py`` times it with ten
million events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from audit.choices import EventType, Outcome
from audit.selectors import (
    ChainState,
    audit_chain_state,
    audit_counts_by_hour,
    audit_top_failure_reasons,
    audit_top_machines,
)
from clients.models import Machine
from clients.selectors import ExpiringSecret, machine_counts, machines_unused, secrets_expiring
from identity_portal.console.charts import Chart, bar_chart
from tokens.selectors import signing_keys_summary

_TOKEN_EVENTS = (EventType.TOKEN_ISSUED, EventType.TOKEN_DENIED)


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _issued_refused(counts: dict, hours: list[datetime]) -> tuple[int, int]:
    issued = sum(counts.get((h, EventType.TOKEN_ISSUED, Outcome.SUCCESS), 0) for h in hours)
    refused = sum(
        counts.get((h, EventType.TOKEN_DENIED, outcome), 0)
        for h in hours
        for outcome in Outcome.values
    )
    return issued, refused


def token_charts(*, now: datetime) -> tuple[Chart, Chart]:
    """Tokens issued and refused per hour for 24 hours and per day for 30 days (UTC)."""
    this_hour = _hour(now)
    today = this_hour.replace(hour=0)
    since = today - timedelta(days=29)
    counts = audit_counts_by_hour(
        since=since, until=this_hour + timedelta(hours=1), event_types=_TOKEN_EVENTS
    )
    hourly = []
    for back in range(23, -1, -1):
        hour = this_hour - timedelta(hours=back)
        issued, refused = _issued_refused(counts, [hour])
        hourly.append((f"{hour:%H}h", f"{hour:%Y-%m-%d %H}:00 UTC", issued, refused))
    daily = []
    for back in range(29, -1, -1):
        day = today - timedelta(days=back)
        issued, refused = _issued_refused(counts, [day + timedelta(hours=h) for h in range(24)])
        daily.append((f"{day:%d %b}", f"{day:%Y-%m-%d} UTC", issued, refused))
    return bar_chart(hourly, label_every=3), bar_chart(daily, label_every=5)


@dataclass(frozen=True)
class Dashboard:
    now: datetime
    machines: dict[str, int]
    hourly: Chart
    daily: Chart
    top_machines: list[dict[str, Any]]
    top_failures: list[dict[str, Any]]
    expiring: list[ExpiringSecret]
    unused_count: int
    unused: list[Machine]
    keys: dict[str, Any]
    chain: ChainState


def dashboard_get(*, now: datetime | None = None) -> Dashboard:
    now = now or timezone.now()
    hourly, daily = token_charts(now=now)
    day_ago = _hour(now) - timedelta(hours=23)
    top = audit_top_machines(since=day_ago)
    names = dict(
        Machine.objects.filter(client_id__in=[row["machine"] for row in top]).values_list(
            "client_id", "name"
        )
    )
    unused_count, unused = machines_unused(now=now)
    return Dashboard(
        now=now,
        machines=machine_counts(),
        hourly=hourly,
        daily=daily,
        top_machines=[{**row, "name": names.get(row["machine"], "")} for row in top],
        top_failures=audit_top_failure_reasons(since=day_ago),
        expiring=secrets_expiring(now=now),
        unused_count=unused_count,
        unused=unused,
        keys=signing_keys_summary(),
        chain=audit_chain_state(),
    )
