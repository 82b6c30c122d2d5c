"""A daemon thread of this process that writes out what requests left pending.

The metrics (``core.metrics``) and the access log (``identity_portal.access_log``)
keep the request path short by leaving their writing to a thread that wakes
every few tenths of a second. Both need the same care: one thread per process,
started on first use (a web worker is forked or spawned after imports); none
inherited by a forked child, which drops what its parent had pending
(``on_fork``) rather than write it twice; one last ``flush`` at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class PeriodicFlush:
    """Calls ``flush`` every ``seconds`` from a daemon thread named ``name``.

    The hot path checks ``thread is None`` (an attribute, no call) and only
    then calls ``start``.
    """

    def __init__(
        self,
        *,
        name: str,
        seconds: float,
        flush: Callable[[], None],
        on_fork: Callable[[], None],
    ) -> None:
        self.name = name
        self.seconds = seconds
        self.flush = flush
        self.on_fork = on_fork
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._after_fork_in_child)
        atexit.register(flush)

    def start(self) -> None:
        with self._lock:
            if self.thread is not None:
                return
            self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.seconds)
            try:
                self.flush()
            except Exception:
                # The thread must outlive a failed write (a full disk, a broken handler):
                # it is never started again, and everything after would stay pending.
                logger.exception("%s: a flush failed; the next one will try again", self.name)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self.thread = None
        self.on_fork()
