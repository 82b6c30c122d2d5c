"""Run the web server and the Celery worker (with beat) in the foreground.

One command for the embedded tier: output of both is combined line by line
with a prefix; Ctrl-C (or SIGTERM) stops both and waits for them.

The relay moves bytes, not text: the web server writes an access line per
request, and reading, decoding and flushing each line on its own cost the
``serve`` process about 4% of the token endpoint's CPU (``make bench``'s
"relay" column). It reads whatever the pipe holds, prefixes every complete
line and writes them with one call; a line cut between two reads waits for
its end, so lines from the two children never interleave.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from identity_portal.web_server import web_server_argv, web_server_env


class Command(BaseCommand):
    help = "Serve the portal: granian plus a Celery worker with beat."

    def add_arguments(self, parser):
        parser.add_argument("--no-worker", action="store_true", help="Only the web server.")

    def handle(self, *args, **options):
        env = {
            **os.environ,
            "PORT": str(settings.PORT),
            "VAR_DIR": str(settings.VAR_DIR),
            "PYTHONUNBUFFERED": "1",
        }
        # The web workers count metrics into files the scrape sums; the worker's
        # own counts are not served by /metrics (its jobs are, from the database).
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        envs = {"web": web_server_env(env), "worker": env}
        bin_dir = os.path.dirname(sys.executable)
        commands = {"web": web_server_argv(envs["web"])}
        if not options["no_worker"]:
            commands["worker"] = [
                os.path.join(bin_dir, "celery"),
                "-A",
                "identity_portal",
                "worker",
                "-B",
                "--concurrency",
                "1",
                "--loglevel",
                "INFO",
                "--schedule",
                settings.CELERY_BEAT_SCHEDULE_FILENAME,
            ]
        procs: dict[str, subprocess.Popen] = {}
        pumps: list[threading.Thread] = []
        lock = threading.Lock()

        width = max(len(n) for n in commands)
        sink = sys.stdout.buffer

        def pump(name: str, proc: subprocess.Popen) -> None:
            relay_lines(proc.stdout.fileno(), f"{name:<{width}} | ".encode(), sink, lock)

        for name, cmd in commands.items():
            procs[name] = subprocess.Popen(  # noqa: S603 (fixed argv, no shell)
                cmd,
                env=envs[name],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            pumps.append(threading.Thread(target=pump, args=(name, procs[name]), daemon=True))
            pumps[-1].start()
        with lock:  # the relay writes bytes beneath sys.stdout: its text goes out first
            self.stdout.write(f"Serving {settings.ISSUER} on port {settings.PORT}; Ctrl-C stops.")
            self.stdout.flush()

        stopping = threading.Event()

        def stop(signum, frame):
            stopping.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while not stopping.is_set():
            if any(p.poll() is not None for p in procs.values()):
                break
            stopping.wait(0.5)
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for relay in pumps:  # the children's last lines, up to their end of file
            relay.join(timeout=5)
        codes = {name: p.returncode for name, p in procs.items()}
        self.stdout.write(f"Stopped: {codes}")
        if not stopping.is_set():
            sys.exit(1)


RELAY_READ_BYTES = 65536


def relay_lines(source_fd: int, prefix: bytes, sink, lock: threading.Lock) -> None:
    """Copy ``source_fd`` to ``sink`` until end of file, ``prefix`` before every line.

    Bytes pass as they are (a child's non-UTF-8 output is not this process's
    to judge); a last line without a newline is given one.
    """
    pending = b""
    while chunk := os.read(source_fd, RELAY_READ_BYTES):
        block, pending = prefixed_lines(pending + chunk, prefix)
        if block:
            with lock:
                sink.write(block)
                sink.flush()
    if pending:
        with lock:
            sink.write(prefix + pending + b"\n")
            sink.flush()


def prefixed_lines(data: bytes, prefix: bytes) -> tuple[bytes, bytes]:
    """``data``'s complete lines, each after ``prefix``, and the unfinished rest."""
    complete, newline, rest = data.rpartition(b"\n")
    if not newline:
        return b"", rest
    return prefix + complete.replace(b"\n", b"\n" + prefix) + b"\n", rest
