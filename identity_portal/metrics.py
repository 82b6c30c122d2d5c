"""GET /metrics: the Prometheus text format, for scrapers on the private network.

Two kinds of figures:

- **counted** by requests (``core.metrics``): tokens issued and denied, the token
  endpoint's latency, responses by status class, cache and database errors,
  throttled requests. Under the web server every worker process counts into its
  own files under ``PROMETHEUS_MULTIPROC_DIR`` and a scrape, answered by any one
  worker, sums them all (``prometheus_client``'s multi-process mode);
- **read** from the database when scraped, never per request, each with a
  bounded query whatever the size of the tables: the audit backlog and the age
  of the newest signed checkpoint, signing keys by state and the age of the key
  that signs, client secrets near expiry, and the last run of each periodic job.
  If the database does not answer, the counted figures are still served and
  ``portal_metrics_database_up`` is 0.

Who may read: a client address (``core.client_address``: ``X-Forwarded-For``
only from ``TRUSTED_PROXIES``) in ``METRICS_ALLOWED_CIDRS``, or the bearer of an
access token of ours with scope ``metrics:read`` issued for ``METRICS_AUDIENCE``
(checked like the audit API's: signature, expiry, revocation, machine enabled).
Anyone else gets 401 (no or a bad token, with a ``Bearer`` challenge) or 403
(a token without that scope or audience), and no figure.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError
from django.http import Http404, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from audit.selectors import audit_backlog, audit_checkpoint_signed_last_at
from clients.selectors import SecretsExpiry, secrets_expiry
from core import metrics
from core.bearer import claims_grant
from core.client_address import client_ip
from identity_portal.services import METRICS_READ_SCOPE
from jobs.choices import JobOutcome
from jobs.selectors import JobStatus, job_status_list
from tokens.selectors import signing_keys_health, token_verify

logger = logging.getLogger(__name__)

BEARER_REALM = 'Bearer realm="Machine Identity Portal"'
# What generate_latest writes: the classic text format, which every Prometheus reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The secrets gauges read every usable secret: at most once a minute per process.
SECRETS_REFRESH_SECONDS = 60.0


# --- Who may read -------------------------------------------------------------


def _from_allowed_network(request) -> bool:
    ip = client_ip(request)
    if ip is None:
        return False
    address = ipaddress.ip_address(ip)
    return any(address in network for network in settings.METRICS_ALLOWED_NETWORKS)


def _refused(status: int, error: str | None) -> HttpResponse:
    """RFC 6750 section 3: the challenge names the error when a token was presented."""
    body = {"error": error or "unauthorized"}
    response = HttpResponse(json.dumps(body), status=status, content_type="application/json")
    if status in (401, 403):
        response["WWW-Authenticate"] = (
            BEARER_REALM if error is None else f'{BEARER_REALM}, error="{error}"'
        )
    response["Cache-Control"] = "no-store"
    return response


def metrics_access_refusal(request) -> HttpResponse | None:
    """None when the request may read the metrics, else the refusal to answer."""
    if _from_allowed_network(request):
        return None
    scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer":
        return _refused(401, None)
    value = value.strip()
    try:
        verified = token_verify(token=value) if value and " " not in value else None
    except DatabaseError:
        metrics.database_error(where="metrics")
        return _refused(503, "temporarily_unavailable")
    if verified is None:
        return _refused(401, "invalid_token")
    if not claims_grant(
        verified.claims, scope=METRICS_READ_SCOPE, audience=settings.METRICS_AUDIENCE
    ):
        return _refused(403, "insufficient_scope")
    return None


# --- What is read from the database at scrape time --------------------------------


def _gauge(name: str, documentation: str, value: float | None = None, labels=()):
    family = GaugeMetricFamily(name, documentation, labels=list(labels) or None)
    if value is not None:
        family.add_metric([], value)
    return family


def _age(now: datetime, then: datetime | None) -> float:
    return float("inf") if then is None else max(0.0, (now - then).total_seconds())


class _SecretsMemo:
    """The secrets figures, recomputed at most every ``SECRETS_REFRESH_SECONDS``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: SecretsExpiry | None = None
        self._at = 0.0

    def get(self, now: datetime) -> SecretsExpiry:
        with self._lock:
            if self._value is None or time.monotonic() - self._at >= SECRETS_REFRESH_SECONDS:
                warning = timedelta(days=settings.SECRET_WARNING_DAYS)
                self._value = secrets_expiry(now=now, warning=warning)
                self._at = time.monotonic()
            return self._value

    def clear(self) -> None:
        with self._lock:
            self._value = None


secrets_memo = _SecretsMemo()


