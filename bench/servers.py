"""The servers under test: the portal and its peers, each started on a spare port.

Every server runs as a process group of its own that the harness started, so
stopping it never touches anything else, and its CPU time is read from /proc
for the whole tree (master and workers).
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import dj_database_url

from bench.federation import FEDERATED, FederatedWorkload
from bench.load import Target
from identity_portal.web_server import web_server_argv, web_server_env

REPO = Path(__file__).resolve().parent.parent
PEERS = Path(__file__).resolve().parent / "peers"
SCOPE = "read"
INTROSPECT_SCOPE = "tokens:introspect"
AUDIENCE = "https://api.example"
TOKEN_BODY = f"grant_type=client_credentials&scope={SCOPE}&resource={quote(AUDIENCE, safe='')}"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class AssertionPool:
    """Single-use private_key_jwt bodies for one machine: an ES256 key signs each
    assertion with its own jti and an exp just inside the portal's five minutes."""

    def __init__(self, *, client_id: str, audience: str) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        from core import jose

        self.client_id = client_id
        self.audience = audience
        key = ec.generate_private_key(ec.SECP256R1())
        self.jwk = {**jose.public_jwk(key.public_key()), "kid": "bench-key", "alg": "ES256"}
        self.signer = jose.Signer(kid="bench-key", algorithm="ES256", private_key=key)

    def __call__(self, count: int) -> list[str]:
        now = int(time.time())
        prefix = (
            TOKEN_BODY
            + "&client_assertion_type="
            + quote(JWT_BEARER, safe="")
            + "&client_assertion="
        )
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.audience}
        return [
            prefix
            + self.signer.sign(
                claims={**claims, "iat": now, "exp": now + 280, "jti": secrets.token_urlsafe(12)},
                typ="JWT",
            )
            for _ in range(count)
        ]


_CLK_TCK = os.sysconf("SC_CLK_TCK")


class ServerUnavailable(RuntimeError):
    """The server could not be prepared or started; the run goes on without it."""


# --- processes -------------------------------------------------------------


def spare_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after it.
    return raw[raw.rindex(")") + 2 :].split()


def tree_cpu_seconds(root_pid: int) -> float:
    """utime+stime of a process and all its descendants (plus children it reaped)."""
    parents: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields is not None:
            stats[int(entry.name)] = fields
            parents[int(entry.name)] = int(fields[1])
    tree = {root_pid}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    ticks = 0
    for pid in tree:
        fields = stats.get(pid)
        if fields:
            # Fields 14-17 of stat (1-based): utime, stime, cutime, cstime.
            ticks += sum(int(v) for v in fields[11:15])
    return ticks / _CLK_TCK


def host_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    # guest time is already counted in user time
    return (sum(fields[:8]) - idle) / _CLK_TCK


def process_cpu_seconds(pid: int) -> float:
    fields = _proc_stat(pid)
    return sum(int(v) for v in fields[11:13]) / _CLK_TCK if fields else 0.0


