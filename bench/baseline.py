"""``make bench --baseline REF``: the portal as it was at REF, measured in the same run.

Numbers from two runs on a shared machine cannot be compared (whatever else
runs moves them by more than a refactor does), so "not slower than before"
is only a measurement when both versions are loaded in the same run, one
after the other, point by point. ``BaselinePortal`` checks REF out into a
temporary git worktree (``git worktree add --detach``), gives it a virtualenv
of its own (``python -m venv`` and ``pip install -e .``: REF's own
dependencies, whatever they were), a fresh database of its own migrated by
REF's own ``manage.py migrate``, and serves it with REF's own ``manage.py
serve``, as REF's ``make run`` did (or REF's web server alone with
``--web-only``). ``bench.run`` then alternates the two on the secret path:
base, current, current, base, ... at every concurrency, and reports the
medians and their ratio. The worktree and the database are removed
afterwards, also when the run fails or is interrupted.

REF's code runs with REF's settings: an environment variable the current
portal reads and REF did not is simply ignored there. What must differ is
set here: its database, its Redis (the cache's keys and Celery's queues
would otherwise be shared by two portals running at once: REF's worker
would take the current portal's tasks), its ``VAR_DIR`` (secrets generated
there unless the environment sets them, the filesystem broker, the beat
schedule) and its audit witness (another chain than the current portal's).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import dj_database_url

from bench.load import Target
from bench.servers import (
    AUDIENCE,
    DEPLOYMENT,
    REPO,
    SCOPE,
    TOKEN_BODY,
    WEB_ONLY,
    Portal,
    Sealer,
    Server,
    ServerUnavailable,
    _json_from,
    _run,
    is_postgres,
    redact_url,
)
from clients.constants import MACHINE_CACHE_TOMBSTONE_TTL

BASELINE_PREFIX = "portal@"
# Suffix of the baseline's PostgreSQL database, next to the portal's: ours to drop.
DATABASE_SUFFIX = "_baseline"
# What git accepts as a revision name, without a leading dash (no option injection).
_REF = re.compile(r"[A-Za-z0-9._/^~@{}][A-Za-z0-9._/^~@{}:+-]*")
# Variables of the current process that must not reach REF's processes: they would
# point them at the current tree's code, its Prometheus files, or the current
# portal's cache, broker and migration role.
_DROPPED = (
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "DJANGO_SETTINGS_MODULE",
    "PROMETHEUS_MULTIPROC_DIR",
    "MIGRATION_DATABASE_URL",
    "CACHE_URL",
    "CELERY_BROKER_URL",
    "REDIS_URL",
)
# Run in REF's tree with REF's Python: the web server's argv (and environment) as REF
# builds them, for --web-only. web_server_env came later than web_server_argv.
_WEB_SERVER_SCRIPT = (
    "import json, os\n"
    "from identity_portal import web_server as w\n"
    "env = w.web_server_env(os.environ) if hasattr(w, 'web_server_env') else dict(os.environ)\n"
    "added = {k: v for k, v in env.items() if os.environ.get(k) != v}\n"
    "print(json.dumps({'argv': w.web_server_argv(env), 'env': added}))\n"
)


def baseline_series(ref: str) -> str:
    """The series name of REF's points: ``portal@REF``, REF as the user wrote it."""
    return BASELINE_PREFIX + ref


def is_baseline_series(name: str) -> bool:
    return name.startswith(BASELINE_PREFIX)


def valid_ref(ref: str) -> bool:
    """A revision name git could resolve, never an option (``--upload-pack=...``)."""
    return bool(_REF.fullmatch(ref)) and ".." not in ref


def baseline_database_url(portal_url: str, tree: Path | None) -> str:
    """PostgreSQL: ``<portal's database>_baseline`` on the same server; SQLite: a file
    inside the temporary worktree (removed with it)."""
    if is_postgres(portal_url):
        base, _, name = portal_url.rpartition("/")
        name, _, query = name.partition("?")
        return f"{base}/{name}{DATABASE_SUFFIX}" + (f"?{query}" if query else "")
    if tree is None:
        return "sqlite:///baseline-not-prepared.sqlite3"
    return f"sqlite:///{tree / 'var' / 'portal.sqlite3'}"


