"""The README's quickstart, run as written against `make run`, so the README cannot drift.

Every ```sh block that follows a ``<!-- quickstart -->`` line is run, in order, in one
bash process from the checkout, against `make run` serving the embedded tier (SQLite,
file broker) from a temporary VAR_DIR on a spare port: the only edit is the port in
``127.0.0.1:8000``. It takes about a minute (migrations, first run, a web server and a
worker), so it runs when CI runs the suite (``REQUIRE_SERVICES=1``) or with
``QUICKSTART=1``, and skips with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKER = "<!-- quickstart -->"

pytestmark = [
    pytest.mark.quickstart,
    pytest.mark.skipif(
        not (os.environ.get("QUICKSTART") == "1" or os.environ.get("REQUIRE_SERVICES") == "1"),
        reason="runs `make run` (about a minute): set QUICKSTART=1 (CI: REQUIRE_SERVICES=1)",
    ),
]


def quickstart_blocks(text: str) -> list[str]:
    """The ```sh blocks right after a quickstart marker, in README order."""
    blocks = re.findall(re.escape(MARKER) + r"\s*```sh\n(.*?)```", text, flags=re.DOTALL)
    return [block for block in blocks if block.strip()]


def test_the_readme_has_the_quickstart_blocks():
    blocks = quickstart_blocks(README.read_text(encoding="utf-8"))

    assert len(blocks) == 2
    assert "machine create" in blocks[0] and "/oauth/token" in blocks[0]
    assert "/oauth/introspect" in blocks[1]


def _spare_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(port: int, process: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail("make run stopped:\n" + log.read_text()[-4000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if json.load(answer).get("status") == "ready":
                    return
        except OSError:
            pass
        time.sleep(0.5)  # a real process starting: polled, not a test of time
    pytest.fail("make run never became ready:\n" + log.read_text()[-4000:])


def _json_documents(text: str) -> list:
    """Every JSON document printed one after the other (commands print indented JSON)."""
    decoder, documents, index = json.JSONDecoder(), [], 0
    while (index := text.find("{", index)) != -1:
        document, index = decoder.raw_decode(text, index)
        documents.append(document)
    return documents


def test_the_readme_quickstart_runs_as_written(tmp_path):
    port = _spare_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {
            "DATABASE_URL",
            "MIGRATION_DATABASE_URL",
            "REDIS_URL",
            "CACHE_URL",
            "CELERY_BROKER_URL",
            "ISSUER",
            "DJANGO_SETTINGS_MODULE",
            "PYTEST_ARGS",
        }
    }
    env.update({"PORT": str(port), "VAR_DIR": str(tmp_path / "var"), "WEB_CONCURRENCY": "1"})
    log = tmp_path / "run.log"
    with log.open("w") as out:
        run = subprocess.Popen(
            ["make", "run"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(port, run, log)
        script = "\n".join(quickstart_blocks(README.read_text(encoding="utf-8")))
        script = script.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        os.killpg(run.pid, signal.SIGINT)
        try:
            run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()

    assert done.returncode == 0, done.stdout + done.stderr
    answers = _json_documents(done.stdout)
    token, introspection = answers[-2], answers[-1]
    assert (token["token_type"], token["scope"], token["expires_in"]) == (
        "Bearer",
        "orders:read",
        600,
    )
    assert introspection["active"] is True
    assert (introspection["scope"], introspection["aud"]) == (
        "orders:read",
        "https://orders.example.com",
    )
    assert introspection["iss"] == f"http://127.0.0.1:{port}"
