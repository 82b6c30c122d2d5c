"""The web server's command line: granian serving the WSGI application.

Why granian rather than gunicorn: the token endpoint's budget is about a
millisecond of CPU per request, and gunicorn's sync worker spent close to
half of that around the application (a new TCP connection per request, as
it has no keep-alive, and an HTTP parser in Python). Granian parses HTTP in
Rust, keeps connections alive and hands the request to the same WSGI
application; ``make bench`` measured the difference.

Built from the environment alone (no Django settings), so ``manage.py
serve`` and the benchmark start the same server with the same flags:

- ``HOST``/``PORT``: where to listen;
- ``WEB_CONCURRENCY``: worker processes (default: the number of cores);
- ``WEB_THREADS``: threads per worker running the application (default 2:
  while one waits on PostgreSQL or Redis the other computes; with one,
  ``make bench`` left a fifth of the two cores idle at concurrency 16);
- ``VAR_DIR``: the console's collected static files are served from
  ``VAR_DIR/static`` under ``/static/`` when that folder exists, and the
  workers count their metrics into ``VAR_DIR/prometheus`` (``web_server_env``).

HTTP/1.1 only, no WebSockets (the portal has neither use for HTTP/2 cleartext
nor for sockets); headers are bounded by the connection buffer
(``HTTP1_BUFFER_SIZE``) and must arrive within ``HEADER_READ_TIMEOUT_MS``, so a
slow or oversized request is dropped before it reaches Python. No server
access log: ``identity_portal.middleware`` writes the access line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
APPLICATION = "identity_portal.served:application"
# Request line plus headers must fit: gunicorn's limits were 8 KiB per line and
# 16 KiB per field; 64 KiB in all leaves room for any real client.
HTTP1_BUFFER_SIZE = 65536
HEADER_READ_TIMEOUT_MS = 10_000
# Seconds a worker gets to finish its requests on SIGTERM before it is killed.
GRACEFUL_TIMEOUT = 10
BACKLOG = 1024


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name) or ""
    if not value:
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise SystemExit(f"{name} must be a whole number, not {value!r}") from exc
    if number < 1:
        raise SystemExit(f"{name} must be at least 1, not {number}")
    return number


def _var_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("VAR_DIR") or BASE_DIR / "var")


def metrics_dir_reset(path: Path) -> None:
    """An empty directory for the workers' metric files (prometheus_client multi-process).

    Emptied at every start: files left by a previous server are counts of processes
    that no longer exist, and summing them would make counters jump. While the
    server runs, a worker that died and was replaced leaves its files: its counts
    stay in the sums, so counters never go backwards (no gauge is kept in these
    files, so there is no dead worker's value to forget).
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for leftover in path.glob("*.db"):
        leftover.unlink()


def web_server_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` plus ``PROMETHEUS_MULTIPROC_DIR`` for the web server's workers, emptied now.

    Every worker process counts into its own files there and ``/metrics`` sums
    them, whichever worker answers the scrape. Call it once per server start,
    before the server starts (``manage.py serve`` and ``make bench`` do).
    """
    env = dict(os.environ if env is None else env)
    metrics_dir = _var_dir(env).resolve() / "prometheus"
    metrics_dir_reset(metrics_dir)
    return {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}


def web_server_argv(env: Mapping[str, str] | None = None) -> list[str]:
    """The argv that serves the portal, for ``env`` (default: this process's)."""
    env = os.environ if env is None else env
    granian = str(Path(sys.executable).parent / "granian")
    argv = [
        granian,
        "--interface",
        "wsgi",
        "--host",
        env.get("HOST") or "127.0.0.1",
        "--port",
        str(_positive(env, "PORT", 8000)),
        "--workers",
        str(_positive(env, "WEB_CONCURRENCY", os.cpu_count() or 2)),
        "--blocking-threads",
        str(_positive(env, "WEB_THREADS", 2)),
        "--http",
        "1",
        "--no-ws",
        "--backlog",
        str(BACKLOG),
        "--http1-buffer-size",
        str(HTTP1_BUFFER_SIZE),
        "--http1-header-read-timeout",
        str(HEADER_READ_TIMEOUT_MS),
        # Idle application threads live on (granian's default ends them after
        # 30 s, and each new one opens and prepares its database connection anew).
        "--blocking-threads-idle-timeout",
        "600",
        "--workers-kill-timeout",
        str(GRACEFUL_TIMEOUT),
        "--respawn-failed-workers",
        "--no-access-log",
    ]
    static = _var_dir(env) / "static"
    if static.is_dir():
        argv += ["--static-path-route", "/static", "--static-path-mount", str(static.resolve())]
    return [*argv, APPLICATION]
