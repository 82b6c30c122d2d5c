"""The orchestrator's plumbing: options, databases, process CPU, command output."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.run import main, parse_args, stock_database_url
from bench.servers import (
    ServerUnavailable,
    _json_from,
    cpu_delta,
    redact_url,
    tree_cpu_seconds,
)


def test_defaults_cover_the_four_concurrencies_and_every_server():
    args = parse_args([])

    assert (args.only, args.concurrency, args.duration, args.warmup) == (
        ["portal", "stock", "node"],
        [1, 4, 16, 64],
        10.0,
        2.0,
    )


def test_quick_run_options():
    args = parse_args(["--only", "portal", "--concurrency", "16", "--duration", "3"])

    assert (args.only, args.concurrency, args.duration) == (["portal"], [16], 3.0)


def test_unknown_server_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--only", "keycloak"])

    assert "unknown server" in capsys.readouterr().err


def test_stock_peer_gets_its_own_database_next_to_the_portals(monkeypatch):
    monkeypatch.delenv("STOCK_DOT_DATABASE_URL", raising=False)

    assert (
        stock_database_url("postgres://postgres@127.0.0.1:5432/mip_bench")
        == "postgres://postgres@127.0.0.1:5432/mip_bench_stockdot"
    )
    assert stock_database_url("sqlite:///var/bench/portal.sqlite3") is None


def test_database_urls_are_shown_without_password():
    assert redact_url("postgres://bench:hunter2@db:5433/mip") == "postgres://bench@db:5433/mip"


def test_cpu_time_counts_the_live_descendants_of_a_process_tree():
    # sh -> python: the child burns CPU, says so, then waits on stdin while we read /proc.
    child = f"{sys.executable} -c 'sum(range(3_000_000)); print(1, flush=True); input()'"
    proc = subprocess.Popen(
        ["sh", "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline() == "1\n"

        assert tree_cpu_seconds(proc.pid) >= 0.02
    finally:
        proc.communicate("\n", timeout=10)


def test_json_is_found_among_lines_of_prose():
    out = 'Machine created.\n{"client_id": "abc", "client_secret": "s3"}\nShown once.\n'

    assert _json_from(out) == {"client_id": "abc", "client_secret": "s3"}


def test_no_json_is_an_unavailable_server():
    with pytest.raises(ServerUnavailable, match="no JSON"):
        _json_from("Unknown command: 'machine'")


def test_without_wrk_the_user_is_told_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("bench.load.shutil.which", lambda name: None)

    code = main(["--out", str(tmp_path)])

    assert code == 2
    assert "apt-get install -y wrk" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_database_cpu_delta_counts_new_backends_and_ignores_unknown():
    before = {10: 1.0, 11: 2.0}
    after = {10: 1.5, 11: 2.0, 12: 0.25}

    assert cpu_delta(before, after) == 0.75
    assert cpu_delta(None, after) is None