def children_of(pid: int) -> list[int]:
    """The direct children of a process (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def postgres_backends_cpu(
    url: str, *, exclude: frozenset[int] = frozenset()
) -> dict[int, float] | None:
    """CPU seconds of each client backend connected to the database, when it runs here.

    Only meaningful with persistent connections (the portal's CONN_MAX_AGE):
    a backend that exits between two readings takes its time with it.
    None when the server is not on this machine or cannot be asked.
    """
    import psycopg

    cfg = dj_database_url.parse(url)
    if (cfg.get("HOST") or "127.0.0.1") not in {"127.0.0.1", "localhost", "::1"}:
        return None
    try:
        with psycopg.connect(
            host=cfg.get("HOST") or "127.0.0.1",
            port=cfg.get("PORT") or 5432,
            user=cfg.get("USER") or None,
            password=cfg.get("PASSWORD") or None,
            dbname=cfg["NAME"],
        ) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchall()
    except psycopg.Error:
        return None
    return {pid: process_cpu_seconds(pid) for (pid,) in rows if pid not in exclude}


def cpu_delta(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    if before is None or after is None:
        return None
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


def wait_idle(root_pid: int, *, interval: float = 0.5, limit: float = 60.0) -> float:
    """Wait until the server tree stops burning CPU (queued requests drained)."""
    started = time.monotonic()
    last = tree_cpu_seconds(root_pid)
    while time.monotonic() - started < limit:
        time.sleep(interval)
        now = tree_cpu_seconds(root_pid)
        if now - last <= 0.02:
            break
        last = now
    return time.monotonic() - started


def http_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (loopback, our server)
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


def token_request(target: Target) -> tuple[int, str]:
    """One request outside the load tool, to prove the wiring before loading it.

    A fleet target's smoke request uses its last machine, which no point reaches;
    a target with a pool of single-use bodies spends one of its own.
    """
    headers = {"X-Request-ID": "bench-smoke-" + secrets.token_hex(4)}
    if target.credentials:
        auths = target.authorization_headers() if not target.fleet else None
        headers["Authorization"] = (
            auths[0]
            if auths
            else Target(
                target.name, target.url, "", target.credentials[-1:]
            ).authorization_headers()[0]
        )
    body = None
    if target.method == "POST":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = target.body_pool(1)[0] if target.body_pool is not None else target.body
    request = urllib.request.Request(  # noqa: S310 (loopback, our server)
        target.url,
        data=body.encode() if body is not None else None,
        headers=headers,
        method=target.method,
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.read(2000).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(2000).decode(errors="replace")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _run(argv: list[str], *, env: dict[str, str], cwd: Path, what: str) -> str:
    proc = subprocess.run(  # noqa: S603 (fixed argv, no shell)
        argv, env=env, cwd=cwd, capture_output=True, text=True, check=False, timeout=600
    )
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip())[-800:]
        raise ServerUnavailable(f"{what} failed (exit {proc.returncode}): {detail}")
    return proc.stdout


def _json_from(stdout: str) -> object:
    """The JSON document a command printed, tolerating lines of prose around it."""
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for index, char in enumerate(stdout):
        if char in "[{":
            try:
                return decoder.raw_decode(stdout[index:])[0]
            except json.JSONDecodeError:
                continue
    raise ServerUnavailable(f"no JSON in the command's output: {stdout[:200]!r}")


def ensure_postgres_database(url: str) -> bool:
    """Create the benchmark's database when missing; True when it was created."""
    import psycopg
    from psycopg import sql

    cfg = dj_database_url.parse(url)
    params = {
        "host": cfg.get("HOST") or "127.0.0.1",
        "port": cfg.get("PORT") or 5432,
        "user": cfg.get("USER") or None,
        "password": cfg.get("PASSWORD") or None,
        "dbname": "postgres",
        "autocommit": True,
    }
    with psycopg.connect(**params) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [cfg["NAME"]])
        if exists.fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(cfg["NAME"])))
        return True