def _database_families(now: datetime) -> list[Metric]:
    backlog = audit_backlog()
    keys = signing_keys_health()
    secrets = secrets_memo.get(now)
    jobs = job_status_list(now=now)
    families = [
        _gauge(
            "portal_audit_unsealed_events",
            "Audit events not yet sealed into the chain (the span of their ids).",
            backlog.unsealed,
        ),
        _gauge(
            "portal_audit_oldest_unsealed_event_age_seconds",
            "Age of the oldest audit event waiting for the sealer (0 when none waits).",
            0.0 if backlog.oldest_unsealed_at is None else _age(now, backlog.oldest_unsealed_at),
        ),
        _gauge(
            "portal_audit_chain_head_position",
            "Position of the newest sealed event in the hash chain.",
            backlog.head_position,
        ),
        _gauge(
            "portal_audit_checkpoint_age_seconds",
            "Age of the newest audit checkpoint whose signature verifies (+Inf when none).",
            _age(now, audit_checkpoint_signed_last_at()),
        ),
    ]
    by_state = _gauge("portal_signing_keys", "Signing-key rows by state.", labels=["state"])
    for state, count in sorted(keys.by_state.items()):
        by_state.add_metric([state], count)
    active_age = _gauge(
        "portal_signing_key_active_age_seconds",
        "Age of the trusted key that signs, per algorithm, since it became active.",
        labels=["algorithm"],
    )
    for algorithm, since in sorted(keys.active_since.items()):
        active_age.add_metric([algorithm], _age(now, since))
    families += [
        by_state,
        active_age,
        _gauge(
            "portal_signing_keys_signing",
            "Algorithms with a trusted active key (0: no token can be signed).",
            len(keys.active_since),
        ),
        _gauge(
            "portal_signing_keys_distrusted",
            "Published signing-key rows the keyring refuses (planted or edited in the database).",
            keys.distrusted,
        ),
    ]
    secret_states = _gauge(
        "portal_client_secrets",
        "Usable client secrets of live machines: expiring within SECRET_WARNING_DAYS, or not.",
        labels=["state"],
    )
    secret_states.add_metric(["active"], secrets.usable - secrets.expiring)
    secret_states.add_metric(["expiring"], secrets.expiring)
    families += [
        secret_states,
        _gauge(
            "portal_machines_secrets_expiring",
            "Machines whose every usable secret expires within SECRET_WARNING_DAYS: rotate them.",
            secrets.machines_expiring,
        ),
    ]
    families += _job_families(jobs)
    return families


def _job_families(jobs: list[JobStatus]) -> list[Metric]:
    """The jobs of the beat schedule, labelled by their schedule entry's name.

    Read from ``jobs.JobRun`` (``job_status_list``), which ``job_execute`` writes
    after every run; a job recorded but no longer scheduled is not exported (it
    would look stalled forever).
    """
    entry_of_task = {entry["task"]: name for name, entry in settings.CELERY_BEAT_SCHEDULE.items()}
    interval = _gauge(
        "portal_job_interval_seconds",
        "Schedule interval of each periodic job.",
        labels=["periodic_job"],
    )
    last_run = _gauge(
        "portal_job_last_run_timestamp_seconds",
        "When each periodic job last finished (Unix time).",
        labels=["periodic_job"],
    )
    succeeded = _gauge(
        "portal_job_last_run_success",
        "1 when the job's last run succeeded, 0 when it failed.",
        labels=["periodic_job"],
    )
    duration = _gauge(
        "portal_job_last_run_duration_seconds",
        "How long each periodic job's last run took.",
        labels=["periodic_job"],
    )
    for job in jobs:
        label = entry_of_task.get(job.name)
        if label is None:
            continue
        if job.interval_seconds:
            interval.add_metric([label], job.interval_seconds)
        if job.last_finished_at is None or not job.last_outcome:
            continue
        last_run.add_metric([label], job.last_finished_at.timestamp())
        duration.add_metric([label], (job.last_duration_ms or 0) / 1000)
        succeeded.add_metric([label], 1.0 if job.last_outcome == JobOutcome.SUCCESS else 0.0)
    return [interval, last_run, succeeded, duration]


class DatabaseFigures:
    """The scrape-time gauges; all of them or none, with ``portal_metrics_database_up``."""

    def collect(self) -> Iterator[Metric]:
        try:
            families = _database_families(timezone.now())
            up = 1.0
        except DatabaseError:
            logger.warning("metrics: the database did not answer", exc_info=True)
            metrics.database_error(where="metrics")
            families, up = [], 0.0
        yield from families
        yield _gauge(
            "portal_metrics_database_up",
            "1 when this scrape read the database-backed figures, 0 when it could not.",
            up,
        )


class CountedFigures:
    """The counted families: summed over every worker's files, or this process's own.

    A family nothing has counted yet has no file entry; it is still announced (its
    ``HELP`` and ``TYPE``, no sample) so that what a scraper sees does not depend
    on which requests this node happened to serve.
    """

    def __init__(self, multiprocess_dir: str | None) -> None:
        self.multiprocess_dir = multiprocess_dir

    def _counted(self) -> Iterable[Metric]:
        if self.multiprocess_dir:
            registry = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(registry, path=self.multiprocess_dir)
            return registry.collect()
        return (family for counted in metrics.FAMILIES for family in counted.collect())

    def collect(self) -> Iterator[Metric]:
        seen = set()
        for family in self._counted():
            seen.add(family.name)
            yield family
        for counted in metrics.FAMILIES:
            for family in counted.describe():
                if family.name not in seen:
                    yield family


def metrics_exposition() -> bytes:
    # This process's pending counts first; other workers' reach their files within
    # core.metrics.FLUSH_SECONDS.
    metrics.flush()
    registry = CollectorRegistry(auto_describe=False)
    # Read first, so that a database error of this scrape is in its own counts.
    registry.register(DatabaseFigures())
    registry.register(CountedFigures(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None))
    return generate_latest(registry)


@never_cache
@require_GET
def metrics_view(request):
    if not settings.METRICS_ENABLED:
        raise Http404("metrics are off")
    refusal = metrics_access_refusal(request)
    if refusal is not None:
        return refusal
    return HttpResponse(metrics_exposition(), content_type=CONTENT_TYPE)
