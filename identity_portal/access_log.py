"""The access log: one line per response, handed to logging by a thread of the process.

The line, its logger (``identity_portal.access``), its handlers, formatters and
redaction are what they were; what moved is who runs them. A record costs some
twenty functions of the logging module (the record and its redaction, the
request-id filter, the formatter and its clock, the stream's write and flush):
on the token path that was 6% of a request's instructions and 15% of its
last-level cache misses (``bench.instructions --cache-sim`` with ``ACCESS_LOG``
on and off), code that every request brought back into the cache. A request
now appends a tuple to a queue; a thread of the process drains it every
``FLUSH_SECONDS`` and logs each line with the time of its response and its
request id, so the code stays warm across lines.

Like nginx's ``access_log ... buffer= flush=``: a line reaches the log at most
``FLUSH_SECONDS`` late, and what is queued is written at exit; a process killed
outright loses at most that last fraction of a second of lines. If the log
cannot keep up, the queue stops at ``MAX_QUEUED`` lines and what is dropped is
counted in a warning, never memory without bound.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from core.periodic import PeriodicFlush
from identity_portal.log import request_id_var

access_logger = logging.getLogger("identity_portal.access")

FORMAT = '%s "%s %s" %s %.1fms'
FLUSH_SECONDS = 0.1
MAX_QUEUED = 100_000

# (time of the response, request id, the line's arguments): appended by requests,
# popped by the writer; deque's append and popleft are atomic.
_queue: collections.deque[tuple[float, str, tuple]] = collections.deque()
_dropped = 0
_flush_lock = threading.Lock()


def access_line(*, remote: str, method: str, path: str, status: int, milliseconds: float) -> None:
    """Queue one response's line (``path`` already made loggable)."""
    global _dropped
    if not access_logger.isEnabledFor(logging.INFO):
        return
    if len(_queue) >= MAX_QUEUED:
        _dropped += 1
        return
    _queue.append((time.time(), request_id_var.get(), (remote, method, path, status, milliseconds)))
    if writer.thread is None:
        writer.start()


def flush() -> None:
    """Log every queued line now, in the order queued (the writer thread, exit, tests)."""
    with _flush_lock:  # one drainer at a time, so lines keep their order
        _drain()


def _drain() -> None:
    global _dropped
    while True:
        try:
            created, request_id, args = _queue.popleft()
        except IndexError:
            break
        record = access_logger.makeRecord(
            access_logger.name, logging.INFO, "(unknown file)", 0, FORMAT, args, None
        )
        # The response's time, not the writer's (LogRecord.__init__'s own arithmetic).
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        record.relativeCreated = (created - logging._startTime) * 1000
        # RequestIdFilter reads the request id from the context, as it would have in the request.
        token = request_id_var.set(request_id)
        try:
            access_logger.handle(record)
        finally:
            request_id_var.reset(token)
    if _dropped:
        dropped, _dropped = _dropped, 0
        access_logger.warning("access log: %d lines dropped, the log could not keep up", dropped)


def _after_fork_in_child() -> None:
    """A forked child starts with no queue: the parent's lines are its own."""
    global _dropped, _flush_lock
    _queue.clear()
    _dropped = 0
    _flush_lock = threading.Lock()


writer = PeriodicFlush(
    name="access-log", seconds=FLUSH_SECONDS, flush=flush, on_fork=_after_fork_in_child
)
