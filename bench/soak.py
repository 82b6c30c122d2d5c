"""The soak: the whole deployment at a steady rate for a long time, with faults in turn.

`make soak` (SOAK_RATE tokens/s, SOAK_DURATION seconds) starts what a
deployment runs, all owned by this process: two throwaway ``redis-server``
processes on spare ports (the cache, and the Celery broker), the portal's web
server (``manage.py serve``'s argv, through bench.servers.Portal) and one
Celery worker with beat, against PostgreSQL (SOAK_DATABASE_URL). Paced client
threads ask for tokens at the chosen rate, each request with its own
``X-Request-ID``. Meanwhile the faults of the fault tests (tests/faults/) are
injected in turn, each in a window of its own:

- cache: the cache's Redis is killed, and restarted empty after a while;
- database: every connection of the soak's database is terminated;
- broker: the broker's Redis hangs (SIGSTOP), is killed, and comes back;
- worker: the Celery worker is killed (SIGKILL) and started again.

At the end it waits for the sealer to catch up and reports, as a table and
as JSON under var/soak/: tokens issued, 5xx inside and outside the fault
windows (outside must be 0), audit events lost (a 200 whose request id has no
``token.issued`` event; must be 0), whether ``audit_verify`` passes, and the
resident memory of each process at start (after a warm-up) and at the end
(growth must stay within 10%). It exits 1 when any of those fails.

Nothing here is a test: it takes as long as the operator asks.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import http.client
import json
import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench.servers import (
    REPO,
    TOKEN_BODY,
    Portal,
    ServerUnavailable,
    ensure_postgres_database,
    is_postgres,
    redact_url,
    spare_port,
)

MEMORY_GROWTH_LIMIT = 0.10
# What each fault window covers beyond the fault itself: the requests in flight and the
# reconnects that follow (each web thread's first query after a database drop).
WINDOW_GRACE = 5.0


# --- the processes the soak owns ----------------------------------------------


class RedisServer:
    """A throwaway redis-server on a spare port (nothing saved)."""

    def __init__(self, name: str, directory: Path):
        self.name = name
        self.port = spare_port()
        self.directory = directory
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerUnavailable("redis-server is not installed (apt-get install redis-server)")
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--daemonize", "no", "--dir", str(self.directory)]
        with (self.directory / f"{self.name}.log").open("a") as log:
            self.proc = subprocess.Popen(  # noqa: S603 (fixed argv)
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with http_socket(self.port) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise ServerUnavailable(f"redis-server ({self.name}) did not start")

    def signal(self, signum: int) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.signal(signal.SIGCONT)
            self.kill()


def http_socket(port: int):
    import socket

    return socket.create_connection(("127.0.0.1", port), timeout=2)


class Worker:
    """``celery -A identity_portal worker -B``: the deployment's worker with its one beat."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "celery", "-A", "identity_portal", "worker", "-B"]
        argv += ["--concurrency", "1", "--without-gossip", "--without-mingle"]
        argv += ["--loglevel", "INFO"]
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(  # noqa: S603 (fixed argv)
                argv,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL to the whole worker (main process, pool child, beat), as a lost node."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


class SoakPortal(Portal):
    """bench's portal, with the soak's cache, broker and a var folder of its own."""

    def __init__(self, *, extra_env: dict[str, str], **kwargs):
        self.extra_env = extra_env
        super().__init__(**kwargs)

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.extra_env}


# --- memory ---------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """The root and its descendants, the root first."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    tree = [root]
    for pid in tree:
        tree.extend(sorted(child for child, parent in parents.items() if parent == pid))
    return tree


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _label(pid: int, role: str) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return role
    text = " ".join(a.decode(errors="replace") for a in argv if a)
    if role == "worker":
        # Beat and the pool child are forks of the main process: same argv.
        return "worker"
    return "web" if "granian" in text else role


def memory_sample(roots: dict[str, int]) -> dict[str, dict]:
    """pid -> role and RSS for every process of every tree."""
    sample = {}
    for role, root in roots.items():
        for index, pid in enumerate(process_tree(root)):
            rss = rss_kib(pid)
            if rss is not None:
                name = f"{_label(pid, role)}[{'main' if index == 0 else index}]"
                sample[str(pid)] = {"process": name, "rss_kib": rss}
    return sample


# --- the paced client -------------------------------------------------------------