def redact_url(url: str) -> str:
    cfg = dj_database_url.parse(url)
    if cfg["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{cfg['NAME']}"
    return f"postgres://{cfg.get('USER') or ''}@{cfg.get('HOST')}:{cfg.get('PORT')}/{cfg['NAME']}"


def is_postgres(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://", "pgsql://"))


class Server(abc.ABC):
    """A server the harness starts, loads and stops."""

    name = "server"

    def __init__(self, *, out_dir: Path, workers: int) -> None:
        self.out_dir = out_dir
        self.workers = workers
        self.port = spare_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = out_dir / f"{self.name}.log"
        self.notes: dict[str, object] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @abc.abstractmethod
    def prepare(self) -> None:
        """Create what the server needs before it starts (database, clients)."""

    @abc.abstractmethod
    def command(self) -> tuple[list[str], dict[str, str], Path]:
        """The argv, environment and working directory that start the server."""

    def health_url(self) -> str:
        return self.base_url + "/"

    @abc.abstractmethod
    def targets(self) -> list[Target]:
        """What the load tool sends to this server."""

    def start(self, *, timeout: float = 60.0) -> None:
        argv, env, cwd = self.command()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 (fixed argv, no shell)
            argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerUnavailable(
                    f"{self.name} exited {self.proc.returncode} at start; {self.log_path}:\n"
                    + _tail(self.log_path)
                )
            if http_up(self.health_url()):
                return
            time.sleep(0.3)
        self.stop()
        raise ServerUnavailable(f"{self.name} did not answer within {timeout:.0f} s")

    def cpu_seconds(self) -> float:
        assert self.proc is not None  # noqa: S101 (started before measured)
        return tree_cpu_seconds(self.proc.pid)

    def wait_idle(self) -> float:
        assert self.proc is not None  # noqa: S101
        return wait_idle(self.proc.pid)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        # Our own process group only (start_new_session above).
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


class Sealer:
    """``python -m bench.sealer`` beside the portal: the audit sealer at its interval.

    A process group of its own, like the servers. ``wait_pass_after`` reads the
    line it prints after each pass, so a measurement can end only once
    everything it issued is sealed (the sealing cost of its tokens inside it).
    """

    def __init__(
        self,
        *,
        out_dir: Path,
        env: dict[str, str],
        python: str = sys.executable,
        cwd: Path = REPO,
        log_name: str = "sealer.log",
    ) -> None:
        # python and cwd: another tree's own sealer (``--baseline``) runs with its own code.
        self.env = env
        self.python = python
        self.cwd = cwd
        self.log_path = out_dir / log_name
        self.proc: subprocess.Popen | None = None
        self.interval = float(env.get("AUDIT_SEAL_INTERVAL") or 10)

    def start(self) -> None:
        self.log_path.write_bytes(b"")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 (fixed argv, no shell)
            [self.python, "-m", "bench.sealer"],
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.wait_pass_after(0.0)

    def passes(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(item, dict) and "finished" in item:
                out.append(item)
        return out

    def wait_pass_after(self, moment: float) -> dict:
        """The first pass that started after ``moment`` (wall clock), once it finished."""
        deadline = time.monotonic() + self.interval * 3 + 60
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise ServerUnavailable(
                    f"the sealer stopped; {self.log_path}:\n" + _tail(self.log_path)
                )
            for item in self.passes():
                if item["started"] > moment:
                    return item
            time.sleep(0.2)
        raise ServerUnavailable("the sealer made no pass in time")

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.proc.pid) if self.proc else 0.0

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


DEPLOYMENT = "deployment"
WEB_ONLY = "web-only"


class Portal(Server):
    """The portal as it is served: ``manage.py serve`` (deployment) or granian alone (web-only).

    Deployment mode (the default) is what ``make run`` runs: ``manage.py
    serve`` starts granian and a Celery worker with beat, relays their output
    line by line to its own (here the log file, ``make run``'s terminal there),
    and the worker seals and checkpoints the audit trail on its schedule while
    the points run. Web-only mode starts granian alone with the same flags (and
    optionally ``bench.sealer`` beside it).
    """

    name = "portal"

    def __init__(
        self,
        *,
        out_dir: Path,
        workers: int,
        database_url: str,
        machines: int,
        run_id: str,
        sealer: bool = False,
        mode: str = DEPLOYMENT,
        fleet: int = 0,
        side_concurrency: tuple[int, ...] = (16,),
    ):
        super().__init__(out_dir=out_dir, workers=workers)
        self.database_url = database_url
        self.machine_count = machines
        self.run_id = run_id
        self.mode = mode
        self.fleet_count = fleet
        self.side_concurrency = side_concurrency
        self.credentials: list[tuple[str, str]] = []
        self.assertions: AssertionPool | None = None
        # The federated point's issuer, started in prepare() (bench.federation).
        self.federated: FederatedWorkload | None = None
        self.fleet: list[tuple[str, str]] = []
        self.introspector: tuple[str, str] | None = None
        self.notes["mode"] = mode
        self.notes["database"] = redact_url(database_url)
        self.notes["workers"] = workers
        self.seal_interval = float(self.env().get("AUDIT_SEAL_INTERVAL") or 10)
        self.sealer = (
            Sealer(out_dir=out_dir, env=self.env()) if sealer and mode == WEB_ONLY else None
        )
        if mode == DEPLOYMENT:
            self.notes["worker"] = f"Celery worker with beat, seals every {self.seal_interval:g} s"
        elif self.sealer:
            self.notes["sealer"] = f"every {self.sealer.interval:g} s"
        argv = web_server_argv(self.env())
        self.notes["threads per worker"] = int(argv[argv.index("--blocking-threads") + 1])
        self._children: list[int] = []

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "WEB_CONCURRENCY": str(self.workers),
            "PYTHONUNBUFFERED": "1",
            # The federated point's issuer listens on loopback, over plain HTTP.
            "FEDERATION_ALLOW_PRIVATE_ISSUERS": "true",
        }
        # Checkpoints of the benchmark's database go to a witness of its own, not to the
        # one `make run` keeps for the user's database.
        env.setdefault("AUDIT_WITNESS", f"file:{self.out_dir / 'audit-witness.jsonl'}")
        return env

    def manage(self, *args: str) -> str:
        return _run(
            [sys.executable, "manage.py", *args],
            env=self.env(),
            cwd=REPO,
            what="manage.py " + " ".join(args[:2]),
        )

    def _machine_create(self, name: str, *scopes: str) -> tuple[str, str]:
        argv = ["machine", "create", "--name", name, "--audience", AUDIENCE]
        for scope in scopes:
            argv += ["--scope", scope]
        created = _json_from(self.manage(*argv))
        if not isinstance(created, dict) or not {"client_id", "client_secret"} <= set(created):
            raise ServerUnavailable("`machine create` printed no client_id/client_secret")
        return str(created["client_id"]), str(created["client_secret"])

    def prepare(self) -> None:
        if is_postgres(self.database_url) and ensure_postgres_database(self.database_url):
            self.notes["database_created"] = True
        self.manage("migrate", "--no-input")
        self.manage("first_run")
        for argv in (
            ("scope", "create", SCOPE, "--description", "Benchmark scope"),
            ("scope", "create", INTROSPECT_SCOPE, "--description", "Introspection"),
            ("audience", "create", AUDIENCE),
        ):
            try:
                self.manage(*argv)
            except ServerUnavailable as exc:
                # Already registered by an earlier run: fine; anything else shows up below.
                if "exist" not in str(exc).lower():
                    raise
        for index in range(self.machine_count):
            self.credentials.append(self._machine_create(f"bench-{self.run_id}-{index + 1}", SCOPE))
        self._prepare_private_key_jwt()
        self.federated = FederatedWorkload(out_dir=self.out_dir)
        self.federated.register(self.manage, scope=SCOPE, audience=AUDIENCE, run_id=self.run_id)
        self.introspector = self._machine_create(
            f"bench-{self.run_id}-introspector", SCOPE, INTROSPECT_SCOPE
        )
        if self.fleet_count:
            self.fleet = self._fleet_register()
        # No wait after the registrations: a machine's first request reads it and caches
        # it (clients.machine_cache, generations), and the warm-up covers that request.

    def _prepare_private_key_jwt(self) -> None:
        """One machine that authenticates with private_key_jwt only (no secret exists)."""
        argv = ("machine", "create", "--name", f"bench-{self.run_id}-jwt", "--scope", SCOPE)
        argv += ("--audience", AUDIENCE, "--auth-method", "private_key_jwt")
        created = _json_from(self.manage(*argv))
        if not isinstance(created, dict) or "client_id" not in created:
            raise ServerUnavailable("`machine create` printed no client_id")
        # As identity_portal.settings derives it: ISSUER, else the port the portal serves on.
        env = self.env()
        issuer = env.get("ISSUER", f"http://127.0.0.1:{env['PORT']}").rstrip("/")
        self.assertions = AssertionPool(
            client_id=str(created["client_id"]), audience=issuer + "/oauth/token"
        )
        jwk_file = self.out_dir / f"bench-{self.run_id}-jwk.json"
        jwk_file.write_text(json.dumps(self.assertions.jwk))
        self.manage("machine", "add-key", str(created["client_id"]), "--jwk", str(jwk_file))

    def _fleet_register(self) -> list[tuple[str, str]]:
        """``bench.fleet``: the fleet's machines in bulk; their credentials stay in memory."""
        path = self.out_dir / f"fleet-{self.run_id}.tsv"
        try:
            out = _run(
                [
                    sys.executable,
                    "-m",
                    "bench.fleet",
                    "--count",
                    str(self.fleet_count),
                    "--name-prefix",
                    f"bench-{self.run_id}-fleet",
                    "--scope",
                    SCOPE,
                    "--audience",
                    AUDIENCE,
                    "--out",
                    str(path),
                ],
                env=self.env(),
                cwd=REPO,
                what="bench.fleet",
            )
            fleet = [tuple(line.split("\t", 1)) for line in path.read_text().splitlines() if line]
        finally:
            path.unlink(missing_ok=True)
        done = _json_from(out)
        if isinstance(done, dict):
            self.notes["fleet registered"] = f"{len(fleet):,} machines in {done.get('seconds')} s"
        return fleet

    def start(self, *, timeout: float = 60.0) -> None:
        super().start(timeout=timeout)
        if self.mode == DEPLOYMENT:
            self._children = children_of(self.proc.pid)
        if self.sealer:
            self.sealer.start()

    def cpu_parts(self) -> dict[str, float]:
        """CPU seconds so far of the web server, the worker and ``serve`` itself (the relay)."""
        assert self.proc is not None  # noqa: S101
        if self.mode != DEPLOYMENT:
            return {"web": tree_cpu_seconds(self.proc.pid)}
        parts = {"web": 0.0, "worker": 0.0, "relay": process_cpu_seconds(self.proc.pid)}
        for child in children_of(self.proc.pid):
            line = command_line(child)
            part = "web" if "granian" in line else "worker" if "celery" in line else "relay"
            parts[part] += tree_cpu_seconds(child)
        return parts

    def stop(self) -> None:
        if self.sealer:
            self.sealer.stop()
        children, self._children = self._children, []
        if self.federated:
            self.federated.close()
            self.federated = None
        super().stop()
        # serve stops its children on SIGTERM; if it was killed instead, they would live on
        # in sessions of their own: end those we saw it start.
        for pid in children:
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                continue

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        # The same server, flags and metrics directory as `manage.py serve`.
        env = web_server_env(self.env())
        if self.mode == DEPLOYMENT:
            # Exactly what `make run` ends with; its output goes to our log file.
            return [sys.executable, "manage.py", "serve"], env, REPO
        return web_server_argv(env), env, REPO

    def health_url(self) -> str:
        return self.base_url + "/healthz"

    def targets(self) -> list[Target]:
        token_url = self.base_url + "/oauth/token"
        targets = [Target("portal", token_url, TOKEN_BODY, self.credentials)]
        if self.assertions is not None:
            targets.append(
                Target(
                    "portal-private-key-jwt", token_url, TOKEN_BODY, [], body_pool=self.assertions
                )
            )
        if self.federated is not None:
            targets.append(Target(FEDERATED, token_url, "", [], body_pool=self.federated.bodies))
        if self.fleet:
            targets.append(
                Target(
                    "portal-fleet",
                    token_url,
                    TOKEN_BODY,
                    self.fleet,
                    fleet=True,
                    concurrency=self.side_concurrency,
                )
            )
        targets.append(
            Target(
                "jwks",
                self.base_url + "/.well-known/jwks.json",
                "",
                [],
                method="GET",
                audited=False,
                concurrency=self.side_concurrency,
            )
        )
        if self.introspector is not None:
            status, body = token_request(Target("portal", token_url, TOKEN_BODY, self.credentials))
            if status != 200:
                raise ServerUnavailable(f"no token to introspect: {status} {body[:200]}")
            access_token = json.loads(body)["access_token"]
            targets.append(
                Target(
                    "introspect",
                    self.base_url + "/oauth/introspect",
                    f"token={access_token}",
                    [self.introspector],
                    audited=False,
                    concurrency=self.side_concurrency,
                )
            )
        return targets


class StockDot(Server):
    """Stock django-oauth-toolkit, one server with a hashed-secret and a plaintext client."""

    name = "stock-dot"

    def __init__(self, *, out_dir: Path, workers: int, database_url: str | None):
        super().__init__(out_dir=out_dir, workers=workers)
        self.venv = out_dir / "stock-venv"
        self.data_dir = out_dir / "stock-dot"
        self.database_url = database_url
        self.clients: dict[str, str] = {}
        self.notes["database"] = redact_url(database_url) if database_url else "sqlite"
        self.notes["workers"] = workers

    def env(self) -> dict[str, str]:
        env = {**os.environ, "STOCK_DOT_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1"}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        if self.database_url:
            env["STOCK_DOT_DATABASE_URL"] = self.database_url
        else:
            env.pop("STOCK_DOT_DATABASE_URL", None)
        return env

    def _install(self) -> None:
        requirements = PEERS / "stock-dot" / "requirements.txt"
        digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
        stamp = self.venv / ".bench-installed"
        if stamp.exists() and stamp.read_text() == digest:
            return
        print(f"installing the stock peer into {self.venv} (once)", flush=True)  # noqa: T201
        _run(
            [sys.executable, "-m", "venv", str(self.venv)],
            env=dict(os.environ),
            cwd=REPO,
            what="venv",
        )
        _run(
            [
                str(self.venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "-r",
                str(requirements),
            ],
            env=dict(os.environ),
            cwd=REPO,
            what="pip install (stock peer)",
        )
        stamp.write_text(digest)

    def prepare(self) -> None:
        self._install()
        if self.database_url and ensure_postgres_database(self.database_url):
            self.notes["database_created"] = True
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = _run(
            [str(self.venv / "bin" / "python"), "setup.py"],
            env=self.env(),
            cwd=PEERS / "stock-dot",
            what="stock-dot setup.py",
        )
        created = _json_from(out)
        if not isinstance(created, list):
            raise ServerUnavailable("stock-dot setup.py printed no client list")
        self.clients = {c["client_id"]: c["client_secret"] for c in created}

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        argv = [
            str(self.venv / "bin" / "gunicorn"),
            "stockdot.wsgi",
            "-w",
            str(self.workers),
            "-b",
            f"127.0.0.1:{self.port}",
        ]
        return argv, self.env(), PEERS / "stock-dot"

    def health_url(self) -> str:
        return self.base_url + "/o/token/"

    def targets(self) -> list[Target]:
        url = self.base_url + "/o/token/"
        body = f"grant_type=client_credentials&scope={SCOPE}"
        return [
            Target("stock-default", url, body, [("bench-hashed", self.clients["bench-hashed"])]),
            Target("stock-plain", url, body, [("bench-plain", self.clients["bench-plain"])]),
        ]


class NodePeer(Server):
    """node-oidc-provider issuing ES256 JWTs, one process, installed under var/bench."""

    name = "node-oidc-provider"

    def __init__(self, *, out_dir: Path, workers: int):
        super().__init__(out_dir=out_dir, workers=1)
        self.app_dir = out_dir / "node-peer"
        self.secret = secrets.token_urlsafe(32)
        self.notes["processes"] = 1

    @staticmethod
    def available() -> bool:
        return shutil.which("node") is not None and shutil.which("npm") is not None

    def prepare(self) -> None:
        source = PEERS / "node-oidc-provider"
        self.app_dir.mkdir(parents=True, exist_ok=True)
        files = ("package.json", "package-lock.json", "server.mjs")
        for name in files:
            shutil.copyfile(source / name, self.app_dir / name)
        digest = hashlib.sha256(b"".join((source / n).read_bytes() for n in files[:2])).hexdigest()
        stamp = self.app_dir / "node_modules" / ".bench-installed"
        if not (stamp.exists() and stamp.read_text() == digest):
            print(f"installing node-oidc-provider into {self.app_dir} (once)", flush=True)  # noqa: T201
            _run(
                [shutil.which("npm") or "npm", "ci", "--no-audit", "--no-fund"],
                env=dict(os.environ),
                cwd=self.app_dir,
                what="npm ci (node peer)",
            )
            stamp.write_text(digest)
        version = _run(["node", "--version"], env=dict(os.environ), cwd=self.app_dir, what="node")
        self.notes["node"] = version.strip()

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        env = {**os.environ, "PORT": str(self.port), "PEER_CLIENT_SECRET": self.secret}
        return [shutil.which("node") or "node", "server.mjs"], env, self.app_dir

    def health_url(self) -> str:
        return self.base_url + "/.well-known/openid-configuration"

    def targets(self) -> list[Target]:
        return [
            Target(
                "node-oidc-provider", self.base_url + "/token", TOKEN_BODY, [("bench", self.secret)]
            )
        ]
