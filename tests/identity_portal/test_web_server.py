"""The web server `manage.py serve` and `make bench` start: its flags, and the real thing."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from identity_portal.web_server import APPLICATION, web_server_argv

REPO = Path(__file__).resolve().parents[2]


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_argv_from_environment(tmp_path):
    argv = web_server_argv(
        {
            "HOST": "10.0.0.5",
            "PORT": "9001",
            "WEB_CONCURRENCY": "3",
            "WEB_THREADS": "4",
            "VAR_DIR": str(tmp_path),
        }
    )
    assert Path(argv[0]).name == "granian"
    assert argv[-1] == APPLICATION
    assert _flag(argv, "--interface") == "wsgi"
    assert (_flag(argv, "--host"), _flag(argv, "--port")) == ("10.0.0.5", "9001")
    assert (_flag(argv, "--workers"), _flag(argv, "--blocking-threads")) == ("3", "4")
    assert _flag(argv, "--http") == "1"
    assert {"--no-ws", "--no-access-log", "--respawn-failed-workers"} <= set(argv)
    assert _flag(argv, "--http1-buffer-size") == "65536"
    assert _flag(argv, "--blocking-threads-idle-timeout") == "600"
    # No static folder collected yet: nothing is mounted.
    assert "--static-path-mount" not in argv


def test_argv_defaults_and_static_mount(tmp_path):
    (tmp_path / "static").mkdir()
    argv = web_server_argv({"VAR_DIR": str(tmp_path)})
    assert (_flag(argv, "--host"), _flag(argv, "--port")) == ("127.0.0.1", "8000")
    assert _flag(argv, "--workers") == str(os.cpu_count() or 2)
    assert _flag(argv, "--blocking-threads") == "2"
    assert _flag(argv, "--static-path-route") == "/static"
    assert _flag(argv, "--static-path-mount") == str((tmp_path / "static").resolve())


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PORT", "http", "PORT must be a whole number, not 'http'"),
        ("WEB_CONCURRENCY", "0", "WEB_CONCURRENCY must be at least 1, not 0"),
        ("WEB_THREADS", "-2", "WEB_THREADS must be at least 1, not -2"),
    ],
)
def test_bad_numbers_are_refused_with_their_name(name, value, message):
    with pytest.raises(SystemExit) as raised:
        web_server_argv({name: value})
    assert str(raised.value) == message


def _spare_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _running_server(tmp_path, **overrides: str):
    """The portal under the real server on a spare port (one worker); yields the port."""
    port = _spare_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "identity_portal.settings",
        **overrides,
    }
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(web_server_argv(env), env=env, cwd=REPO, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(log_path.read_text()) from None
                    time.sleep(0.1)
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _read_at_least(sock: socket.socket, size: int) -> bytes:
    """The first ``size`` bytes the peer sent (fewer only if it closed first)."""
    received = b""
    while len(received) < size:
        chunk = sock.recv(size - len(received))
        if not chunk:
            break
        received += chunk
    return received


@pytest.fixture
def served(tmp_path):
    """The portal under the real server, with a static folder of its own."""
    static = tmp_path / "static"
    static.mkdir()
    (static / "hello.txt").write_text("static ok\n")
    with _running_server(tmp_path) as port:
        yield port


def test_real_server_keeps_connections_alive_serves_static_and_bounds_headers(served):
    connection = http.client.HTTPConnection("127.0.0.1", served, timeout=30)
    connection.request("GET", "/healthz")
    first = connection.getresponse()
    assert (first.status, first.read()) == (200, b'{"status": "ok"}')
    local = connection.sock.getsockname()
    # Same socket for the second request: the connection was kept alive.
    connection.request("GET", "/static/hello.txt")
    second = connection.getresponse()
    assert (second.status, second.read()) == (200, b"static ok\n")
    assert connection.sock.getsockname() == local
    connection.close()

    with socket.create_connection(("127.0.0.1", served), timeout=30) as sock:
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 200_000
        # The server answers as soon as its 64 KiB buffer is full and closes with our
        # remaining bytes unread, which resets the connection under a send still running
        # (about 1 in 30 here). Its answer is already in our receive buffer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request + b"\r\n\r\n")
        assert _read_at_least(sock, 13) == b"HTTP/1.1 431 "


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_token_issued_through_the_real_server_end_to_end(signing_key, machine_factory, tmp_path):
    """Granian, the token lane, PostgreSQL: what a machine sees, and what the audit records."""
    import requests

    from audit.models import AuditEvent
    from tests.fixtures.celery_worker import _database_url
    from tests.fixtures.tokens import API
    from tests.tokens.helpers import basic, verify

    registered = machine_factory()
    database = {"DJANGO_SETTINGS_MODULE": "identity_portal.settings_test"}
    database["DATABASE_URL"] = _database_url()
    # The issuer the tokens are verified against here (by default it follows the PORT).
    database["ISSUER"] = django_settings.ISSUER
    with _running_server(tmp_path, **database) as port, requests.Session() as session:
        # One kept-alive connection, as a machine would use.
        answers = [
            session.post(
                f"http://127.0.0.1:{port}/oauth/token",
                data={"grant_type": "client_credentials"},
                headers={
                    "Authorization": basic(registered.client_id, registered.secret),
                    "X-Request-ID": f"e2e-granian-{n:04d}",
                },
                timeout=10,
            )
            for n in range(3)
        ]

    assert [a.status_code for a in answers] == [200, 200, 200]
    first = answers[0]
    assert first.headers["X-Request-ID"] == "e2e-granian-0000"
    assert first.headers["Cache-Control"] == "no-store"
    assert first.headers["X-Frame-Options"] == "DENY"
    assert first.headers["X-Content-Type-Options"] == "nosniff"
    claims = verify(first.json()["access_token"], audience=API)
    assert claims["client_id"] == registered.client_id
    events = AuditEvent.objects.filter(event_type="token.issued", request_id__startswith="e2e-")
    assert sorted(events.values_list("request_id", "source_ip")) == [
        (f"e2e-granian-{n:04d}", "127.0.0.1") for n in range(3)
    ]
