"""The Prometheus families that requests and tasks count into, and the calls that count.

Any app may count here (``core`` imports no app); ``identity_portal.metrics``
serves them at ``/metrics`` together with the gauges it reads from the database
at scrape time. What is counted per request is kept to a few microseconds:
children of labelled families are looked up once per label combination and
kept, and ``METRICS_ENABLED=false`` turns every call here into an early return
(``make bench`` measures both, ``bench/metrics_cost.py``).

Label values come from our own code (a grant type of the registry, a client
authentication method, an RFC 6749 error code or an audit reason), never from
the request as sent and never a client id, so every family has a bounded number
of series. Each label enforces it anyway (``_LabelValues``): a value that is not
a short identifier, or one past ``MAX_VALUES_PER_LABEL`` distinct values of its
label in this process, is counted as ``other``.

Under the web server each worker process writes its counts to memory-mapped
files in ``PROMETHEUS_MULTIPROC_DIR`` (``identity_portal.web_server`` sets and
cleans it at start); the scrape sums every worker's files, dead workers'
included, so counters never go backwards while the server runs. Without that
variable (tests, management commands) counts stay in the process.

The three counts every request makes (a token issued or denied, a response and
its latency) are not written to those files one by one: each request adds to
plain per-process totals under one lock, and a flusher thread of the process
writes them out every ``FLUSH_SECONDS`` (and at exit; a scrape flushes the
process that answers it first). Writing through ``prometheus_client`` costs a
request eight functions of the library (pid check, lock, ``struct`` packing,
mmap write, four times); on a worker sharing a core with the database those
are code and data a token request must bring back into the cache every time
(``bench.instructions --cache-sim``). A scrape can lag another worker's counts
by up to ``FLUSH_SECONDS``, nothing more: no count is lost or counted twice.
"""

from __future__ import annotations

import bisect
import re
import threading

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from prometheus_client import Counter, Histogram, disable_created_metrics

from core.periodic import PeriodicFlush

# No ``*_created`` series: multi-process mode has none, and one per child doubles the output.
disable_created_metrics()

OTHER = "other"
NONE = "none"
MAX_VALUES_PER_LABEL = 32
_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

# Token requests take 1-3 ms of server time when all is well, tens when the cache
# is away (a database read per request), up to seconds while the database stalls.
TOKEN_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

TOKENS_ISSUED = Counter(
    "portal_tokens_issued",
    "Access tokens issued by the token endpoint.",
    ["grant", "auth_method"],
)
TOKENS_DENIED = Counter(
    "portal_tokens_denied",
    "Token requests answered without a token, by the reason (RFC 6749 error code, or the "
    "audit reason of a failed client authentication).",
    ["grant", "auth_method", "reason"],
)
TOKEN_REQUEST_SECONDS = Histogram(
    "portal_token_request_duration_seconds",
    "Time from the token request reaching the application to its answer.",
    buckets=TOKEN_LATENCY_BUCKETS,
)
HTTP_RESPONSES = Counter(
    "portal_http_responses",
    "Responses by endpoint and status class.",
    ["endpoint", "code"],
)
CACHE_ERRORS = Counter(
    "portal_cache_errors",
    "Cache calls that failed (the request went on without the cache).",
    ["operation"],
)
DATABASE_ERRORS = Counter(
    "portal_database_errors",
    "Database errors that cost a request its answer (503 on the protocol endpoints).",
    ["where"],
)
THROTTLED = Counter(
    "portal_throttled_requests",
    "Requests refused because their source failed too often (429 / sign-in refused).",
    ["kind"],
)

# Every counted family, for the scrape (identity_portal.metrics) to announce even unused ones.
FAMILIES = (
    TOKENS_ISSUED,
    TOKENS_DENIED,
    TOKEN_REQUEST_SECONDS,
    HTTP_RESPONSES,
    CACHE_ERRORS,
    DATABASE_ERRORS,
    THROTTLED,
)


