"""`bench.instructions`: callgrind dumps read, the measured batch found, the ratio judged."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import instructions
from bench.instructions import (
    Count,
    batch_count,
    callgrind_argv,
    comparison,
    dump_totals,
    verdict,
)

WARMED = """# callgrind format
version: 1
cmd:  python -m bench.cpu_profile --paths secret --callgrind
part: 1
desc: Trigger: dump warmed-up
events: Ir
summary: 999999999
"""
BATCH = """# callgrind format
version: 1
cmd:  python -m bench.cpu_profile --paths secret --callgrind
part: 2
desc: Trigger: dump secret-1000-requests
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
summary: 2088886798 545289871 308844956 51269746 21008516 5229239 4761947 10090348 2022142
fn=(1) main
"""


def test_a_dump_gives_each_event_its_total():
    totals = dump_totals(BATCH)

    assert totals["Ir"] == 2088886798
    assert totals["D1mr"] == 21008516
    assert totals["D1mw"] == 5229239
    assert len(totals) == 9


@pytest.mark.parametrize(
    "text",
    ["", "events: Ir\n", "summary: 12\n", "events: Ir Dr\nsummary: 12\n"],
    ids=["empty", "no summary", "no events", "columns differ"],
)
def test_what_is_not_a_whole_dump_is_refused(text):
    with pytest.raises(ValueError):
        dump_totals(text)


def test_the_measured_batch_is_read_per_request_not_the_warm_up(tmp_path: Path):
    (tmp_path / "current.callgrind.1").write_text(WARMED)
    (tmp_path / "current.callgrind.2").write_text(BATCH)

    count = batch_count(tmp_path / "current.callgrind", 1000)

    assert count == Count(instructions=2088886.798, d1_misses=26237.755, ll_misses=16874.437)


def test_without_the_cache_simulation_there_are_no_misses(tmp_path: Path):
    (tmp_path / "base.callgrind.2").write_text(
        BATCH.replace("Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw", "Ir").replace(
            "2088886798 545289871 308844956 51269746 21008516 5229239 4761947 10090348 2022142",
            "2101362594",
        )
    )

    assert batch_count(tmp_path / "base.callgrind", 1000) == Count(2101362.594, None)


def test_no_dump_of_the_batch_is_an_error_not_a_count(tmp_path: Path):
    (tmp_path / "current.callgrind.1").write_text(WARMED)

    with pytest.raises(ValueError, match="measured batch"):
        batch_count(tmp_path / "current.callgrind", 1000)


@pytest.mark.parametrize(
    ("current", "meaning"),
    [
        (1_030_000, "more instructions"),
        (1_010_000, "a tie"),
        (990_000, "a tie"),
        (989_000, "fewer instructions"),
    ],
)
def test_the_verdict_calls_a_ratio_within_one_percent_a_tie(current, meaning):
    ratio, said = verdict(Count(current, None), Count(1_000_000, None))

    assert ratio == pytest.approx(current / 1_000_000)
    assert said.startswith(meaning)


def test_the_command_runs_the_secret_path_once_under_callgrind(tmp_path: Path):
    argv = callgrind_argv(
        "/py", "bench.cpu_profile", tmp_path / "x", requests=500, warmup=50, cache_sim=True
    )

    assert argv == [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={tmp_path / 'x'}",
        "--cache-sim=yes",
        "--I1=32768,8,64",
        "--D1=49152,12,64",
        "--LL=1048576,16,64",
        "/py",
        "-m",
        "bench.cpu_profile",
        "--paths",
        "secret",
        "--callgrind",
        "--requests",
        "500",
        "--warmup",
        "50",
    ]
    plain = callgrind_argv("/py", "m", tmp_path / "x", requests=1, warmup=0, cache_sim=False)
    assert not [arg for arg in plain if arg.startswith(("--cache-sim", "--I1", "--D1", "--LL"))]


def test_an_option_in_place_of_a_revision_is_refused_before_git_runs(monkeypatch, capsys):
    monkeypatch.setattr(instructions, "_git", pytest.fail)

    with pytest.raises(SystemExit) as exc:
        instructions.main(["--baseline=--upload-pack=evil"])

    assert exc.value.code == 2
    assert "not a revision name" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option",
    [["--requests", "0"], ["--requests", "-5"], ["--requests", "many"], ["--warmup", "-1"]],
)
def test_a_batch_of_no_requests_or_a_bad_count_is_refused_before_git_runs(
    monkeypatch, capsys, option
):
    monkeypatch.setattr(instructions, "_git", pytest.fail)

    with pytest.raises(SystemExit) as exc:
        instructions.main(["--baseline", "c59074b", *option])

    assert exc.value.code == 2
    assert f"argument {option[0]}" in capsys.readouterr().err


def test_with_the_cache_simulation_the_report_gives_both_sides_misses_and_their_ratio(
    monkeypatch, capsys, tmp_path: Path
):
    current = Count(instructions=2_191_338.0, d1_misses=27_428.0, ll_misses=16_874.4)
    base = Count(instructions=2_259_486.0, d1_misses=25_101.3, ll_misses=13_659.3)

    def measured(**kwargs):
        assert kwargs["cache_sim"] is True
        return comparison(ref="c59074b", requests=1000, current=current, base=base)

    monkeypatch.setattr(instructions, "measure", measured)
    monkeypatch.setattr(instructions.shutil, "which", lambda name: "/usr/bin/valgrind")
    # Whatever REDIS_URL the suite runs with: the baseline's Redis is not reached here.
    monkeypatch.setattr(instructions, "baseline_redis_url", lambda option, environ: None)

    code = instructions.main(
        ["--baseline", "c59074b", "--cache-sim", "--out", str(tmp_path / "out")]
    )

    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        "current         2,191,338 instructions/request, 27,428 L1d misses, "
        "16,874 misses of a 1 MiB last level",
        "@c59074b        2,259,486 instructions/request, 25,101 L1d misses, "
        "13,659 misses of a 1 MiB last level",
        "current/base 0.9698: fewer instructions per request than the baseline",
        "current/base 1.2354: 1 MiB last-level misses",
    ]


def test_without_simulated_misses_there_is_no_miss_ratio():
    result = comparison(
        ref="c59074b", requests=10, current=Count(990.0, None), base=Count(1000.0, None)
    )

    assert result["ratio"] == 0.99
    assert "ll_miss_ratio" not in result
