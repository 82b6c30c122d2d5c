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
        lock = threading.Lock()

        def pump(name: str, proc: subprocess.Popen) -> None:
            width = max(len(n) for n in commands)
            for line in proc.stdout:
                with lock:
                    sys.stdout.write(f"{name:<{width}} | {line}")
                    sys.stdout.flush()

        for name, cmd in commands.items():
            procs[name] = subprocess.Popen(  # noqa: S603 (fixed argv, no shell)
                cmd,
                env=envs[name],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            threading.Thread(target=pump, args=(name, procs[name]), daemon=True).start()
        self.stdout.write(f"Serving {settings.ISSUER} on port {settings.PORT}; Ctrl-C stops.")

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
