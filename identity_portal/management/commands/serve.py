"""Run the web server and the Celery worker (with beat) in the foreground.

One command for the embedded tier: output of both is combined line by line
with a prefix; Ctrl-C (or SIGTERM) stops both and waits for them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import BinaryIO

from django.conf import settings
from django.core.management.base import BaseCommand

from identity_portal.web_server import web_server_argv


def relay(fd: int, out: BinaryIO, *, prefix: bytes, lock: threading.Lock) -> None:
    """Copy the lines read from ``fd`` to ``out``, each after ``prefix``, until end of file.

    Whatever the pipe holds is relayed at once, one write for all its whole
    lines (a partial line waits for its end), so lines of two processes never
    interleave: at one access line per token, a decode, a write and a flush
    per line cost this process a few percent of the web server's CPU.
    """
    pending = b""
    while chunk := os.read(fd, 65536):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        if lines:
            with lock:
                out.write(b"".join(prefix + line + b"\n" for line in lines))
                out.flush()
    if pending:
        with lock:
            out.write(prefix + pending + b"\n")
            out.flush()


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
        bin_dir = os.path.dirname(sys.executable)
        commands = {"web": web_server_argv(env)}
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
        lock = threading.Lock()

        width = max(len(n) for n in commands)

        def pump(name: str, proc: subprocess.Popen) -> None:
            prefix = f"{name:<{width}} | ".encode()
            relay(proc.stdout.fileno(), sys.stdout.buffer, prefix=prefix, lock=lock)

        for name, cmd in commands.items():
            procs[name] = subprocess.Popen(  # noqa: S603 (fixed argv, no shell)
                cmd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            threading.Thread(target=pump, args=(name, procs[name]), daemon=True).start()
        with lock:
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
        codes = {name: p.returncode for name, p in procs.items()}
        self.stdout.write(f"Stopped: {codes}")
        if not stopping.is_set():
            sys.exit(1)
