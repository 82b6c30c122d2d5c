"""CPU per token request, measured in one process: insensitive to what else the machine runs.

``make bench`` measures tokens/s, which on a shared machine moves with the
neighbours' load. This script drives the token endpoint in process, through
the WSGI application the web server serves (same settings as the bench:
``DATABASE_URL``, ``REDIS_URL``, ES256 signing, the token lane), and reports
per client-authentication path:

- the CPU time of this process per request (``time.process_time()``: the web
  worker's share; PostgreSQL and Redis run elsewhere), the median of
  ``--batches`` batches of ``--requests`` requests, with min and max;
- the PostgreSQL and Redis round trips per request (statements, BEGIN/COMMIT,
  Redis commands or pipelines), counted at the client libraries;
- with ``--profile N``, the top ``N`` functions of one more batch under cProfile.

Paths: ``secret`` (HTTP Basic, one machine, as the bench's ``portal`` series),
``private_key_jwt`` (ES256 assertions, each with its own ``jti``),
``federated`` (RS256 tokens from a loopback OIDC issuer, a trust with a CEL
condition) and ``introspect`` (one resource server introspecting one token
again and again, as the bench's ``introspect`` series), prepared through the
management commands as the bench prepares them. Only ``secret`` needs nothing
newer than the portal itself, so the same file runs in an older checkout
(``--paths secret``) to compare revisions.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mip_cpu REDIS_URL=redis://127.0.0.1:6379/5 \\
      .venv/bin/python -m bench.cpu_profile --paths secret,private_key_jwt,federated --profile 25

Give it a database of its own (created if missing; machines are added on each run).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
SCOPE = "read"
AUDIENCE = "https://api.example"
TOKEN_BODY = f"grant_type=client_credentials&scope={SCOPE}&resource={quote(AUDIENCE, safe='')}"
HOST = "127.0.0.1:8000"
PATHS = ("secret", "private_key_jwt", "federated", "introspect")
INTROSPECT_SCOPE = "tokens:introspect"


def _manage(*args: str) -> str:
    done = subprocess.run(  # noqa: S603 (our own manage.py, arguments built here)
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 and "exist" not in (done.stdout + done.stderr).lower():
        raise SystemExit(f"manage.py {' '.join(args[:2])} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def _json_from(stdout: str) -> dict:
    decoder = json.JSONDecoder()
    for index, char in enumerate(stdout):
        if char == "{":
            with contextlib.suppress(json.JSONDecodeError):
                return decoder.raw_decode(stdout[index:])[0]
    raise SystemExit(f"no JSON in the command's output: {stdout[:200]!r}")


def _ensure_database() -> None:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return
    import psycopg
    from psycopg import sql

    base, name = url.rsplit("/", 1)
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _machine(run_id: str, suffix: str, *extra: str) -> dict:
    argv = ["machine", "create", "--name", f"cpu-{run_id}-{suffix}", "--scope", SCOPE]
    return _json_from(_manage(*argv, "--audience", AUDIENCE, *extra))


# What ``_in_child`` runs, inherited by the forked child.
_MAKER = None


def _make(count: int) -> list[str]:
    return _MAKER(count)


def _in_child(make, count: int) -> list[str]:
    """``make(count)`` in a forked child: the client's signing is not the server's work, and
    under a profiler or ``valgrind --tool=callgrind`` (no ``--trace-children``) it is not counted.
    """
    import multiprocessing

    global _MAKER
    _MAKER = make
    try:
        with multiprocessing.get_context("fork").Pool(1) as workers:
            return workers.apply(_make, (count,))
    finally:
        _MAKER = None


class Workloads:
    """Request bodies and headers per path, registered through the management commands."""

    def __init__(self, paths: list[str], total: int) -> None:
        run_id = f"{int(time.time())}"
        _manage("migrate", "--no-input")
        _manage("first_run")
        _manage("scope", "create", SCOPE, "--description", "Benchmark scope")
        _manage("audience", "create", AUDIENCE)
        self.requests: dict[str, list[tuple[str, dict[str, str]]]] = {}
        self.closers = []
        if "secret" in paths:
            self.requests["secret"] = [
                (TOKEN_BODY, self._basic(_machine(run_id, "secret")))
            ] * total
        if "introspect" in paths:
            # The token to introspect is issued once the application is up (main).
            self.introspect_token_request = self._basic(_machine(run_id, "issued"))
            _manage("scope", "create", INTROSPECT_SCOPE, "--description", "Introspection")
            self.introspector = self._basic(
                _machine(run_id, "introspector", "--scope", INTROSPECT_SCOPE)
            )
            self.total = total
        if "private_key_jwt" in paths:
            from bench.servers import AssertionPool

            created = _machine(run_id, "jwt", "--auth-method", "private_key_jwt")
            issuer = os.environ["ISSUER"]
            pool = AssertionPool(client_id=created["client_id"], audience=issuer + "/oauth/token")
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as jwk:
                json.dump(pool.jwk, jwk)
            try:
                _manage("machine", "add-key", created["client_id"], "--jwk", jwk.name)
            finally:
                os.unlink(jwk.name)
            self.requests["private_key_jwt"] = [(body, {}) for body in _in_child(pool, total)]
        if "federated" in paths:
            from bench.federation import FederatedWorkload

            workload = FederatedWorkload(out_dir=None)
            self.closers.append(workload.close)
            workload.register(_manage, scope=SCOPE, audience=AUDIENCE, run_id=run_id)
            self.requests["federated"] = [(body, {}) for body in workload.bodies(total)]

    @staticmethod
    def _basic(created: dict) -> dict[str, str]:
        pair = f"{quote(created['client_id'], safe='')}:{quote(created['client_secret'], safe='')}"
        return {"HTTP_AUTHORIZATION": f"Basic {base64.b64encode(pair.encode()).decode()}"}

    def introspection_prepare(self, application) -> None:
        """``introspect``: one token issued through ``application``, its introspections."""
        if not hasattr(self, "introspector"):
            return
        status, body = _call(application, TOKEN_BODY, self.introspect_token_request, body_too=True)
        if status != 200:
            raise SystemExit(f"introspect: no token to introspect (HTTP {status})")
        token = json.loads(body)["access_token"]
        headers = {**self.introspector, "PATH_INFO": "/oauth/introspect"}
        self.requests["introspect"] = [(f"token={token}", headers)] * self.total

    def close(self) -> None:
        for close in self.closers:
            close()


class RoundTrips:
    """Counts PostgreSQL and Redis round trips made by this process."""

    def __init__(self) -> None:
        self.sql = 0
        self.redis = 0
        import psycopg
        import redis.connection
        from psycopg import _connection_base

        counter = self

        def counted(function, attribute):
            def wrapper(*args, **kwargs):
                setattr(counter, attribute, getattr(counter, attribute) + 1)
                return function(*args, **kwargs)

            return wrapper

        # One statement per execute; BEGIN, COMMIT and ROLLBACK go through _exec_command.
        psycopg.Cursor.execute = counted(psycopg.Cursor.execute, "sql")
        base = _connection_base.BaseConnection
        base._exec_command = counted(base._exec_command, "sql")
        # One write per command or pipeline.
        connection = redis.connection.AbstractConnection
        connection.send_packed_command = counted(connection.send_packed_command, "redis")


def _application():
    try:
        from identity_portal.web_server import APPLICATION
    except ImportError:
        APPLICATION = "identity_portal.wsgi:application"  # older revisions
    module, name = APPLICATION.split(":")
    return getattr(__import__(module, fromlist=[name]), name)


# granian copies the process environment into every environ (identity_portal.served);
# copied once here, so building the environ costs the harness little.
_PROCESS_ENVIRON: dict[str, str] = {}


def _call(application, body: str, headers: dict[str, str], *, body_too: bool = False):
    data = body.encode()
    environ = {
        **_PROCESS_ENVIRON,
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/oauth/token",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": HOST,
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(data)),
        "wsgi.input": io.BytesIO(data),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        **headers,
    }
    status = []
    response = application(environ, lambda line, _headers, *_: status.append(line))
    try:
        content = b"".join(response)
    finally:
        close = getattr(response, "close", None)
        if close:
            close()
    code = int(status[0].split()[0])
    return (code, content) if body_too else code


def _drive(application, requests, label: str) -> None:
    for body, headers in requests:
        code = _call(application, body, headers)
        if code != 200:
            raise SystemExit(f"{label}: HTTP {code} (see the audit trail's token.denied)")


def _callgrind_dump(label: str) -> None:
    """Under ``valgrind --tool=callgrind``: dump the counts so far and start again from zero.

    ``callgrind_control`` reaches this process through valgrind's gdbserver, which
    valgrind polls while the program runs: this process keeps running (a spin that
    costs a few thousand instructions) until the dump is written, rather than wait.
    """
    for _attempt in range(5):  # vgdb gives up now and then on a busy machine: ask again
        control = subprocess.Popen(  # noqa: S603
            ["callgrind_control", "--dump=" + label, str(os.getpid())],  # noqa: S607
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while control.poll() is None:
            sum(range(1000))
        if control.returncode == 0:
            return
    raise SystemExit(f"callgrind_control could not dump {label!r}")


def callgrind_batches(application, requests: dict[str, list], *, batch: int, warmup: int):
    """``--callgrind``: every path warmed up, then one batch per path, a dump after each."""
    pending = {name: iter(values) for name, values in requests.items()}
    for name in requests:
        _drive(application, [next(pending[name]) for _ in range(warmup)], name)
    _callgrind_dump("warmed-up")
    for name in requests:
        _drive(application, [next(pending[name]) for _ in range(batch)], name)
        _callgrind_dump(f"{name}-{batch}-requests")


def measure(
    application,
    counter: RoundTrips,
    requests: dict[str, list],
    *,
    batch: int,
    batches: int,
    warmup: int,
    top: int,
    profile_dir: str,
) -> list[dict]:
    """Every path warmed up, then ``batches`` rounds of one batch per path, in turns.

    Taking the paths in turns (the order rotated each round) spreads a drift of the
    machine (another process's load changes cache misses and clock) over all of them.
    """
    pending = {name: iter(values) for name, values in requests.items()}
    names = list(requests)
    for name in names:
        _drive(application, [next(pending[name]) for _ in range(warmup)], name)
    per_request: dict[str, list[float]] = {name: [] for name in names}
    trips: dict[str, tuple[int, int]] = {}
    for index in range(batches):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            chunk = [next(pending[name]) for _ in range(batch)]
            sql0, redis0 = counter.sql, counter.redis
            start = time.process_time()
            _drive(application, chunk, name)
            per_request[name].append((time.process_time() - start) / batch * 1000)
            trips[name] = (counter.sql - sql0, counter.redis - redis0)
    results = []
    for name in names:
        values = per_request[name]
        sql, redis = trips[name]
        result = {
            "path": name,
            "cpu_ms_median": round(statistics.median(values), 3),
            "cpu_ms_min": round(min(values), 3),
            "cpu_ms_max": round(max(values), 3),
            "batches_ms": [round(value, 3) for value in values],
            "sql_round_trips": round(sql / batch, 2),
            "redis_round_trips": round(redis / batch, 2),
        }
        if top:
            chunk = [next(pending[name]) for _ in range(batch)]
            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
            _drive(application, chunk, name)
            profiler.disable()
            if profile_dir:
                profiler.dump_stats(str(Path(profile_dir) / f"{name}.prof"))
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(top)
            stats.sort_stats("cumulative").print_stats(top)
            result["profile"] = out.getvalue()
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--paths", default=",".join(PATHS), help="comma-separated: " + ", ".join(PATHS)
    )
    parser.add_argument("--requests", type=int, default=300, help="requests per batch")
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile top N")
    parser.add_argument("--profile-dir", default="", help="also write <path>.prof files here")
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="under valgrind --tool=callgrind: one batch per path, a dump after each",
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    paths = [path for path in args.paths.split(",") if path]
    unknown = set(paths) - set(PATHS)
    if unknown:
        parser.error(f"unknown paths: {', '.join(sorted(unknown))}")
    # As the bench runs the portal (bench.servers.Portal.env), on a fixed issuer.
    os.environ.setdefault("ISSUER", f"http://{HOST}")
    os.environ.setdefault("FEDERATION_ALLOW_PRIVATE_ISSUERS", "true")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "identity_portal.settings")
    metrics_dir = tempfile.mkdtemp(prefix="mip-cpu-metrics-")
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
    sys.path.insert(0, str(REPO))
    _ensure_database()
    batches = 1 if args.callgrind else args.batches + (1 if args.profile else 0)
    total = args.warmup + args.requests * batches
    workloads = Workloads(paths, total)
    try:
        try:
            from clients.constants import MACHINE_CACHE_TOMBSTONE_TTL as wait
        except ImportError:
            wait = 10
        time.sleep(wait + 1)  # registration left tombstones in the machine cache: the steady state
        application = _application()
        _PROCESS_ENVIRON.update(os.environ)
        workloads.introspection_prepare(application)
        counter = RoundTrips()
        if args.callgrind:
            requests = {name: workloads.requests[name] for name in paths}
            callgrind_batches(application, requests, batch=args.requests, warmup=args.warmup)
            return 0
        results = measure(
            application,
            counter,
            {name: workloads.requests[name] for name in paths},
            batch=args.requests,
            batches=args.batches,
            warmup=args.warmup,
            top=args.profile,
            profile_dir=args.profile_dir,
        )
    finally:
        workloads.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))  # noqa: T201
        return 0
    secret = next((r["cpu_ms_median"] for r in results if r["path"] == "secret"), None)
    for result in results:
        profile = result.pop("profile", "")
        if profile:
            print(f"==== {result['path']}: cProfile of {args.requests} requests\n{profile}")  # noqa: T201
    columns = ("CPU ms/req", "min", "max", "SQL/req", "Redis/req", "secret/path")
    print(f"{'path':<16} " + " ".join(f"{c:>11}" for c in columns))  # noqa: T201
    for r in results:
        ratio = f"{secret / r['cpu_ms_median']:.2f}" if secret else "-"
        figures = (r["cpu_ms_median"], r["cpu_ms_min"], r["cpu_ms_max"])
        trips = (r["sql_round_trips"], r["redis_round_trips"])
        print(  # noqa: T201
            f"{r['path']:<16} "
            + " ".join(f"{value:>11.3f}" for value in figures)
            + " "
            + " ".join(f"{value:>11.2f}" for value in trips)
            + f" {ratio:>11}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
