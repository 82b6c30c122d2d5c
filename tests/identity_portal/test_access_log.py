"""The access log: written off the request by a thread, each line as the request left it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine

from identity_portal import access_log
from identity_portal.log import RequestIdFilter, TextFormatter

REPO = Path(__file__).resolve().parents[2]
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class _Lines(logging.Handler):
    """The lines as the console handler would print them (same filter and formatter)."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(RequestIdFilter())
        self.setFormatter(TextFormatter(LINE_FORMAT))
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def lines():
    access_log.flush()
    handler = _Lines()
    access_log.access_logger.addHandler(handler)
    level = access_log.access_logger.level
    access_log.access_logger.setLevel(logging.INFO)
    yield handler
    access_log.access_logger.removeHandler(handler)
    access_log.access_logger.setLevel(level)


@pytest.mark.django_db
def test_a_line_carries_the_time_and_request_id_of_its_response_not_of_its_writing(client, lines):
    answered = datetime(2026, 3, 4, 5, 6, 7, 250000, tzinfo=UTC)
    with time_machine.travel(answered, tick=False):
        response = client.get("/nowhere?client_secret=x", HTTP_X_REQUEST_ID="req-4711")
    assert response.status_code == 404

    with time_machine.travel(datetime(2026, 3, 4, 5, 9, 0, tzinfo=UTC), tick=False):
        access_log.flush()

    [record] = lines.records
    assert record.created == answered.timestamp()
    assert record.msecs == 250.0
    assert record.getMessage().startswith('127.0.0.1 "GET /nowhere" 404 ')
    assert record.getMessage().endswith("ms")
    assert lines.lines[0].endswith(f"INFO identity_portal.access [req-4711] {record.getMessage()}")
    assert lines.lines[0][:23] == TextFormatter().formatTime(record)


def test_lines_are_written_in_order_and_each_once(lines):
    for n in range(5):
        access_log.access_line(
            remote="192.0.2.1", method="POST", path=f"/p{n}", status=200, milliseconds=1.25
        )

    access_log.flush()
    access_log.flush()

    assert [r.getMessage() for r in lines.records] == [
        f'192.0.2.1 "POST /p{n}" 200 1.2ms' for n in range(5)
    ]


def test_a_line_is_redacted_like_any_record(lines):
    access_log.access_line(
        remote="192.0.2.1",
        method="GET",
        path="/x/mip_cs_c2VjcmV0c2VjcmV0",
        status=404,
        milliseconds=0.5,
    )

    access_log.flush()

    assert [r.getMessage() for r in lines.records] == ['192.0.2.1 "GET /x/[REDACTED]" 404 0.5ms']


def test_below_info_nothing_is_queued(lines):
    access_log.access_logger.setLevel(logging.WARNING)

    access_log.access_line(remote="-", method="GET", path="/", status=200, milliseconds=1.0)

    assert len(access_log._queue) == 0
    access_log.flush()
    assert lines.records == []


def test_a_full_queue_drops_lines_and_says_how_many(lines, monkeypatch):
    monkeypatch.setattr(access_log, "MAX_QUEUED", 3)
    monkeypatch.setattr(access_log.writer, "thread", object())  # no writer thread: the test drains

    for n in range(7):
        access_log.access_line(remote="-", method="GET", path=f"/{n}", status=200, milliseconds=1.0)
    access_log.flush()

    assert [r.getMessage() for r in lines.records] == [
        '- "GET /0" 200 1.0ms',
        '- "GET /1" 200 1.0ms',
        '- "GET /2" 200 1.0ms',
        "access log: 4 lines dropped, the log could not keep up",
    ]
    assert [r.levelname for r in lines.records][-1] == "WARNING"
    access_log.flush()
    assert len(lines.records) == 4  # the count was reset with its warning


def test_a_forked_child_starts_without_its_parents_lines(lines, monkeypatch):
    monkeypatch.setattr(access_log.writer, "thread", object())
    access_log.access_line(remote="-", method="GET", path="/parent", status=200, milliseconds=1.0)

    pid = os.fork()
    if pid == 0:
        os._exit(0 if len(access_log._queue) == 0 and access_log.writer.thread is None else 1)
    _, status = os.waitpid(pid, 0)
    access_log.flush()

    assert os.waitstatus_to_exitcode(status) == 0
    assert [r.getMessage() for r in lines.records] == ['- "GET /parent" 200 1.0ms']


def test_the_writer_thread_writes_the_lines_of_a_process_that_only_queues_them():
    """And what is queued at exit is written: a process that never flushes loses no line."""
    line = "dict(remote='-', method='GET', status=200, milliseconds=1.0)"
    script = (
        "import logging, sys, threading, time\n"
        "logging.basicConfig(stream=sys.stdout, level=logging.INFO, format='%(message)s')\n"
        "from identity_portal import access_log\n"
        f"access_log.access_line(path='/first', **{line})\n"
        # The writer wakes every FLUSH_SECONDS: it wrote the first line, nobody flushed.
        "deadline = time.monotonic() + 30\n"
        "while access_log._queue and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "with access_log._flush_lock:\n"  # the writer drains under it: done once taken
        "    print('written by the writer')\n"
        f"access_log.access_line(path='/at-exit', **{line})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "identity_portal.settings_test"},
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        '- "GET /first" 200 1.0ms',
        "written by the writer",
        '- "GET /at-exit" 200 1.0ms',
    ]