def baseline_redis_url(option: str | None, environ: Mapping[str, str]) -> str | None:
    """The Redis database REF's portal uses, or None for its file cache and broker.

    With ``REDIS_URL`` set, the current portal caches and queues there; REF's
    portal, running at the same time, needs another database (same server, so
    the comparison is fair), named by ``--baseline-redis-url`` or
    ``BASELINE_REDIS_URL``. Without ``REDIS_URL`` both use files under their own
    ``VAR_DIR``. Raises ValueError with what to do.
    """
    url = option or environ.get("BASELINE_REDIS_URL") or ""
    current = {environ.get(k) or "" for k in ("REDIS_URL", "CACHE_URL", "CELERY_BROKER_URL")}
    current.discard("")
    if not current:
        if url:
            raise ValueError(
                "--baseline-redis-url is for a run with REDIS_URL; without it both portals "
                "use files under their own VAR_DIR"
            )
        return None
    if not url:
        raise ValueError(
            "--baseline with REDIS_URL needs a Redis database of the baseline's own: "
            "--baseline-redis-url redis://HOST:PORT/N (or BASELINE_REDIS_URL), another "
            "database than REDIS_URL, CACHE_URL and CELERY_BROKER_URL"
        )
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("--baseline-redis-url must be a redis:// URL")
    if url.rstrip("/") in {u.rstrip("/") for u in current}:
        raise ValueError(
            "--baseline-redis-url must name another Redis database than the current "
            "portal's (REDIS_URL, CACHE_URL, CELERY_BROKER_URL): two portals running at "
            "once would share cache keys and Celery queues"
        )
    return url


def baseline_env(
    environ: Mapping[str, str],
    *,
    database_url: str,
    redis_url: str | None,
    port: int,
    workers: int,
    var_dir: Path | None,
) -> dict[str, str]:
    """The environment of REF's processes: the user's, less what belongs to the current
    portal, plus REF's own database, Redis, ``VAR_DIR`` and witness."""
    env = {k: v for k, v in environ.items() if k not in _DROPPED}
    env.update(
        {
            "DATABASE_URL": database_url,
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "WEB_CONCURRENCY": str(workers),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    if var_dir is not None:
        env["VAR_DIR"] = str(var_dir)
        # Its checkpoints chain another trail than the user's or the current portal's.
        env["AUDIT_WITNESS"] = f"file:{var_dir / 'audit-witness.jsonl'}"
    return env


def round_order(rounds: int) -> list[tuple[int, str]]:
    """(round, side) in the order they run: base, current, then current, base, ...

    Alternating who goes first each round keeps a drift of the machine (another
    session starting, a cache warming) from favouring one side.
    """
    order: list[tuple[int, str]] = []
    for number in range(1, rounds + 1):
        pair = ("base", "current") if number % 2 else ("current", "base")
        order += [(number, side) for side in pair]
    return order


def _git(*args: str) -> str:
    return _run(["git", *args], env=dict(os.environ), cwd=REPO, what="git " + args[0])


def ref_checkout(ref: str, tree: Path) -> str:
    """REF checked out at ``tree`` (a detached worktree) with a venv of its own; its Python.

    ``pip install -e .`` in that venv: REF's own dependencies, whatever they were.
    The caller removes the worktree (``git worktree remove --force``), also on failure.
    """
    _git("worktree", "add", "--detach", str(tree), ref)
    _run(
        [sys.executable, "-m", "venv", str(tree / ".venv")],
        env=dict(os.environ),
        cwd=tree,
        what="venv (baseline)",
    )
    python = str(tree / ".venv" / "bin" / "python")
    _run(
        [python, "-m", "pip", "install", "--quiet", "-e", "."],
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        cwd=tree,
        what="pip install -e . (baseline)",
    )
    return python


def drop_postgres_database(url: str) -> None:
    """Drop the baseline's database (only ever a ``..._baseline`` one), its sessions too."""
    import psycopg
    from psycopg import sql

    cfg = dj_database_url.parse(url)
    if not cfg["NAME"].endswith(DATABASE_SUFFIX):
        raise ValueError(f"not a baseline database: {cfg['NAME']}")
    with psycopg.connect(
        host=cfg.get("HOST") or "127.0.0.1",
        port=cfg.get("PORT") or 5432,
        user=cfg.get("USER") or None,
        password=cfg.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(cfg["NAME"]))
        )


def create_postgres_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    cfg = dj_database_url.parse(url)
    with psycopg.connect(
        host=cfg.get("HOST") or "127.0.0.1",
        port=cfg.get("PORT") or 5432,
        user=cfg.get("USER") or None,
        password=cfg.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(cfg["NAME"])))


