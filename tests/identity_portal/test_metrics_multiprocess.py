"""Counts of several worker processes are summed: prometheus_client's multi-process mode."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from identity_portal.metrics import CountedFigures
from identity_portal.web_server import web_server_env

REPO = Path(__file__).resolve().parents[2]

# A worker process as the web server runs it: PROMETHEUS_MULTIPROC_DIR set before
# anything imports prometheus_client, then some requests' worth of counting.
WORKER = """
import sys
import django
django.setup()
from core import metrics
for _ in range(int(sys.argv[1])):
    metrics.token_issued(grant="client_credentials", auth_method="client_secret_post")
    metrics.response_counted(endpoint="token", status=200, seconds=0.002)
"""


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _sample(families: dict, name: str, **labels) -> float | None:
    family = name.removesuffix("_total").removesuffix("_count")
    for sample in families[family].samples:
        if sample.name == name and sample.labels == labels:
            return sample.value
    return None


def _count_in(directory: Path, n: int) -> int:
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "DJANGO_SETTINGS_MODULE": "identity_portal.settings_test",
    }
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(n)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return n


def _exposition(directory: Path) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CountedFigures(str(directory)))
    return _families(generate_latest(registry).decode())


def test_the_counts_of_two_processes_are_summed_after_both_have_exited(tmp_path):
    directory = tmp_path / "prometheus"
    directory.mkdir()

    total = _count_in(directory, 3) + _count_in(directory, 4)
    families = _exposition(directory)

    pids = {path.stem.rsplit("_", 1)[1] for path in directory.glob("counter_*.db")}
    assert len(pids) == 2
    assert total == 7
    labels = {"grant": "client_credentials", "auth_method": "client_secret_post"}
    assert _sample(families, "portal_tokens_issued_total", **labels) == 7
    assert _sample(families, "portal_token_request_duration_seconds_count") == 7
    assert _sample(families, "portal_http_responses_total", endpoint="token", code="2xx") == 7
    # A family no process counted yet is still announced, without samples.
    assert families["portal_tokens_denied"].samples == []


def test_the_web_servers_environment_names_an_emptied_directory_under_var(tmp_path):
    stale = tmp_path / "prometheus" / "counter_424242.db"
    stale.parent.mkdir()
    stale.write_bytes(b"left by a previous server")
    (tmp_path / "prometheus" / "keep.txt").write_text("not a metrics file")

    env = web_server_env({"VAR_DIR": str(tmp_path), "PATH": "/usr/bin"})

    assert env == {
        "VAR_DIR": str(tmp_path),
        "PATH": "/usr/bin",
        "PROMETHEUS_MULTIPROC_DIR": str((tmp_path / "prometheus").resolve()),
    }
    assert sorted(p.name for p in (tmp_path / "prometheus").iterdir()) == ["keep.txt"]


def _spare_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _health_counts_by_pid(directory: Path) -> dict[str, float]:
    counts = {}
    for path in directory.glob("counter_*.db"):
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
            if '"endpoint": "health"' in key and key.startswith('["portal_http_responses"'):
                counts[path.stem.rsplit("_", 1)[1]] = value
    return counts


def test_manage_py_serve_with_two_workers_serves_the_sum_of_both(tmp_path):
    """The real server: its workers' counts are summed, and a previous run's are gone."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    # What a previous server left: 1000 health checks, which must not be served.
    stale = MmapedDict(str(metrics_dir / "counter_99999.db"))
    key = mmap_key(
        "portal_http_responses",
        "portal_http_responses_total",
        ["endpoint", "code"],
        ["health", "2xx"],
        "Responses by endpoint and status class.",
    )
    stale.write_value(key, 1000.0, 0.0)
    stale.close()
    port = _spare_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "identity_portal.settings",
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--no-worker"],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if _get(port, "/healthz")[0] == 200:
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(log_path.read_text())
                time.sleep(0.2)
            # One request per connection until both workers have written some: each
            # worker writes its counts to its file at most core.metrics.FLUSH_SECONDS later.
            sent = 1
            deadline = time.monotonic() + 60
            while len(_health_counts_by_pid(metrics_dir)) < 2 and time.monotonic() < deadline:
                assert _get(port, "/healthz")[0] == 200
                sent += 1
            # Then nothing more is sent until every count sent is in the files.
            deadline = time.monotonic() + 30
            while (
                sum(_health_counts_by_pid(metrics_dir).values()) < sent
                and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            by_pid = _health_counts_by_pid(metrics_dir)
            status, body = _get(port, "/metrics")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)

    assert status == 200, body
    assert len(by_pid) == 2, (sent, by_pid)
    assert sum(by_pid.values()) == sent
    families = _families(body.decode())
    assert _sample(families, "portal_http_responses_total", endpoint="health", code="2xx") == sent
