"""`make bench --baseline REF`: options, REF's environment, the order of the rounds,
the before/after medians and verdicts, and the temporary worktree's removal."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import baseline as baseline_module
from bench import report
from bench.baseline import (
    BaselinePortal,
    baseline_database_url,
    baseline_env,
    baseline_redis_url,
    drop_postgres_database,
    round_order,
    valid_ref,
)
from bench.run import parse_args, short_name
from bench.servers import REPO, ServerUnavailable

REDIS_ENV = ("REDIS_URL", "CACHE_URL", "CELERY_BROKER_URL", "BASELINE_REDIS_URL")


@pytest.fixture
def no_redis(monkeypatch):
    for name in REDIS_ENV:
        monkeypatch.delenv(name, raising=False)


def test_baseline_options_without_redis(no_redis):
    args = parse_args(["--only", "portal", "--concurrency", "16", "--baseline", "c59074b"])

    assert (args.baseline, args.baseline_rounds, args.baseline_redis_url_resolved) == (
        "c59074b",
        3,
        None,
    )


def test_with_redis_the_baseline_needs_a_redis_database_of_its_own(no_redis, monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/5")

    with pytest.raises(SystemExit):
        parse_args(["--only", "portal", "--baseline", "c59074b"])

    assert "--baseline-redis-url redis://HOST:PORT/N" in capsys.readouterr().err


def test_the_baseline_redis_database_is_taken_from_the_option_or_the_environment(
    no_redis, monkeypatch
):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/5")
    option = parse_args(
        ["--baseline", "c59074b", "--baseline-redis-url", "redis://127.0.0.1:6379/6"]
    )
    monkeypatch.setenv("BASELINE_REDIS_URL", "redis://127.0.0.1:6379/7")
    environment = parse_args(["--baseline", "c59074b"])

    assert option.baseline_redis_url_resolved == "redis://127.0.0.1:6379/6"
    assert environment.baseline_redis_url_resolved == "redis://127.0.0.1:6379/7"


@pytest.mark.parametrize(
    ("option", "env"),
    [
        ("redis://127.0.0.1:6379/5", {"REDIS_URL": "redis://127.0.0.1:6379/5"}),
        (
            "redis://127.0.0.1:6379/6",
            {
                "REDIS_URL": "redis://127.0.0.1:6379/5",
                "CELERY_BROKER_URL": "redis://127.0.0.1:6379/6",
            },
        ),
        ("redis://127.0.0.1:6379/6", {"CACHE_URL": "redis://127.0.0.1:6379/6/"}),
    ],
)
def test_the_baseline_never_shares_the_current_portals_redis_database(option, env):
    with pytest.raises(ValueError, match="another Redis database"):
        baseline_redis_url(option, env)


def test_a_baseline_redis_url_is_refused_without_redis_or_without_baseline(no_redis, capsys):
    with pytest.raises(ValueError, match="for a run with REDIS_URL"):
        baseline_redis_url("redis://127.0.0.1:6379/6", {})
    with pytest.raises(ValueError, match="redis:// URL"):
        baseline_redis_url("http://127.0.0.1:6379/6", {"REDIS_URL": "redis://127.0.0.1:6379/5"})
    with pytest.raises(SystemExit):
        parse_args(["--baseline-redis-url", "redis://127.0.0.1:6379/6"])

    assert "goes with --baseline" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--baseline", "--upload-pack=touch /tmp/x"], "not a git revision name"),
        (["--baseline", "main..HEAD"], "not a git revision name"),
        (["--only", "node", "--baseline", "c59074b"], "--only must include portal"),
        (["--baseline", "c59074b", "--baseline-rounds", "0"], "at least 1"),
        (["--series", "portal,keycloak"], "unknown series ['keycloak']"),
    ],
)
def test_bad_baseline_options_are_refused(no_redis, capsys, argv, message):
    with pytest.raises(SystemExit):
        parse_args(argv)

    assert message in capsys.readouterr().err


def test_revision_names_git_accepts_and_options_it_would_take():
    assert [valid_ref(r) for r in ("c59074b", "main~3", "origin/main", "v1.2^{commit}")] == [
        True
    ] * 4
    assert [valid_ref(r) for r in ("", "-x", "--end-of-options", "a..b", "a b")] == [False] * 5


def test_series_without_the_fleet_registers_no_fleet(no_redis):
    args = parse_args(["--series", "portal,portal-private-key-jwt,portal-federated"])

    assert (args.series, args.fleet) == (
        ["portal", "portal-private-key-jwt", "portal-federated"],
        0,
    )
    assert parse_args(["--series", "portal-fleet"]).fleet == 100_000


def test_baseline_rounds_alternate_who_goes_first():
    assert round_order(3) == [
        (1, "base"),
        (1, "current"),
        (2, "current"),
        (2, "base"),
        (3, "base"),
        (3, "current"),
    ]


def test_baseline_request_ids_have_their_own_tag():
    assert short_name("portal@c59074b") == "base"
    assert short_name("portal") == "portal"


def test_the_baseline_database_is_next_to_the_portals_or_inside_the_worktree(tmp_path):
    assert (
        baseline_database_url("postgres://bench:pw@db:5433/mip_bench?sslmode=disable", tmp_path)
        == "postgres://bench:pw@db:5433/mip_bench_baseline?sslmode=disable"
    )
    assert (
        baseline_database_url("sqlite:///var/bench/portal.sqlite3", tmp_path)
        == f"sqlite:///{tmp_path / 'var' / 'portal.sqlite3'}"
    )


def test_only_a_baseline_database_is_ever_dropped():
    with pytest.raises(ValueError, match="not a baseline database: mip_bench"):
        drop_postgres_database("postgres://postgres@127.0.0.1:5432/mip_bench")


def test_refs_environment_is_the_users_less_what_belongs_to_the_current_portal(tmp_path):
    user = {
        "PATH": "/usr/bin",
        "SECRET_KEY": "k" * 50,
        "AUDIT_SEAL_INTERVAL": "5",
        "PYTHONPATH": "/work/current",
        "VIRTUAL_ENV": "/work/current/.venv",
        "DJANGO_SETTINGS_MODULE": "identity_portal.settings",
        "PROMETHEUS_MULTIPROC_DIR": "/work/current/var/prometheus",
        "MIGRATION_DATABASE_URL": "postgres://owner@127.0.0.1/mip_bench",
        "DATABASE_URL": "postgres://postgres@127.0.0.1/mip_bench",
        "REDIS_URL": "redis://127.0.0.1:6379/5",
        "CACHE_URL": "redis://127.0.0.1:6379/5",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/6",
        "AUDIT_WITNESS": "file:/work/current/var/bench/audit-witness.jsonl",
    }

    env = baseline_env(
        user,
        database_url="postgres://postgres@127.0.0.1/mip_bench_baseline",
        redis_url="redis://127.0.0.1:6379/7",
        port=18301,
        workers=2,
        var_dir=tmp_path / "var",
    )

    assert env == {
        "PATH": "/usr/bin",
        "SECRET_KEY": "k" * 50,
        "AUDIT_SEAL_INTERVAL": "5",
        "DATABASE_URL": "postgres://postgres@127.0.0.1/mip_bench_baseline",
        "REDIS_URL": "redis://127.0.0.1:6379/7",
        "PORT": "18301",
        "HOST": "127.0.0.1",
        "WEB_CONCURRENCY": "2",
        "PYTHONUNBUFFERED": "1",
        "VAR_DIR": str(tmp_path / "var"),
        "AUDIT_WITNESS": f"file:{tmp_path / 'var' / 'audit-witness.jsonl'}",
    }


def test_without_redis_ref_uses_files_under_its_own_var_dir(tmp_path):
    env = baseline_env(
        {"REDIS_URL": ""},
        database_url="sqlite:///x.sqlite3",
        redis_url=None,
        port=1,
        workers=1,
        var_dir=tmp_path,
    )

    assert "REDIS_URL" not in env
    assert env["VAR_DIR"] == str(tmp_path)


def _worktrees() -> str:
    return subprocess.run(
        ["git", "worktree", "list", "--porcelain"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_a_failed_preparation_leaves_no_worktree_behind(tmp_path, monkeypatch, no_redis):
    # The real `git worktree add`; the venv step fails, as a broken REF would.
    real_run = baseline_module._run
    made: list[Path] = []

    def run(argv, **kwargs):
        if argv[:2] == ["git", "worktree"] and argv[2] == "add":
            made.append(Path(argv[-2]))
        if "venv" in argv:
            raise ServerUnavailable("venv (baseline) failed (exit 1): no space left")
        return real_run(argv, **kwargs)

    monkeypatch.setattr(baseline_module, "_run", run)
    portal = BaselinePortal(
        ref="HEAD",
        out_dir=tmp_path,
        workers=1,
        portal_database_url=f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        redis_url=None,
        run_id="btest",
    )

    with pytest.raises(ServerUnavailable, match="no space left"):
        portal.prepare()
    assert (made[0] / "manage.py").is_file()
    assert str(made[0]) in _worktrees()

    assert portal.cleanup() == []
    assert not made[0].exists()
    assert not made[0].parent.exists()
    assert str(made[0]) not in _worktrees()
    assert portal.cleanup() == []  # twice is harmless (a finally after a failed cleanup)


def _round(series, number, tps, p99, cpu, audit_ok=True):
    return {
        "series": series,
        "concurrency": 16,
        "round": number,
        "tokens_per_s": tps,
        "latency_ms": {"p50": p99 / 4, "p99": p99},
        "cpu_ms_per_token": cpu,
        "db_cpu_ms_per_token": 0.3,
        "non_2xx": 0,
        "audit": {
            "lost": 0 if audit_ok else 2,
            "extra": 1,
            "duplicates": 0,
            "allowed_extra": 16,
            "ok": audit_ok,
        },
    }


BASE = "portal@c59074b"
ROUNDS = [
    _round(BASE, 1, 1000.0, 20.0, 1.2),
    _round("portal", 1, 1100.0, 18.0, 1.1),
    _round("portal", 2, 990.0, 22.0, 1.3),
    _round(BASE, 2, 900.0, 24.0, 1.4),
    _round(BASE, 3, 1050.0, 21.0, 1.0),
    _round("portal", 3, 1060.0, 19.0, 1.2),
]


def _result(rounds=ROUNDS, status="ok", ratios=None):
    result = {
        "run_id": "b1",
        "started_at": "2026-12-01T07:00:00+00:00",
        "portal_commit": "c3a71de",
        "host": {"cores": 2, "wrk": "wrk 4.1.0"},
        "settings": {"duration_s": 10.0, "warmup_s": 2.0, "timeout_s": 10.0, "machines": 1},
        "servers": {"portal": {"status": "ok", "database": "postgres://x/mip_bench"}},
        "points": [],
        "ratios": ratios or {},
        "targets": [],
        "baseline": {
            "ref": "c59074b",
            "series": BASE,
            "commit": "c59074be644f749f2a9462e6759b37a44b5ca74a",
            "rounds": 3,
            "status": status,
            "points": rounds,
        },
    }
    if status != "ok":
        result["baseline"]["reason"] = "pip install -e . (baseline) failed (exit 1)"
    result["baseline"]["summary"] = report.before_after(rounds, base_series=BASE)
    result["issue11_targets"] = report.issue11_targets(result)
    result["conditions"] = report.conditions(result)
    return result


def test_before_after_takes_each_sides_median_and_their_ratio():
    row = report.before_after(ROUNDS, base_series=BASE)["16"]

    assert row["base"] == {
        "rounds": 3,
        "tokens_per_s": 1000.0,
        "tokens_per_s_rounds": [1000.0, 900.0, 1050.0],
        "p50_ms": 5.25,
        "p99_ms": 21.0,
        "cpu_ms_per_token": 1.2,
        "db_cpu_ms_per_token": 0.3,
        "non_2xx": 0,
        "audit_lost": 0,
        "audit_ok": True,
    }
    assert row["current"]["tokens_per_s"] == 1060.0
    assert row["current"]["tokens_per_s_rounds"] == [1100.0, 990.0, 1060.0]
    assert row["ratio"] == 1.06


def test_a_side_without_rounds_has_no_ratio():
    row = report.before_after(ROUNDS[:1], base_series=BASE)["16"]

    assert (row["current"], row["ratio"]) == (None, None)


def test_issue11_verdicts_from_the_before_after_and_the_credential_ratios():
    result = _result(
        ratios={"16": {"private_key_jwt/secret": 0.82, "federated/secret": 0.65}},
    )

    assert result["issue11_targets"] == [
        {
            "target": "secret path at c16 not slower than portal@c59074b "
            "(medians of interleaved rounds)",
            "verdict": "PASS",
            "detail": "1.060 x (1,060 against 1,000 tokens/s; rounds 990-1,100 against "
            "900-1,050; the rounds overlap: within this run's noise)",
        },
        {
            "target": "audit: one token.issued per token received in every before/after round",
            "verdict": "PASS",
            "detail": "lost 0, duplicates 0 in 6 rounds",
        },
        {
            "target": "private_key_jwt >= 0.7 x the secret path's rate at c16",
            "verdict": "PASS",
            "detail": "0.82 x",
        },
        {
            "target": "federated >= 0.7 x the secret path's rate at c16",
            "verdict": "FAIL",
            "detail": "0.65 x",
        },
    ]


def test_slower_than_the_baseline_fails_and_a_lost_token_fails_the_audit():
    rounds = [
        _round(BASE, 1, 1000.0, 20.0, 1.0),
        _round("portal", 1, 800.0, 30.0, 1.3, audit_ok=False),
    ]

    verdicts = _result(rounds)["issue11_targets"]

    assert [v["verdict"] for v in verdicts] == ["FAIL", "FAIL", "SKIP", "SKIP"]
    assert verdicts[0]["detail"] == (
        "0.800 x (800 against 1,000 tokens/s; rounds 800-800 against 1,000-1,000)"
    )
    assert verdicts[1]["detail"] == "lost 2, duplicates 0 in 2 rounds"


def test_without_baseline_or_when_it_failed_the_comparison_is_skipped_and_said():
    failed = _result(rounds=[], status="failed")
    without = {**failed, "baseline": None}

    assert failed["issue11_targets"][0]["verdict"] == "SKIP"
    assert failed["issue11_targets"][0]["detail"] == (
        "portal@c59074b not run: pip install -e . (baseline) failed (exit 1)"
    )
    assert failed["conditions"] == [
        "portal@c59074b was not measured: pip install -e . (baseline) failed (exit 1)"
    ]
    assert report.issue11_targets(without)[0] == {
        "target": "secret path at c16 not slower than portal@REF (medians of interleaved rounds)",
        "verdict": "SKIP",
        "detail": "no --baseline in this run",
    }


def test_markdown_shows_the_baseline_row_the_current_row_and_the_ratio():
    text = report.markdown(_result())

    assert (
        "| portal@c59074b | 16 | 1,000.0 | 5.25 | 21.00 | 1.20 | 0.30 | 0 | 0 "
        "| 1,000.0, 900.0, 1,050.0 |"
    ) in text
    assert (
        "| portal | 16 | 1,060.0 | 4.75 | 19.00 | 1.20 | 0.30 | 0 | 0 | 1,100.0, 990.0, 1,060.0 |"
    ) in text
    assert "| **current/base** | 16 | **1.060** | 0.905 | 0.905 | 1.000 | 1.000 | | | |" in text
    assert "commit c59074be644f) and of the current portal (c3a71de), 3 rounds each" in text
    assert "Targets (issue 11, at c16, same run):" in text


# --- --baseline-together: both portals loaded at once, judged round by round ---------

TOGETHER = [
    {**_round(BASE, 1, 500.0, 30.0, 1.2), "together": True},
    {**_round("portal", 1, 520.0, 29.0, 1.1), "together": True},
    {**_round(BASE, 2, 400.0, 40.0, 1.4), "together": True},
    {**_round("portal", 2, 396.0, 41.0, 1.4), "together": True},
    {**_round(BASE, 3, 450.0, 35.0, 1.3), "together": True},
    {**_round("portal", 3, 468.0, 34.0, 1.2), "together": True},
]


def _together_result(rounds=TOGETHER):
    result = _result(rounds)
    result["baseline"]["together"] = True
    result["issue11_targets"] = report.issue11_targets(result)
    return result


def test_baseline_together_goes_with_baseline(no_redis, capsys):
    args = parse_args(["--only", "portal", "--baseline", "c59074b", "--baseline-together"])

    assert args.baseline_together is True
    assert parse_args(["--only", "portal", "--baseline", "c59074b"]).baseline_together is False
    with pytest.raises(SystemExit):
        parse_args(["--only", "portal", "--baseline-together"])
    assert "--baseline-together goes with --baseline" in capsys.readouterr().err


def test_rounds_measured_together_are_compared_pair_by_pair():
    row = report.before_after(TOGETHER, base_series=BASE)["16"]

    # The medians of each side (468 / 450) and the median of the rounds' own ratios.
    assert row["ratio"] == 1.04
    assert row["paired_ratios"] == [1.04, 0.99, 1.04]
    assert row["paired_ratio"] == 1.04


def test_interleaved_rounds_have_no_paired_ratio():
    row = report.before_after(ROUNDS, base_series=BASE)["16"]

    assert "paired_ratio" not in row and "paired_ratios" not in row


def test_together_the_verdict_is_the_median_of_the_rounds_ratios():
    verdict = _together_result()["issue11_targets"][0]

    assert verdict == {
        "target": "secret path at c16 not slower than portal@c59074b "
        "(median of the rounds' ratios, both loaded at once)",
        "verdict": "PASS",
        "detail": "1.040 x (rounds 1.040, 0.990, 1.040; the rounds fall on both sides of 1.0)",
    }


def test_together_a_pair_slower_in_every_round_fails_without_a_noise_remark():
    rounds = [
        {**_round(BASE, 1, 500.0, 30.0, 1.2), "together": True},
        {**_round("portal", 1, 480.0, 31.0, 1.3), "together": True},
        {**_round(BASE, 2, 400.0, 40.0, 1.4), "together": True},
        {**_round("portal", 2, 392.0, 41.0, 1.4), "together": True},
    ]

    verdict = _together_result(rounds)["issue11_targets"][0]

    assert (verdict["verdict"], verdict["detail"]) == ("FAIL", "0.970 x (rounds 0.960, 0.980)")


def test_together_without_a_complete_pair_is_skipped():
    # Round 1 lost its current side, round 2 its base side: no pair to compare.
    rounds = [TOGETHER[0], TOGETHER[3]]

    verdict = _together_result(rounds)["issue11_targets"][0]

    assert (verdict["verdict"], verdict["detail"]) == (
        "SKIP",
        "no round at c16 measured both portals at once",
    )


def test_markdown_says_the_rounds_ran_together_and_shows_each_rounds_ratio():
    text = report.markdown(_together_result())

    assert "3 rounds each, both loaded at once in each round; medians:" in text
    assert (
        "| **current/base, round by round** | 16 | **1.040** | | | | | | | 1.040, 0.990, 1.040 |"
    ) in text


def _pair_sides():
    """(server, target, audit_url) of each side, as measure_before_after hands them over."""
    return {
        "base": (None, SimpleNamespace(name=BASE), None),
        "current": (None, SimpleNamespace(name="portal"), None),
    }


def test_a_side_that_fails_before_its_point_keeps_the_other_from_measuring_alone(monkeypatch):
    from bench import run
    from bench.load import LoadFailed

    measured = []

    def measure_target(*, target, together, **_kwargs):
        # As measure_target does: the base side fails before its barrier (its sealer
        # never caught up), the current side waits at the barrier for its pair.
        if target.name == BASE:
            raise LoadFailed("the sealer did not catch up before the point")
        try:
            together.wait()
        except threading.BrokenBarrierError as exc:
            raise LoadFailed("the other side of the pair did not reach its point") from exc
        measured.append(target.name)

    monkeypatch.setattr(run, "measure_target", measure_target)
    sides = _pair_sides()
    record = {"points": []}

    run._measure_pair(sides, args=None, run_id="b1", record=record, c=16, number=2)

    assert measured == []
    assert sorted(record["errors"]) == [
        "portal c16 r2: the other side of the pair did not reach its point",
        "portal@c59074b c16 r2: the sealer did not catch up before the point",
    ]


def test_an_unexpected_error_on_one_side_is_raised_by_the_pair(monkeypatch):
    from bench import run
    from bench.load import LoadFailed

    def measure_target(*, target, together, **_kwargs):
        if target.name == BASE:
            raise KeyError("points")
        try:
            together.wait()
        except threading.BrokenBarrierError as exc:
            raise LoadFailed("the other side of the pair did not reach its point") from exc

    monkeypatch.setattr(run, "measure_target", measure_target)
    sides = _pair_sides()

    with pytest.raises(KeyError, match="points"):
        run._measure_pair(sides, args=None, run_id="b1", record={"points": []}, c=16, number=1)