class _LabelValues:
    """The values one label has taken in this process, at most ``MAX_VALUES_PER_LABEL``."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if not isinstance(value, str) or not _IDENTIFIER.match(value):
            return OTHER
        with self._lock:
            if len(self._seen) >= MAX_VALUES_PER_LABEL:
                return OTHER
            self._seen.add(value)
        return value


_grant = _LabelValues()
_method = _LabelValues()
_reason = _LabelValues()
_operation = _LabelValues()
_where = _LabelValues()
_kind = _LabelValues()


def _bounded_grant(value: str | None) -> str:
    return NONE if not value else _grant(value)


# METRICS_ENABLED, read once and kept in step with override_settings: reading a
# setting costs more than a counter increment here.
_on: bool = settings.METRICS_ENABLED


@receiver(setting_changed)
def _metrics_setting_changed(*, setting: str, value, **kwargs) -> None:
    global _on
    if setting == "METRICS_ENABLED":
        _on = bool(value)


# Children by the label values as passed (our own code words, so few): the
# bounding and ``labels()`` (a lock and validation per call) run once per combination.
# Past ``_MEMO_LIMIT`` combinations (a caller passing request input by mistake)
# nothing more is memoised, so the dicts cannot grow without end.
_MEMO_LIMIT = 4 * MAX_VALUES_PER_LABEL
_issued: dict[tuple, object] = {}
_denied: dict[tuple, object] = {}
_responses: dict[tuple[str, int], object] = {}

# Status classes by the first digit; anything else (a server that invents 600) is "other".
_STATUS_CLASSES = {str(digit): f"{digit}xx" for digit in range(1, 6)}

FLUSH_SECONDS = 1.0
_lock = threading.Lock()
# Counts not yet written, by child; token latencies by bucket index (the last one +Inf).
_pending: dict[object, int] = {}
_latency_counts = [0] * (len(TOKEN_LATENCY_BUCKETS) + 1)
_latency_sum = 0.0


def _child(memo: dict, raw: tuple, family, bounded: tuple[str, ...]) -> object:
    """The child of ``family`` for ``bounded`` label values, kept under ``raw`` while room."""
    child = family.labels(*bounded)
    if len(memo) < _MEMO_LIMIT:
        child = memo.setdefault(raw, child)
    return child


def token_issued(*, grant: str | None, auth_method: str | None) -> None:
    if not _on:
        return
    raw = (grant, auth_method)
    child = _issued.get(raw)
    if child is None:
        child = _child(
            _issued, raw, TOKENS_ISSUED, (_bounded_grant(grant), _method(auth_method or NONE))
        )
    with _lock:
        _pending[child] = _pending.get(child, 0) + 1
    if flusher.thread is None:
        flusher.start()


def token_denied(*, grant: str | None, auth_method: str | None, reason: str) -> None:
    if not _on:
        return
    raw = (grant, auth_method, reason)
    child = _denied.get(raw)
    if child is None:
        bounded = (_bounded_grant(grant), _method(auth_method or NONE), _reason(reason))
        child = _child(_denied, raw, TOKENS_DENIED, bounded)
    with _lock:
        _pending[child] = _pending.get(child, 0) + 1
    if flusher.thread is None:
        flusher.start()


def response_counted(*, endpoint: str, status: int, seconds: float) -> None:
    """One response: its class per endpoint, and the token endpoint's latency."""
    global _latency_sum
    if not _on:
        return
    raw = (endpoint, status)
    child = _responses.get(raw)
    if child is None:
        bounded = (endpoint, _STATUS_CLASSES.get(str(status)[:1], OTHER))
        child = _child(_responses, raw, HTTP_RESPONSES, bounded)
    with _lock:
        _pending[child] = _pending.get(child, 0) + 1
        if endpoint == "token":
            # Histogram buckets hold "less than or equal": the first bound >= seconds.
            _latency_counts[bisect.bisect_left(TOKEN_LATENCY_BUCKETS, seconds)] += 1
            _latency_sum += seconds
    if flusher.thread is None:
        flusher.start()


def flush() -> None:
    """Write this process's pending counts to its families (and, under the server, files)."""
    global _latency_sum
    with _lock:
        if not _pending and not _latency_sum and not any(_latency_counts):
            return
        counts = dict(_pending)
        _pending.clear()
        latencies = list(_latency_counts)
        _latency_counts[:] = [0] * len(_latency_counts)
        latency_sum, _latency_sum = _latency_sum, 0.0
    for child, amount in counts.items():
        child.inc(amount)
    if any(latencies):
        # What ``Histogram.observe`` writes, once per bucket instead of once per
        # request (tests/identity_portal/test_metrics.py compares the two).
        TOKEN_REQUEST_SECONDS._sum.inc(latency_sum)
        for index, amount in enumerate(latencies):
            if amount:
                TOKEN_REQUEST_SECONDS._buckets[index].inc(amount)


def _after_fork_in_child() -> None:
    """A forked child starts empty: the parent's pending counts are the parent's to write."""
    global _latency_sum, _lock
    _lock = threading.Lock()
    _pending.clear()
    _latency_counts[:] = [0] * len(_latency_counts)
    _latency_sum = 0.0


flusher = PeriodicFlush(
    name="metrics-flush", seconds=FLUSH_SECONDS, flush=flush, on_fork=_after_fork_in_child
)


def cache_error(*, operation: str) -> None:
    if _on:
        CACHE_ERRORS.labels(_operation(operation)).inc()


def database_error(*, where: str) -> None:
    if _on:
        DATABASE_ERRORS.labels(_where(where)).inc()


def throttled(*, kind: str) -> None:
    if _on:
        THROTTLED.labels(_kind(kind)).inc()