@dataclass
class Tally:
    """What the clients saw. Request ids of the 200s are kept for the audit check."""

    sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    issued_ids: list[str] = field(default_factory=list)
    failures: list[tuple[float, int]] = field(default_factory=list)  # (time, status) of non-200
    latencies: list[float] = field(default_factory=list)  # of the 200s, seconds (sampled)
    late: int = 0  # requests sent more than 1 s after their slot (the client fell behind)


class PacedLoad:
    """Client threads sending one token request per slot, slots 1/rate apart, shared."""

    def __init__(self, *, port: int, credentials, rate: float, threads: int, run_id: str):
        self.port = port
        self.authorizations = [
            "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()
            for cid, secret in credentials
        ]
        self.rate = rate
        self.threads_count = threads
        self.run_id = run_id
        self.tally = Tally()
        self._lock = threading.Lock()
        self._slot = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started_at = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()
        for index in range(self.threads_count):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _next_slot(self) -> tuple[int, float]:
        with self._lock:
            slot = self._slot
            self._slot += 1
        return slot, self.started_at + slot / self.rate

    def _run(self, index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        tally = self.tally
        while not self._stop.is_set():
            slot, due = self._next_slot()
            wait = due - time.monotonic()
            if wait > 0:
                if self._stop.wait(wait):
                    break
            elif wait < -1.0:
                tally.late += 1
            request_id = f"soak-{self.run_id}-{slot}"
            sent = time.monotonic()
            try:
                connection.request(
                    "POST",
                    "/oauth/token",
                    body=TOKEN_BODY.encode(),
                    headers={
                        "Authorization": self.authorizations[slot % len(self.authorizations)],
                        "Content-Type": "application/x-www-form-urlencoded",
                        "X-Request-ID": request_id,
                    },
                )
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                connection.close()
                status = 0
            done = time.monotonic()
            with self._lock:
                tally.sent += 1
                tally.statuses[str(status)] = tally.statuses.get(str(status), 0) + 1
                if status == 200:
                    tally.issued_ids.append(request_id)
                    if slot % 10 == 0:
                        tally.latencies.append(done - sent)
                else:
                    tally.failures.append((done, status))
        connection.close()


# --- faults -------------------------------------------------------------------------


@dataclass
class Window:
    fault: str
    started: float  # monotonic
    ended: float = 0.0
    note: str = ""

    def covers(self, moment: float) -> bool:
        return self.started <= moment <= self.ended + WINDOW_GRACE


def terminate_backends(database_url: str) -> int:
    import dj_database_url

    cfg = dj_database_url.parse(database_url)
    with psycopg.connect(
        host=cfg.get("HOST") or "127.0.0.1",
        port=cfg.get("PORT") or 5432,
        user=cfg.get("USER") or None,
        password=cfg.get("PASSWORD") or None,
        dbname=cfg["NAME"],
        autocommit=True,
    ) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [cfg["NAME"]],
        ).fetchone()
    return int(row[0])


def _sleep_until(moment: float, stop: threading.Event) -> bool:
    """False when the run was cut short."""
    return not stop.wait(max(0.0, moment - time.monotonic()))


def inject_faults(
    *,
    start: float,
    duration: float,
    cache: RedisServer,
    broker: RedisServer,
    worker: Worker,
    database_url: str,
    windows: list[Window],
    stop: threading.Event,
    last_words: dict[str, dict],
) -> None:
    """The faults in turn: each at its fifth of the run, lasting at most a tenth of it."""
    outage = min(60.0, duration / 10)

    def at(fraction: float) -> bool:
        return _sleep_until(start + duration * fraction, stop)

    if not at(0.2):
        return
    window = Window("cache killed", time.monotonic())
    windows.append(window)
    cache.kill()
    stop.wait(outage)
    cache.start()
    window.ended = time.monotonic()
    window.note = f"down {window.ended - window.started:.0f} s, restarted empty"

    if not at(0.4):
        return
    window = Window("database connections terminated", time.monotonic())
    windows.append(window)
    count = terminate_backends(database_url)
    window.ended = time.monotonic()
    window.note = f"{count} connections terminated"

    if not at(0.6):
        return
    window = Window("broker hung then killed", time.monotonic())
    windows.append(window)
    broker.signal(signal.SIGSTOP)
    stop.wait(outage / 2)
    broker.kill()
    stop.wait(outage / 2)
    broker.start()
    window.ended = time.monotonic()
    window.note = f"away {window.ended - window.started:.0f} s, restarted empty"

    if not at(0.8):
        return
    # The killed worker's memory at the end of its life, for its growth.
    last_words.update(memory_sample({"worker": worker.proc.pid}))
    window = Window("worker killed", time.monotonic())
    windows.append(window)
    worker.kill()
    stop.wait(min(10.0, outage))
    worker.start()
    window.ended = time.monotonic()
    window.note = "SIGKILL, restarted"


