"""What the metrics cost a token request, in CPU: the figure `make bench` reports.

Not a test. Wall-clock on a shared machine moves with whatever else runs, and a
difference of a fraction of a percent between two load runs is below their noise,
so the cost is measured in two parts, each in CPU time of this process:

- **the instrumentation alone**: exactly the calls one token request makes into
  the metrics (``tokens.views.token.TokenRequestObserved``, the middleware's
  endpoint label, counter increments and the latency histogram), in a tight
  loop, in multi-process mode (memory-mapped files, as under the web server),
  the best of several repeats;
- **the token request**: requests through the WSGI application the web server
  loads (the token lane), in this process, no network, metrics on and off in
  alternating batches, the median batch of each.

The cost is the first divided by the second; the on/off difference is printed
too as a cross-check (it is within the noise of the second). Access logging is
off during the run, which makes the request cheaper and the ratio larger.

    .venv/bin/python -m bench.metrics_cost [--requests 200] [--rounds 7] [--calls 20000]

Uses ``METRICS_COST_DATABASE_URL``, else a SQLite file under
``var/bench/metrics-cost/`` (created and migrated on first use); writes
``var/bench/metrics-cost.json``. Exits 1 when the cost reaches 2%.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from base64 import b64encode
from pathlib import Path
from urllib.parse import quote_plus

from bench.servers import ensure_postgres_database, is_postgres

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "var" / "bench"
WORK_DIR = OUT_DIR / "metrics-cost"
BUDGET = 0.02


def _environment(database_url: str | None) -> None:
    """Settings for this process, before Django or prometheus_client is imported."""
    from identity_portal.web_server import web_server_env

    WORK_DIR.mkdir(parents=True, exist_ok=True)
    os.environ["VAR_DIR"] = str(WORK_DIR)
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{WORK_DIR / 'portal.sqlite3'}"
    os.environ["ACCESS_LOG"] = "false"
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ["DJANGO_SETTINGS_MODULE"] = "identity_portal.settings"
    os.environ.update(web_server_env(os.environ))


def _machine() -> tuple[str, str]:
    from django.core.management import CommandError, call_command

    call_command("migrate", "--no-input", verbosity=0)
    call_command("first_run", stdout=io.StringIO())
    for argv in (("scope", "create", "read"), ("audience", "create", "https://api.example")):
        # Registered by an earlier run: refused, and fine.
        with contextlib.suppress(CommandError, SystemExit):
            call_command(*argv, stdout=io.StringIO(), stderr=io.StringIO())
    out = io.StringIO()
    call_command(
        "machine",
        "create",
        "--name",
        f"metrics-cost-{int(time.time())}",
        "--scope",
        "read",
        "--audience",
        "https://api.example",
        stdout=out,
    )
    created = json.loads(out.getvalue())
    return created["client_id"], created["client_secret"]


def _token_requests(client_id: str, secret: str):
    from identity_portal.wsgi import application

    body = b"grant_type=client_credentials&scope=read&resource=" + quote_plus(
        "https://api.example"
    ).encode("ascii")
    credentials = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    authorization = "Basic " + b64encode(credentials).decode("ascii")

    def one() -> int:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/oauth/token",
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": authorization,
            "HTTP_HOST": "127.0.0.1",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
        }
        status = []
        response = application(environ, lambda s, h, exc_info=None: status.append(s))
        try:
            b"".join(response)
        finally:
            response.close()
        return int(status[0].split()[0])

    return one


def request_cpu(*, requests: int, rounds: int, one) -> dict[str, float]:
    """Median CPU seconds per token request, metrics on and off, batches alternating."""
    from django.test.utils import override_settings

    for _ in range(20):  # warm: caches, prepared statements, the keyring
        if one() != 200:
            raise SystemExit("the warm-up token request was refused")
    per_request: dict[bool, list[float]] = {True: [], False: []}
    for index in range(rounds * 2):
        enabled = index % 2 == 0
        with override_settings(METRICS_ENABLED=enabled):
            started = time.process_time()
            for _ in range(requests):
                status = one()
                if status != 200:
                    raise SystemExit(f"a token request answered {status}")
            per_request[enabled].append((time.process_time() - started) / requests)
    return {
        "on": statistics.median(per_request[True]),
        "off": statistics.median(per_request[False]),
    }


def instrumentation_of_one_request():
    """The metrics calls one successful token request makes (tests/bench holds it to them)."""
    from core import metrics
    from identity_portal.middleware import endpoint_of
    from tokens.views.token import TokenRequestObserved

    def one_request() -> None:
        # tokens.views.token.token
        observed = TokenRequestObserved()
        observed.grant = "client_credentials"
        observed.auth_method = "client_secret_basic"
        observed.count(None)
        # identity_portal.middleware.RequestIdMiddleware: the time it did not take before
        # (the access log is off) and the response's count and latency.
        elapsed = time.perf_counter()
        metrics.response_counted(
            endpoint=endpoint_of("/oauth/token"), status=200, seconds=elapsed % 0.01
        )

    return one_request


def instrumentation_cpu(*, calls: int, repeats: int = 7) -> float:
    """CPU seconds of the metrics calls of one token request, best of ``repeats``."""
    one_request = instrumentation_of_one_request()
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(calls):
            one_request()
        best = min(best, (time.process_time() - started) / calls)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="token requests per batch")
    parser.add_argument("--rounds", type=int, default=7, help="batches with metrics on (and off)")
    parser.add_argument("--calls", type=int, default=20000, help="loop length, instrumentation")
    args = parser.parse_args(argv)
    database_url = os.environ.get("METRICS_COST_DATABASE_URL")
    if database_url and is_postgres(database_url):
        ensure_postgres_database(database_url)
    _environment(database_url)
    import django

    django.setup()
    from django.conf import settings

    if not settings.METRICS_ENABLED:
        raise SystemExit("METRICS_ENABLED is off: nothing to measure")
    one = _token_requests(*_machine())
    requests = request_cpu(requests=args.requests, rounds=args.rounds, one=one)
    instrumentation = instrumentation_cpu(calls=args.calls)
    ratio = instrumentation / requests["on"]
    result = {
        "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        "multiprocess_dir": os.environ["PROMETHEUS_MULTIPROC_DIR"],
        "token_request_cpu_us": {k: round(v * 1e6, 1) for k, v in requests.items()},
        "instrumentation_cpu_us": round(instrumentation * 1e6, 2),
        "cost_of_request_cpu": round(ratio, 5),
        "on_minus_off_us": round((requests["on"] - requests["off"]) * 1e6, 1),
        "budget": BUDGET,
        "pass": ratio < BUDGET,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "metrics-cost.json").write_text(json.dumps(result, indent=2) + "\n")
    print(  # noqa: T201 (a command-line tool talking to its user)
        "Metrics cost per token request (CPU, this process; access log off):\n"
        f"  token request ({result['database']}), metrics on:  "
        f"{result['token_request_cpu_us']['on']:8.1f} us\n"
        f"  token request ({result['database']}), metrics off: "
        f"{result['token_request_cpu_us']['off']:8.1f} us   "
        f"(on - off: {result['on_minus_off_us']:+.1f} us, within batch noise)\n"
        f"  the metrics calls of one request (mmap, best of 7): "
        f"{result['instrumentation_cpu_us']:6.2f} us\n"
        f"  cost: {ratio:.2%} of the request's CPU "
        f"(budget {BUDGET:.0%}): {'PASS' if result['pass'] else 'FAIL'}"
    )
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