class BaselinePortal(Portal):
    """The portal at REF, from a temporary worktree with its own venv and database.

    Only the secret path (one machine, client credentials with HTTP Basic): the
    series the refactor must not have slowed down. Started after the current
    portal's own points, beside it, and loaded in turns with it by ``bench.run``.
    """

    def __init__(
        self,
        *,
        ref: str,
        out_dir: Path,
        workers: int,
        portal_database_url: str,
        redis_url: str | None,
        run_id: str,
        mode: str = DEPLOYMENT,
        sealer: bool = False,
    ) -> None:
        self.name = baseline_series(ref)
        Server.__init__(self, out_dir=out_dir, workers=workers)
        self.log_path = out_dir / "portal-baseline.log"
        self.ref = ref
        self.redis_url = redis_url
        self.portal_database_url = portal_database_url
        self.tmp_dir: Path | None = None
        self.tree: Path | None = None
        self.python = ""
        self.commit = ""
        self.database_url = baseline_database_url(portal_database_url, None)
        self.machine_count = 1
        self.run_id = run_id
        self.mode = mode
        self.fleet_count = 0
        self.side_concurrency = ()
        self.credentials: list[tuple[str, str]] = []
        self.assertions = None
        self.federated = None
        self.fleet = []
        self.introspector = None
        self._children: list[int] = []
        self.want_sealer = sealer and mode == WEB_ONLY
        self.sealer: Sealer | None = None
        self.seal_interval = float(os.environ.get("AUDIT_SEAL_INTERVAL") or 10)
        self.web: dict | None = None
        self.notes.update(ref=ref, mode=mode, workers=workers)
        if redis_url:
            self.notes["redis"] = redis_url.rsplit("@", 1)[-1]

    # --- what Portal's methods use --------------------------------------------

    def env(self) -> dict[str, str]:
        return baseline_env(
            os.environ,
            database_url=self.database_url,
            redis_url=self.redis_url,
            port=self.port,
            workers=self.workers,
            var_dir=self.tree / "var" if self.tree else None,
        )

    def manage(self, *args: str) -> str:
        if self.tree is None:
            raise ServerUnavailable(f"{self.name}: not prepared")
        return _run(
            [self.python, "manage.py", *args],
            env=self.env(),
            cwd=self.tree,
            what=f"{self.name}: manage.py " + " ".join(args[:2]),
        )

    # --- life cycle ------------------------------------------------------------

    def prepare(self) -> None:
        """Worktree, venv, fresh database, migrate, first_run, one machine with a secret."""
        if not valid_ref(self.ref):
            raise ServerUnavailable(f"not a revision name: {self.ref!r}")
        self.commit = _git("rev-parse", "--verify", "--end-of-options", self.ref + "^{commit}")
        self.commit = self.commit.strip()
        self.notes["commit"] = self.commit
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="mip-bench-baseline-"))
        tree = self.tmp_dir / "tree"
        self.tree = tree  # set before `git worktree add`, so cleanup() removes a half-made one
        print(f"{self.name}: installing {self.commit[:12]} into {tree / '.venv'}", flush=True)  # noqa: T201
        self.python = ref_checkout(self.commit, tree)
        self.database_url = baseline_database_url(self.portal_database_url, tree)
        self.notes["database"] = redact_url(self.database_url)
        if is_postgres(self.database_url):
            import psycopg

            # Fresh: a database left by an interrupted run is dropped first.
            try:
                drop_postgres_database(self.database_url)
                create_postgres_database(self.database_url)
            except psycopg.Error as exc:
                raise ServerUnavailable(
                    f"{self.name}: creating {redact_url(self.database_url)}: {exc}"
                ) from exc
        self.manage("migrate", "--no-input")
        self.manage("first_run")
        self.manage("scope", "create", SCOPE, "--description", "Benchmark scope")
        self.manage("audience", "create", AUDIENCE)
        created = _json_from(
            self.manage(
                "machine",
                "create",
                "--name",
                f"bench-{self.run_id}-baseline",
                "--scope",
                SCOPE,
                "--audience",
                AUDIENCE,
            )
        )
        if not isinstance(created, dict) or not {"client_id", "client_secret"} <= set(created):
            raise ServerUnavailable(f"{self.name}: `machine create` printed no client_id/secret")
        self.credentials = [(str(created["client_id"]), str(created["client_secret"]))]
        if self.mode == WEB_ONLY:
            self.web = _json_from(
                _run(
                    [self.python, "-c", _WEB_SERVER_SCRIPT],
                    env=self.env(),
                    cwd=tree,
                    what=f"{self.name}: web server command",
                )
            )
            argv = self.web["argv"]
            self.notes["threads per worker"] = int(argv[argv.index("--blocking-threads") + 1])
        if self.want_sealer:
            if not (tree / "bench" / "sealer.py").is_file():
                raise ServerUnavailable(f"{self.name}: {self.ref} has no bench/sealer.py")
            self.sealer = Sealer(
                out_dir=self.out_dir,
                env=self.env(),
                python=self.python,
                cwd=tree,
                log_name="sealer-baseline.log",
            )
        # Registration leaves a tombstone in the machine cache (10 s at REF as now):
        # start() waits it out, as it does for the current portal.
        self.settled_at = time.monotonic() + MACHINE_CACHE_TOMBSTONE_TTL + 1

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        if self.tree is None:
            raise ServerUnavailable(f"{self.name}: not prepared")
        if self.mode == DEPLOYMENT:
            # REF's `make run` ended with this: granian and a Celery worker with beat.
            return [self.python, "manage.py", "serve"], self.env(), self.tree
        assert self.web is not None  # noqa: S101 (prepare() built it)
        return list(self.web["argv"]), {**self.env(), **self.web["env"]}, self.tree

    def targets(self) -> list[Target]:
        return [Target(self.name, self.base_url + "/oauth/token", TOKEN_BODY, self.credentials)]

    def cleanup(self) -> list[str]:
        """Stop, drop the database, remove the worktree; what could not be done, as text.

        Never raises: it runs in a ``finally`` after whatever went wrong.
        """
        problems: list[str] = []
        try:
            self.stop()
        except (OSError, subprocess.SubprocessError) as exc:
            problems.append(f"stopping: {exc}")
        if is_postgres(self.database_url) and self.tree is not None:
            try:
                drop_postgres_database(self.database_url)
            except Exception as exc:  # noqa: BLE001 (reported; the worktree must go too)
                problems.append(f"dropping {redact_url(self.database_url)}: {exc}")
        if self.tree is not None:
            # Half-made, or git refused: the folder is deleted below, and git forgets it.
            with contextlib.suppress(ServerUnavailable):
                _git("worktree", "remove", "--force", str(self.tree))
            if self.tmp_dir is not None:
                shutil.rmtree(self.tmp_dir, ignore_errors=True)
            if self.tree.exists():
                problems.append(f"{self.tree} could not be removed")
            try:
                _git("worktree", "prune")
            except ServerUnavailable as exc:
                problems.append(f"git worktree prune: {exc}")
            self.tree = None
        return problems