# --- the audit check ------------------------------------------------------------------


def audit_lost(database_url: str, run_id: str, issued_ids: list[str]) -> dict[str, int]:
    """200s without exactly one token.issued event carrying their request id."""
    import dj_database_url

    cfg = dj_database_url.parse(database_url)
    with psycopg.connect(
        host=cfg.get("HOST") or "127.0.0.1",
        port=cfg.get("PORT") or 5432,
        user=cfg.get("USER") or None,
        password=cfg.get("PASSWORD") or None,
        dbname=cfg["NAME"],
    ) as conn:
        rows = conn.execute(
            "SELECT request_id, count(*) FROM audit_auditevent "
            "WHERE event_type = 'token.issued' AND request_id LIKE %s GROUP BY request_id",
            [f"soak-{run_id}-%"],
        ).fetchall()
    counts = dict(rows)
    lost = sum(1 for rid in issued_ids if counts.get(rid, 0) == 0)
    duplicated = sum(1 for rid in issued_ids if counts.get(rid, 0) > 1)
    unanswered = len(set(counts) - set(issued_ids))
    return {"lost": lost, "duplicated": duplicated, "audited_not_answered": unanswered}


# --- the run ----------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _wait_sealed(portal: Portal, *, timeout: float) -> tuple[bool, str]:
    """Wait for the worker's sealer to catch up (the soak never seals by itself)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        last = portal.manage("shell", "-c", _UNSEALED).strip().splitlines()[-1]
        if last == "0":
            return True, last
        time.sleep(2)
    return False, last


_UNSEALED = "from audit.selectors import audit_unsealed_count; print(audit_unsealed_count())"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=float(os.environ.get("SOAK_RATE", 100)))
    parser.add_argument(
        "--duration", type=float, default=float(os.environ.get("SOAK_DURATION", 600))
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("SOAK_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mip_soak"),
    )
    parser.add_argument("--threads", type=int, default=0, help="client threads (0: from rate)")
    parser.add_argument("--machines", type=int, default=20)
    parser.add_argument("--web-concurrency", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds (0: 5%% of the run)")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "soak")
    args = parser.parse_args(argv)
    if not is_postgres(args.database_url):
        parser.error("the soak runs against PostgreSQL: set SOAK_DATABASE_URL=postgres://...")
    if args.rate <= 0 or args.duration < 60:
        parser.error("SOAK_RATE must be positive and SOAK_DURATION at least 60 seconds")

    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)
    run_dir = args.out / run_id
    run_dir.mkdir(parents=True)
    # The server secrets (and the audit witness) belong with the database: the checkout's
    # var/ as `make run` and `make bench` use it, unless VAR_DIR says otherwise.
    var_dir = Path(os.environ.get("VAR_DIR") or REPO / "var")
    cache, broker = RedisServer("cache", run_dir), RedisServer("broker", run_dir)
    env = {
        "VAR_DIR": str(var_dir),
        "REDIS_URL": cache.url(),
        "CACHE_URL": cache.url(),
        "CELERY_BROKER_URL": broker.url(),
        "DATABASE_URL": args.database_url,
        # A witness of this run's own: one kept in var/ across runs would hold checkpoints of
        # a database since dropped, which audit_verify rightly reports as a rollback.
        "AUDIT_WITNESS": os.environ.get("SOAK_AUDIT_WITNESS")
        or f"file:{run_dir / 'audit-witness.jsonl'}",
        "LOG_LEVEL": "WARNING",
        "ACCESS_LOG": "false",
    }
    portal = SoakPortal(
        extra_env=env,
        out_dir=run_dir,
        workers=args.web_concurrency,
        database_url=args.database_url,
        machines=args.machines,
        run_id=run_id,
    )
    worker = Worker({**portal.env(), "LOG_LEVEL": "INFO"}, run_dir / "worker.log")
    threads = args.threads or max(4, min(32, math.ceil(args.rate / 100)))
    warmup = args.warmup or max(10.0, args.duration * 0.05)
    windows: list[Window] = []
    stop = threading.Event()
    report: dict = {}
    try:
        cache.start()
        broker.start()
        if ensure_postgres_database(args.database_url):
            print(f"created {redact_url(args.database_url)}", flush=True)  # noqa: T201
        portal.prepare()
        worker.start()
        portal.start()
        roots = {"web": portal.proc.pid, "worker": worker.proc.pid}
        load = PacedLoad(
            port=portal.port,
            credentials=portal.credentials,
            rate=args.rate,
            threads=threads,
            run_id=run_id,
        )
        print(  # noqa: T201
            f"soak {run_id}: {args.rate:g} tokens/s for {args.duration:g} s, "
            f"{threads} client threads, web {args.web_concurrency} workers; out: {run_dir}",
            flush=True,
        )
        load.start()
        start = load.started_at
        memory_start: dict[str, dict] = {}
        last_words: dict[str, dict] = {}

        def sample_start() -> None:
            if _sleep_until(start + warmup, stop):
                memory_start.update(memory_sample(roots))

        sampler = threading.Thread(target=sample_start, daemon=True)
        sampler.start()
        injector = threading.Thread(
            target=inject_faults,
            kwargs={
                "start": start,
                "duration": args.duration,
                "cache": cache,
                "broker": broker,
                "worker": worker,
                "database_url": args.database_url,
                "windows": windows,
                "stop": stop,
                "last_words": last_words,
            },
            daemon=True,
        )
        injector.start()
        while time.monotonic() < start + args.duration:
            time.sleep(min(10.0, max(0.0, start + args.duration - time.monotonic())))
            elapsed = time.monotonic() - start
            print(  # noqa: T201
                f"  {elapsed:5.0f} s: {load.tally.sent} sent, {len(load.tally.issued_ids)} "
                f"tokens, {len(load.tally.failures)} not 200",
                flush=True,
            )
        roots["worker"] = worker.proc.pid if worker.proc else roots["worker"]
        # Processes a fault ended are measured just before it.
        memory_end = {**last_words, **memory_sample(roots)}
        load.stop()
        stop.set()
        injector.join(timeout=120)
        elapsed = time.monotonic() - start
        sealed, unsealed = _wait_sealed(portal, timeout=120)
        verify = subprocess.run(
            [sys.executable, "manage.py", "audit_verify"],
            cwd=REPO,
            env=portal.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        report = _report(
            args=args,
            run_id=run_id,
            threads=threads,
            warmup=warmup,
            elapsed=elapsed,
            load=load,
            windows=windows,
            start=start,
            memory_start=memory_start,
            memory_end=memory_end,
            last_words=last_words,
            audit=audit_lost(args.database_url, run_id, load.tally.issued_ids),
            sealed=sealed,
            unsealed=unsealed,
            verify=verify,
        )
    finally:
        stop.set()
        worker.stop()
        portal.stop()
        cache.stop()
        broker.stop()
    out = args.out / f"soak-{run_id}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(report), flush=True)  # noqa: T201
    print(f"\nJSON: {out}", flush=True)  # noqa: T201
    return 0 if report["passed"] else 1


def _report(**kw) -> dict:
    load: PacedLoad = kw["load"]
    tally = load.tally
    windows: list[Window] = kw["windows"]
    start = kw["start"]
    in_window = [(t, s) for t, s in tally.failures if any(w.covers(t) for w in windows)]
    outside = [(t, s) for t, s in tally.failures if not any(w.covers(t) for w in windows)]
    memory = []
    for pid, first in kw["memory_start"].items():
        last = kw["memory_end"].get(pid)
        if last is None:
            memory.append(
                {
                    "pid": int(pid),
                    "process": first["process"] + " (ended by a fault)",
                    "rss_start_kib": first["rss_kib"],
                    "rss_end_kib": None,
                    "growth": None,
                }
            )
            continue
        growth = (last["rss_kib"] - first["rss_kib"]) / first["rss_kib"]
        ended = " (until killed by a fault)" if pid in kw["last_words"] else ""
        memory.append(
            {
                "pid": int(pid),
                "process": first["process"] + ended,
                "rss_start_kib": first["rss_kib"],
                "rss_end_kib": last["rss_kib"],
                "growth": round(growth, 4),
            }
        )
    for pid, last in kw["memory_end"].items():
        if pid not in kw["memory_start"] and pid not in kw["last_words"]:
            memory.append(
                {
                    "pid": int(pid),
                    "process": last["process"] + " (started after a fault)",
                    "rss_start_kib": None,
                    "rss_end_kib": last["rss_kib"],
                    "growth": None,
                }
            )
    growths = [m["growth"] for m in memory if m.get("growth") is not None]
    audit = kw["audit"]
    verify = kw["verify"]
    fives = lambda items: sum(1 for _, s in items if s >= 500)  # noqa: E731
    report = {
        "run_id": kw["run_id"],
        "rate_target": kw["args"].rate,
        "duration_target_s": kw["args"].duration,
        "duration_s": round(kw["elapsed"], 1),
        "client_threads": kw["threads"],
        "web_workers": kw["args"].web_concurrency,
        "sent": tally.sent,
        "tokens_issued": len(tally.issued_ids),
        "rate_achieved": round(tally.sent / kw["elapsed"], 1),
        "late_requests": tally.late,
        "statuses": tally.statuses,
        "latency_ms": {
            "p50": _ms(statistics.median(tally.latencies) if tally.latencies else None),
            "p99": _ms(_percentile(tally.latencies, 0.99)),
            "max": _ms(max(tally.latencies) if tally.latencies else None),
        },
        "fault_windows": [
            {
                "fault": w.fault,
                "at_s": round(w.started - start, 1),
                "lasted_s": round(w.ended - w.started, 1),
                "note": w.note,
                "not_200": sum(1 for t, _ in tally.failures if w.covers(t)),
                "5xx": sum(1 for t, s in tally.failures if w.covers(t) and s >= 500),
            }
            for w in windows
        ],
        "5xx_in_fault_windows": fives(in_window),
        "5xx_outside_fault_windows": fives(outside),
        "not_200_outside_fault_windows": len(outside),
        "audit_events_lost": audit["lost"],
        "audit_events_duplicated": audit["duplicated"],
        "audited_not_answered": audit["audited_not_answered"],
        "sealed_at_end": kw["sealed"],
        "unsealed_at_end": kw["unsealed"],
        "audit_verify_exit": verify.returncode,
        "audit_verify_output": (verify.stdout + verify.stderr).strip()[-600:],
        "memory_warmup_s": kw["warmup"],
        "memory": memory,
        "memory_growth_max": max(growths) if growths else None,
    }
    report["passed"] = (
        report["5xx_outside_fault_windows"] == 0
        and report["not_200_outside_fault_windows"] == 0
        and audit["lost"] == 0
        and audit["duplicated"] == 0
        and kw["sealed"]
        and verify.returncode == 0
        and all(g <= MEMORY_GROWTH_LIMIT for g in growths)
    )
    return report


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _table(report: dict) -> str:
    lines = [
        "",
        f"soak {report['run_id']}: {report['rate_achieved']} of {report['rate_target']:g} "
        f"tokens/s for {report['duration_s']} s ({report['client_threads']} client threads, "
        f"{report['web_workers']} web workers)",
        "",
        "| measure | value |",
        "|---|---|",
        f"| tokens issued | {report['tokens_issued']} of {report['sent']} requests |",
        f"| statuses | {json.dumps(report['statuses'])} |",
        f"| latency p50 / p99 / max (ms) | {report['latency_ms']['p50']} / "
        f"{report['latency_ms']['p99']} / {report['latency_ms']['max']} |",
        f"| 5xx in fault windows | {report['5xx_in_fault_windows']} |",
        f"| 5xx outside fault windows (must be 0) | {report['5xx_outside_fault_windows']} |",
        f"| other non-200 outside fault windows | "
        f"{report['not_200_outside_fault_windows'] - report['5xx_outside_fault_windows']} |",
        f"| audit events lost (must be 0) | {report['audit_events_lost']} |",
        f"| audit events duplicated | {report['audit_events_duplicated']} |",
        f"| audited, not answered 200 | {report['audited_not_answered']} |",
        f"| all sealed at the end | {report['sealed_at_end']} |",
        f"| audit_verify exit | {report['audit_verify_exit']} |",
        "",
        "| fault | at (s) | lasted (s) | not 200 | 5xx | note |",
        "|---|---|---|---|---|---|",
    ]
    for w in report["fault_windows"]:
        lines.append(
            f"| {w['fault']} | {w['at_s']} | {w['lasted_s']} | {w['not_200']} | {w['5xx']} "
            f"| {w['note']} |"
        )
    lines += [
        "",
        f"| process | pid | RSS start (MiB, after {report['memory_warmup_s']:.0f} s) "
        "| RSS end (MiB) | growth |",
        "|---|---|---|---|---|",
    ]
    for m in report["memory"]:
        start = "-" if m["rss_start_kib"] is None else f"{m['rss_start_kib'] / 1024:.1f}"
        end = "-" if m["rss_end_kib"] is None else f"{m['rss_end_kib'] / 1024:.1f}"
        growth = "-" if m["growth"] is None else f"{m['growth'] * 100:+.1f}%"
        lines.append(f"| {m['process']} | {m['pid']} | {start} | {end} | {growth} |")
    lines += ["", "PASSED" if report["passed"] else "FAILED"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
