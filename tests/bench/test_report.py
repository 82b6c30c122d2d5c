"""The benchmark report: ratios, the targets of issue 6, the table and the chart."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from bench import report


def make_point(series, c, tps, p99, audit=None):
    return {
        "series": series,
        "concurrency": c,
        "tokens_per_s": tps,
        "latency_ms": {"p50": p99 / 2, "p90": p99 * 0.8, "p99": p99},
        "non_2xx": 0,
        "non_2xx_statuses": {},
        "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0},
        "cpu_ms_per_token": 1.0,
        "audit": audit,
    }


AUDIT_OK = {"lost": 0, "extra": 3, "duplicates": 0, "allowed_extra": 16, "ok": True}


def make_result(points, cores=2, database="postgres://postgres@127.0.0.1:5432/mip_bench"):
    result = {
        "run_id": "b1",
        "started_at": "2026-11-27T21:00:00+00:00",
        "host": {"cores": cores, "wrk": "wrk 4.1.0"},
        "settings": {"duration_s": 10.0, "warmup_s": 2.0, "timeout_s": 10.0, "machines": 4},
        "servers": {"portal": {"status": "ok", "database": database}},
        "points": points,
    }
    result["ratios"] = report.ratios(points)
    result["targets"] = report.targets(result)
    result["conditions"] = report.conditions(result)
    return result


def test_every_target_passes_when_the_portal_meets_them():
    result = make_result(
        [
            make_point("portal", 16, 1200.0, 20.0, AUDIT_OK),
            make_point("node-oidc-provider", 16, 3800.0, 15.0),
            make_point("stock-default", 16, 6.0, 3000.0),
        ]
    )

    assert [t["verdict"] for t in result["targets"]] == ["PASS"] * 5
    assert result["ratios"]["16"] == {
        "portal/node": 1200 / 3800,
        "portal/stock-default": 200.0,
        "private_key_jwt/secret": None,
        "federated/secret": None,
    }
    assert result["conditions"] == []


def test_targets_fail_and_skip_separately():
    result = make_result(
        [
            make_point("portal", 16, 900.0, 30.0, {**AUDIT_OK, "lost": 1, "ok": False}),
            make_point("stock-default", 16, 10.0, 3000.0),
        ],
        database="sqlite:////tmp/x.sqlite3",
    )

    assert [t["verdict"] for t in result["targets"]] == ["FAIL", "SKIP", "FAIL", "FAIL", "FAIL"]
    assert result["conditions"] == ["the targets assume PostgreSQL; the portal ran on SQLite"]


def test_everything_skips_without_a_portal_point():
    result = make_result([make_point("node-oidc-provider", 16, 3800.0, 15.0)])

    assert {t["verdict"] for t in result["targets"]} == {"SKIP"}


def test_markdown_has_one_row_per_point_and_the_verdicts():
    result = make_result(
        [
            make_point("portal", 16, 1200.0, 20.0, AUDIT_OK),
            make_point("portal", 1, 300.0, 5.0, AUDIT_OK),
        ]
    )

    text = report.markdown(result)

    assert "| portal | 1 | 300.0 | 2.50 | 4.00 | 5.00 | 0 | 0 | 1.00 | - | 0 / 3 (16) |" in text
    assert (
        "| portal | 16 | 1,200.0 | 10.00 | 16.00 | 20.00 | 0 | 0 | 1.00 | - | 0 / 3 (16) |" in text
    )
    assert "- PASS portal p99 <= 25 ms at c16: 20.0 ms" in text


def test_chart_is_svg_with_one_line_per_server():
    points = [
        make_point(series, c, tps * c, 10.0)
        for series, tps in (("portal", 100.0), ("stock-default", 0.5))
        for c in (1, 4, 16, 64)
    ]

    root = ET.fromstring(report.svg_chart(points, title="t"))  # noqa: S314 (our own output)

    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    assert len(root.findall(f"{ns}polyline")) == 2
    assert len(root.findall(f"{ns}circle")) == 8


def test_a_busy_shared_machine_is_noted():
    busy = {**make_point("node-oidc-provider", 16, 3800.0, 15.0), "others_cores": 0.8}
    quiet = {**make_point("node-oidc-provider", 4, 3000.0, 5.0), "others_cores": 0.05}

    result = make_result([busy, quiet])

    assert result["conditions"] == [
        "other processes kept up to 0.80 cores busy during a point (median 0.80; per point "
        "in the JSON; for the stock peer on PostgreSQL this includes its database): the "
        "machine was shared, throughput is understated"
    ]


def test_the_private_key_jwt_ratio_is_its_rate_over_the_secret_path():
    points = [
        {"series": "portal", "concurrency": 16, "tokens_per_s": 1000.0},
        {"series": "portal-private-key-jwt", "concurrency": 16, "tokens_per_s": 850.0},
    ]

    assert report.ratios(points)["16"]["private_key_jwt/secret"] == 0.85
