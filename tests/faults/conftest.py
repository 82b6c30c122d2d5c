"""What the fault tests share: throwaway Redis servers, the real web server, client threads.

Each fault test runs the portal under its real web server (``manage.py
serve``'s argv) against the test database, with its cache and broker on
``redis-server`` processes of its own on spare ports, so a test can kill,
stop and restart them without touching the Redis the rest of the suite uses.
A few client threads keep asking for tokens while the test breaks something;
every answer is kept with the request id it was sent with, so the test can
hold each one against the audit trail.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from audit.models import AuditEvent
from tests.conftest import _unavailable
from tests.fixtures.celery_worker import wait_for
from tests.identity_portal.test_web_server import _spare_port

REDIS_SERVER = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin")
REPO = Path(__file__).resolve().parents[2]
TOKEN_BODY = b"grant_type=client_credentials"


@pytest.fixture(autouse=True)
def _redis_server_gate():
    if REDIS_SERVER is None:
        _unavailable("needs the redis-server binary: apt-get install -y redis-server")


class ThrowawayRedis:
    """A ``redis-server`` on a spare port, nothing saved: a kill loses its data, as a crash
    of a cache without persistence does. ``restart`` comes back on the same port."""

    def __init__(self, directory: Path, name: str):
        self.port = _spare_port()
        self.directory = directory
        self.log_path = directory / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=2)

    def start(self) -> None:
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        argv += ["--dir", str(self.directory)]
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

        def answers() -> bool:
            try:
                return bool(self.client().ping())
            except redis.RedisError:
                assert self.proc.poll() is None, self.log_path.read_text()
                return False

        wait_for(answers, timeout=15, interval=0.05)

    def kill(self) -> None:
        """SIGKILL: the cache crashes, its clients' connections are reset."""
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung or blackholed server)."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None:
            self.resume()
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def throwaway_redis(tmp_path):
    """A factory of throwaway Redis servers, all stopped at the end of the test."""
    started: list[ThrowawayRedis] = []

    def make(name: str = "redis") -> ThrowawayRedis:
        server = ThrowawayRedis(tmp_path, name)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@dataclass(frozen=True)
class Answer:
    request_id: str
    client_id: str
    phase: str
    status: int  # 0: no HTTP answer (connection refused or reset)
    body: bytes
    started: float  # time.monotonic() when sent
    finished: float  # and when answered

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    def json(self) -> dict:
        return json.loads(self.body)


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


class TokenLoad:
    """Client threads asking for tokens over kept-alive connections until stopped.

    Each answer is recorded with the phase the test had set when its request
    was sent (``load.phase = "down"``), so a test can tell the answers given
    before, during and after a fault apart.
    """

    def __init__(self, port: int, machines, *, threads: int = 3, pause: float = 0.0):
        self.port = port
        self.machines = list(machines)
        self.threads_count = threads
        self.pause = pause
        self.phase = "before"
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> TokenLoad:
        for index in range(self.threads_count):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in self._threads), "a client thread hung"

    def _run(self, index: int) -> None:
        registered = self.machines[index % len(self.machines)]
        authorization = _basic(registered.client_id, registered.secret)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self._stop.is_set():
            request_id = f"fault-{uuid.uuid4().hex}"
            phase = self.phase
            started = time.monotonic()
            try:
                connection.request(
                    "POST",
                    "/oauth/token",
                    body=TOKEN_BODY,
                    headers={
                        "Authorization": authorization,
                        "Content-Type": "application/x-www-form-urlencoded",
                        "X-Request-ID": request_id,
                    },
                )
                response = connection.getresponse()
                status, body = response.status, response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                status, body = 0, b""
            self.answers.append(
                Answer(
                    request_id=request_id,
                    client_id=registered.client_id,
                    phase=phase,
                    status=status,
                    body=body,
                    started=started,
                    finished=time.monotonic(),
                )
            )
            if self.pause:
                self._stop.wait(self.pause)
        connection.close()

    def in_phase(self, phase: str) -> list[Answer]:
        return [a for a in list(self.answers) if a.phase == phase]

    def run_phase(self, phase: str, *, answers: int, timeout: float = 60.0) -> None:
        """Switch to ``phase`` and return once that many answers of it came back."""
        self.phase = phase
        wait_for(lambda: len(self.in_phase(phase)) >= answers, timeout=timeout, interval=0.05)


def token_issued_events_by_request_id(request_ids) -> Counter:
    """How many ``token.issued`` events each of these request ids has."""
    rows = AuditEvent.objects.filter(event_type="token.issued", request_id__in=list(request_ids))
    return Counter(rows.values_list("request_id", flat=True))


def assert_every_token_audited_once(answers: list[Answer]) -> None:
    """Every 200 has exactly one ``token.issued`` event carrying its request id."""
    issued = [a.request_id for a in answers if a.status == 200]
    counts = token_issued_events_by_request_id(issued)
    missing = [rid for rid in issued if counts[rid] != 1]
    assert missing == [], f"{len(missing)} of {len(issued)} tokens not audited exactly once"


def portal_env(*, cache: str, broker: str, **overrides: str) -> dict[str, str]:
    """The server's environment: the test database, the given cache and broker."""
    from tests.fixtures.celery_worker import _database_url

    return {
        "DJANGO_SETTINGS_MODULE": "identity_portal.settings_test",
        "DATABASE_URL": _database_url(),
        "REDIS_URL": cache,
        "CACHE_URL": cache,
        "CELERY_BROKER_URL": broker,
        # Two worker processes of two threads: four database connections, as deployed.
        "WEB_CONCURRENCY": "2",
        "WEB_THREADS": "2",
        **overrides,
    }


class WorkerWithBeat:
    """``celery -A identity_portal worker -B``, the embedded deployment's one worker,
    against the test database and the given broker and cache."""

    def __init__(self, directory: Path, env: dict[str, str]):
        self.directory = directory
        self.env = {**os.environ, **env, "VAR_DIR": str(directory)}
        self.log_path = directory / "worker.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "celery", "-A", "identity_portal", "worker", "-B"]
        argv += ["--pool", "solo", "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
        offset = len(self.log()) if self.log_path.exists() else 0
        with self.log_path.open("a") as log:
            # A process group of its own: beat (-B) is a child process, killed with it.
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready() -> bool:
            assert self.proc.poll() is None, self.log()[-3000:]
            return "ready." in self.log()[offset:]

        wait_for(ready, timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL to the worker and its beat, as a lost node: nothing is cleaned up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
