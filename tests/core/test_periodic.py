"""The flushing thread the metrics and the access log share."""

from __future__ import annotations

import os
import threading

from core.periodic import PeriodicFlush


def test_one_thread_per_process_however_often_it_is_started():
    flushed = threading.Event()
    periodic = PeriodicFlush(
        name="test-flush", seconds=0.01, flush=flushed.set, on_fork=lambda: None
    )

    periodic.start()
    first = periodic.thread
    periodic.start()

    assert periodic.thread is first
    assert first.daemon and first.name == "test-flush"
    assert flushed.wait(timeout=30)  # the thread calls flush on its own
    assert [t for t in threading.enumerate() if t.name == "test-flush"] == [first]


def test_a_forked_child_has_no_thread_and_drops_what_its_parent_had_pending():
    forked = []
    periodic = PeriodicFlush(
        name="test-fork", seconds=3600, flush=lambda: None, on_fork=lambda: forked.append(1)
    )
    periodic.start()

    pid = os.fork()
    if pid == 0:
        os._exit(0 if periodic.thread is None and forked == [1] else 1)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert periodic.thread is not None and forked == []  # the parent keeps its own


def test_the_thread_outlives_a_flush_that_fails(caplog):
    calls = []
    flushed_again = threading.Event()

    def flush() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk full")
        flushed_again.set()

    periodic = PeriodicFlush(name="test-fails", seconds=0.01, flush=flush, on_fork=lambda: None)
    periodic.start()

    assert flushed_again.wait(timeout=30)
    assert periodic.thread.is_alive()
    assert "test-fails: a flush failed; the next one will try again" in caplog.messages
