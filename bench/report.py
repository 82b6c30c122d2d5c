"""Results of a benchmark run: the table, the targets of issues 6 and 13, the SVG chart.

Pure functions over the run's result dict (the same dict saved as JSON), so
they are tested without starting a server.
"""

from __future__ import annotations

import math
import statistics
from html import escape

PORTAL = "portal"
FLEET = "portal-fleet"
JWKS = "jwks"
INTROSPECT = "introspect"
NODE = "node-oidc-provider"
STOCK_DEFAULT = "stock-default"
STOCK_PLAIN = "stock-plain"
PRIVATE_KEY_JWT = "portal-private-key-jwt"
# Workloads presenting an external OIDC token (bench.federation), same portal, same run.
FEDERATED = "portal-federated"
# issue 11: a private_key_jwt token costs at most this much more than a secret one.
MIN_JWT_RATIO = 0.7
SERIES_ORDER = [
    PORTAL,
    PRIVATE_KEY_JWT,
    FEDERATED,
    FLEET,
    INTROSPECT,
    JWKS,
    NODE,
    STOCK_PLAIN,
    STOCK_DEFAULT,
]
COLOURS = {
    PORTAL: "#1f6feb",
    PRIVATE_KEY_JWT: "#0a3069",
    FEDERATED: "#1b7c83",
    FLEET: "#8250df",
    INTROSPECT: "#57606a",
    JWKS: "#a0a0a0",
    NODE: "#2da44e",
    STOCK_PLAIN: "#bf8700",
    STOCK_DEFAULT: "#cf222e",
}

# Issue 6, item 3: at concurrency 16, on 2 cores, PostgreSQL, ES256, durable audit.
TARGET_CONCURRENCY = 16
TARGET_TOKENS_PER_S = 1000.0
TARGET_NODE_RATIO = 0.25
TARGET_STOCK_RATIO = 100.0
TARGET_P99_MS = 25.0

# Issue 13, items 2, 4 and 5: deployment mode, at c16, in the same run.
DEPLOYMENT_NODE_RATIO = 0.6
DEPLOYMENT_P99_OVER_NODE = 1.5
FLEET_RATIO = 0.7

# Issue 11: at c16, same run. The secret path no slower than before the refactor
# (``--baseline REF``: the medians of interleaved rounds), each credential kind without
# a stored secret at least MIN_JWT_RATIO of the secret path's rate.
BASELINE_MIN_RATIO = 1.0
BASELINE_PREFIX = "portal@"


def point(points: list[dict], series: str, concurrency: int) -> dict | None:
    for p in points:
        if p["series"] == series and p["concurrency"] == concurrency:
            return p
    return None


def _ratio(top: dict | None, bottom: dict | None) -> float | None:
    if top is None or bottom is None:
        return None
    if bottom["tokens_per_s"] > 0:
        return top["tokens_per_s"] / bottom["tokens_per_s"]
    return math.inf if top["tokens_per_s"] > 0 else None


def ratios(points: list[dict]) -> dict[str, dict[str, float | None]]:
    """portal/node, portal/stock-default, private_key_jwt/secret and federated/secret
    throughput at every concurrency measured (None where a side is missing);
    fleet/portal and introspect/portal where those points exist."""
    out: dict[str, dict[str, float | None]] = {}
    for c in sorted({p["concurrency"] for p in points}):
        portal = point(points, PORTAL, c)
        row: dict[str, float | None] = {
            "portal/node": _ratio(portal, point(points, NODE, c)),
            "portal/stock-default": _ratio(portal, point(points, STOCK_DEFAULT, c)),
        }
        jwt = point(points, PRIVATE_KEY_JWT, c)
        row["private_key_jwt/secret"] = (
            jwt["tokens_per_s"] / portal["tokens_per_s"]
            if jwt is not None and portal is not None and portal["tokens_per_s"] > 0
            else None
        )
        federated = point(points, FEDERATED, c)
        row["federated/secret"] = (
            federated["tokens_per_s"] / portal["tokens_per_s"]
            if federated is not None and portal is not None and portal["tokens_per_s"] > 0
            else None
        )
        for label, series in (("fleet/portal", FLEET), ("introspect/portal", INTROSPECT)):
            if point(points, series, c) is not None:
                row[label] = _ratio(point(points, series, c), portal)
        out[str(c)] = row
    return out


def _drain(p: dict) -> float:
    drain = p["backlog"]["drain_s"]
    return math.inf if drain is None else drain


def deployment_targets(result: dict) -> list[dict[str, str]]:
    """PASS, FAIL or SKIP for issue 13's targets (items 2, 4 and 5), at c16 in this run."""
    points = result["points"]
    c = TARGET_CONCURRENCY
    portal = point(points, PORTAL, c)
    node = point(points, NODE, c)
    fleet = point(points, FLEET, c)
    introspect = point(points, INTROSPECT, c)
    mode = result["settings"].get("mode", "web-only")
    verdicts: list[dict[str, str]] = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        verdict = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
        verdicts.append({"target": name, "verdict": verdict, "detail": detail})

    missing = "not measured in this run"
    name = f"portal >= {DEPLOYMENT_NODE_RATIO} x node-oidc-provider at c{c} ({mode})"
    r = _ratio(portal, node)
    if r is None:
        add(name, None, ("portal " if portal is None else "node ") + missing)
    else:
        add(name, r >= DEPLOYMENT_NODE_RATIO, f"{r:.2f} x")
    name = f"portal p99 <= {DEPLOYMENT_P99_OVER_NODE} x node-oidc-provider's p99 at c{c}"
    p99 = portal and portal["latency_ms"].get("p99")
    node_p99 = node and node["latency_ms"].get("p99")
    if not p99 or not node_p99:
        add(name, None, ("portal " if not p99 else "node ") + missing)
    else:
        add(
            name,
            p99 <= DEPLOYMENT_P99_OVER_NODE * node_p99,
            f"{p99:.1f} ms against {node_p99:.1f} ms ({p99 / node_p99:.2f} x)",
        )
    sealed = [p for p in points if p.get("backlog")]
    name = "unsealed backlog <= two seal intervals' worth of tokens at every portal point"
    if not sealed:
        add(name, None, "no sealer ran")
    else:
        over = [p for p in sealed if p["backlog"]["largest"] > p["backlog"]["limit"]]
        undrained = [p for p in sealed if p["backlog"]["drain_s"] is None]
        worst = max(sealed, key=lambda p: p["backlog"]["largest"] / max(1, p["backlog"]["limit"]))
        add(
            name,
            not over and not undrained,
            f"largest {worst['backlog']['largest']:,} of {worst['backlog']['limit']:,} allowed "
            f"({worst['series']} c{worst['concurrency']}); "
            f"drained in at most {max(_drain(p) for p in sealed):.1f} s",
        )
    name = f"fleet >= {FLEET_RATIO} x the one-machine rate at c{c}"
    r = _ratio(fleet, portal)
    if r is None:
        add(name, None, ("fleet " if fleet is None else "portal ") + missing)
    else:
        repeated = (fleet.get("fleet") or {}).get("repeated", 0)
        add(
            name,
            r >= FLEET_RATIO and not repeated,
            f"{r:.2f} x ({fleet['tokens_per_s']:,.0f} against {portal['tokens_per_s']:,.0f}/s)"
            + (f"; {repeated} machines asked for twice" if repeated else ""),
        )
    name = f"introspection no slower than issuing at c{c}"
    r = _ratio(introspect, portal)
    if r is None:
        add(name, None, ("introspection " if introspect is None else "portal ") + missing)
    else:
        add(name, r >= 1.0, f"{r:.2f} x ({introspect['tokens_per_s']:,.0f}/s)")
    return verdicts


def targets(result: dict) -> list[dict[str, str]]:
    """PASS, FAIL or SKIP (not measured in this run) for each target of issue 6 item 3."""
    points = result["points"]
    c = TARGET_CONCURRENCY
    portal = point(points, PORTAL, c)
    node = point(points, NODE, c)
    stock = point(points, STOCK_DEFAULT, c)
    verdicts: list[dict[str, str]] = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        verdict = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
        verdicts.append({"target": name, "verdict": verdict, "detail": detail})

    missing = "not measured in this run"
    if portal is None:
        add(f"portal >= {TARGET_TOKENS_PER_S:,.0f} tokens/s at c{c}", None, "portal " + missing)
        add(
            f"portal >= {TARGET_NODE_RATIO} x node-oidc-provider at c{c}", None, "portal " + missing
        )
        add(
            f"portal >= {TARGET_STOCK_RATIO:.0f} x stock-default at c{c}", None, "portal " + missing
        )
        add(f"portal p99 <= {TARGET_P99_MS:.0f} ms at c{c}", None, "portal " + missing)
    else:
        tps = portal["tokens_per_s"]
        add(
            f"portal >= {TARGET_TOKENS_PER_S:,.0f} tokens/s at c{c}",
            tps >= TARGET_TOKENS_PER_S,
            f"{tps:,.0f} tokens/s",
        )
        if node is None:
            add(
                f"portal >= {TARGET_NODE_RATIO} x node-oidc-provider at c{c}",
                None,
                "node " + missing,
            )
        else:
            r = tps / node["tokens_per_s"] if node["tokens_per_s"] else math.inf
            add(
                f"portal >= {TARGET_NODE_RATIO} x node-oidc-provider at c{c}",
                r >= TARGET_NODE_RATIO,
                f"{r:.2f} x ({node['tokens_per_s']:,.0f} tokens/s)",
            )
        if stock is None:
            add(
                f"portal >= {TARGET_STOCK_RATIO:.0f} x stock-default at c{c}",
                None,
                "stock-default " + missing,
            )
        else:
            r = tps / stock["tokens_per_s"] if stock["tokens_per_s"] else math.inf
            add(
                f"portal >= {TARGET_STOCK_RATIO:.0f} x stock-default at c{c}",
                r >= TARGET_STOCK_RATIO,
                f"{r:,.0f} x ({stock['tokens_per_s']:,.1f} tokens/s)",
            )
        p99 = portal["latency_ms"].get("p99")
        add(
            f"portal p99 <= {TARGET_P99_MS:.0f} ms at c{c}",
            None if p99 is None else p99 <= TARGET_P99_MS,
            f"{p99} ms",
        )
    audited = [p for p in points if p.get("audit") is not None]
    if not audited:
        add("audit: one token.issued per token received", None, "portal " + missing)
    else:
        bad = [p for p in audited if not p["audit"]["ok"]]
        detail = ", ".join(
            f"c{p['concurrency']}: lost {p['audit']['lost']}, extra {p['audit']['extra']}"
            f" (<= {p['audit']['allowed_extra']}), duplicates {p['audit']['duplicates']}"
            + (
                f", {p['audit']['unsent_ids']} responses echoed a request id we never sent"
                if p["audit"].get("unsent_ids")
                else ""
            )
            for p in audited
        )
        add("audit: one token.issued per token received", not bad, detail)
    return verdicts


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _side_summary(points: list[dict]) -> dict | None:
    """Medians of one side's rounds at one concurrency, and each round's rate in order."""
    if not points:
        return None
    points = sorted(points, key=lambda p: p.get("round", 0))

    def med(get) -> float | None:
        values = [v for v in (get(p) for p in points) if v is not None]
        return _median(values)

    audits = [p["audit"] for p in points if p.get("audit") is not None]
    return {
        "rounds": len(points),
        "tokens_per_s": med(lambda p: p["tokens_per_s"]),
        "tokens_per_s_rounds": [p["tokens_per_s"] for p in points],
        "p50_ms": med(lambda p: p["latency_ms"].get("p50")),
        "p99_ms": med(lambda p: p["latency_ms"].get("p99")),
        "cpu_ms_per_token": med(lambda p: p.get("cpu_ms_per_token")),
        "db_cpu_ms_per_token": med(lambda p: p.get("db_cpu_ms_per_token")),
        "non_2xx": sum(p["non_2xx"] for p in points),
        "audit_lost": sum(a["lost"] for a in audits) if audits else None,
        "audit_ok": all(a["ok"] for a in audits) if audits else None,
    }


def before_after(rounds: list[dict], *, base_series: str) -> dict[str, dict]:
    """Per concurrency: the medians of REF's rounds (``base``) and of the current
    portal's (``current``, the series ``portal``), and ``ratio`` = current/base tokens/s.

    Rounds measured with both portals loaded at once (``together``) are also
    compared pair by pair: ``paired_ratios``, each round's current/base, and
    ``paired_ratio``, their median.
    """
    out: dict[str, dict] = {}
    for c in sorted({p["concurrency"] for p in rounds}):
        base_points = [p for p in rounds if p["series"] == base_series and p["concurrency"] == c]
        current_points = [p for p in rounds if p["series"] == PORTAL and p["concurrency"] == c]
        base = _side_summary(base_points)
        current = _side_summary(current_points)
        ratio = None
        if base and current and base["tokens_per_s"]:
            ratio = current["tokens_per_s"] / base["tokens_per_s"]
        row = {"base": base, "current": current, "ratio": ratio}
        base_by_round = {p["round"]: p for p in base_points if p.get("together")}
        paired = [
            p["tokens_per_s"] / base_by_round[p["round"]]["tokens_per_s"]
            for p in sorted(current_points, key=lambda p: p.get("round", 0))
            if p.get("together")
            and p.get("round") in base_by_round
            and base_by_round[p["round"]]["tokens_per_s"]
        ]
        if paired:
            row["paired_ratios"] = [round(r, 4) for r in paired]
            row["paired_ratio"] = _median(paired)
        out[str(c)] = row
    return out


def issue11_targets(result: dict) -> list[dict[str, str]]:
    """PASS, FAIL or SKIP for issue 11's bench targets, at c16 in this run."""
    c = TARGET_CONCURRENCY
    verdicts: list[dict[str, str]] = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        verdict = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
        verdicts.append({"target": name, "verdict": verdict, "detail": detail})

    baseline = result.get("baseline")
    series = baseline["series"] if baseline else BASELINE_PREFIX + "REF"
    row = (baseline or {}).get("summary", {}).get(str(c))
    together = bool(baseline and baseline.get("together"))
    name = f"secret path at c{c} not slower than {series} " + (
        "(median of the rounds' ratios, both loaded at once)"
        if together
        else "(medians of interleaved rounds)"
    )
    if not baseline:
        add(name, None, "no --baseline in this run")
    elif baseline.get("status") != "ok":
        add(name, None, f"{series} not run: {baseline.get('reason', 'unknown')}")
    elif row is None or row["ratio"] is None:
        add(name, None, f"no before/after rounds at c{c}")
    elif together and row.get("paired_ratio") is None:
        add(name, None, f"no round at c{c} measured both portals at once")
    elif together:
        ratios = row["paired_ratios"]
        same_side = all(r >= BASELINE_MIN_RATIO for r in ratios) or all(
            r < BASELINE_MIN_RATIO for r in ratios
        )
        add(
            name,
            row["paired_ratio"] >= BASELINE_MIN_RATIO,
            f"{row['paired_ratio']:.3f} x (rounds {', '.join(f'{r:.3f}' for r in ratios)}"
            + ("" if same_side else f"; the rounds fall on both sides of {BASELINE_MIN_RATIO}")
            + ")",
        )
    else:
        base, current = row["base"], row["current"]
        lo_b, hi_b = min(base["tokens_per_s_rounds"]), max(base["tokens_per_s_rounds"])
        lo_c, hi_c = min(current["tokens_per_s_rounds"]), max(current["tokens_per_s_rounds"])
        overlap = lo_c <= hi_b and lo_b <= hi_c
        add(
            name,
            row["ratio"] >= BASELINE_MIN_RATIO,
            f"{row['ratio']:.3f} x ({current['tokens_per_s']:,.0f} against "
            f"{base['tokens_per_s']:,.0f} tokens/s; rounds {lo_c:,.0f}-{hi_c:,.0f} against "
            f"{lo_b:,.0f}-{hi_b:,.0f}"
            + ("; the rounds overlap: within this run's noise" if overlap else "")
            + ")",
        )
        audits = [p["audit"] for p in baseline.get("points", []) if p.get("audit")]
        if audits:
            add(
                "audit: one token.issued per token received in every before/after round",
                all(a["ok"] for a in audits),
                f"lost {sum(a['lost'] for a in audits)}, duplicates "
                f"{sum(a['duplicates'] for a in audits)} in {len(audits)} rounds",
            )
    ratios_here = result.get("ratios", {}).get(str(c), {})
    for label, key in (
        ("private_key_jwt", "private_key_jwt/secret"),
        ("federated", "federated/secret"),
    ):
        name = f"{label} >= {MIN_JWT_RATIO} x the secret path's rate at c{c}"
        r = ratios_here.get(key)
        if r is None:
            add(name, None, f"{label} or the secret path not measured at c{c} in this run")
        else:
            add(name, r >= MIN_JWT_RATIO, f"{r:.2f} x")
    return verdicts


def conditions(result: dict) -> list[str]:
    """Where this run differs from the conditions the targets are defined for."""
    notes = []
    if result["host"]["cores"] != 2:
        notes.append(f"the targets assume 2 cores; this host has {result['host']['cores']}")
    portal = result["servers"].get(PORTAL, {})
    if portal.get("status") == "ok" and not str(portal.get("database", "")).startswith("postgres"):
        notes.append("the targets assume PostgreSQL; the portal ran on SQLite")
    measured = result["points"] + (result.get("baseline") or {}).get("points", [])
    others = [p["others_cores"] for p in measured if p.get("others_cores") is not None]
    if others and max(others) >= 0.25:
        notes.append(
            f"other processes kept up to {max(others):.2f} cores busy during a point "
            f"(median {sorted(others)[len(others) // 2]:.2f}; per point in the JSON; for the "
            "stock peer on PostgreSQL this includes its database): the machine was shared, "
            "throughput is understated"
        )
    baseline = result.get("baseline")
    if baseline and baseline.get("status") != "ok":
        notes.append(f"{baseline['series']} was not measured: {baseline.get('reason', 'unknown')}")
    if result.get("interrupted"):
        notes.append("the run was interrupted: the servers after the last point were not measured")
    if result["settings"]["duration_s"] < 10:
        notes.append(f"short points ({result['settings']['duration_s']} s): indicative only")
    return notes


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:,.{digits}f}"


def _parts_cell(p: dict) -> str:
    parts = p.get("cpu_ms_per_token_parts") or {}
    if len(parts) < 2:
        return "-"
    return " / ".join(_fmt(parts.get(k), 2) for k in ("web", "worker", "relay"))


def _backlog_cell(p: dict) -> str:
    b = p.get("backlog")
    if not b:
        return "-"
    cell = f"{b['at_end']:,} / {b['largest']:,} ({b['limit']:,})"
    return cell + (" **over**" if b["largest"] > b["limit"] else "")


def _before_after_lines(result: dict) -> list[str]:
    """The baseline's row and the current portal's, medians of their rounds, and the ratio."""
    baseline = result.get("baseline")
    if not baseline:
        return []
    series = baseline["series"]
    commit = (baseline.get("commit") or "")[:12] or "?"
    lines = [
        "",
        f"Before and after: the secret path of {series} (commit {commit}) and of the current "
        f"portal ({result.get('portal_commit', 'unknown')}), {baseline['rounds']} rounds each, "
        + (
            "both loaded at once in each round; medians:"
            if baseline.get("together")
            else "interleaved in this run (base, current, then current, base, ...); medians:"
        ),
    ]
    if baseline.get("status") != "ok":
        return [*lines, "", f"- not run: {' '.join(str(baseline.get('reason')).split())}"]
    lines += [
        "",
        "| series | c | tokens/s | p50 ms | p99 ms | server CPU ms/token "
        "| PostgreSQL CPU ms/token | non-2xx | audit lost | tokens/s of each round |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for c, row in baseline.get("summary", {}).items():
        for label, side in ((series, row["base"]), (PORTAL, row["current"])):
            if side is None:
                lines.append(f"| {label} | {c} | not measured | | | | | | | |")
                continue
            lost = "n/a" if side["audit_lost"] is None else str(side["audit_lost"])
            if side["audit_ok"] is False:
                lost += " **FAIL**"
            lines.append(
                f"| {label} | {c} | {_fmt(side['tokens_per_s'])} | {_fmt(side['p50_ms'], 2)} "
                f"| {_fmt(side['p99_ms'], 2)} | {_fmt(side['cpu_ms_per_token'], 2)} "
                f"| {_fmt(side['db_cpu_ms_per_token'], 2)} | {side['non_2xx']} | {lost} "
                f"| {', '.join(_fmt(v) for v in side['tokens_per_s_rounds'])} |"
            )
        lines.append(
            f"| **current/base** | {c} | **{_fmt(row['ratio'], 3)}** "
            f"| {_side_ratio(row, 'p50_ms')} | {_side_ratio(row, 'p99_ms')} "
            f"| {_side_ratio(row, 'cpu_ms_per_token')} | {_side_ratio(row, 'db_cpu_ms_per_token')} "
            "| | | |"
        )
        if row.get("paired_ratio") is not None:
            lines.append(
                f"| **current/base, round by round** | {c} | **{_fmt(row['paired_ratio'], 3)}** "
                f"| | | | | | | {', '.join(_fmt(r, 3) for r in row['paired_ratios'])} |"
            )
    lines += [f"- not measured: {' '.join(str(e).split())}" for e in baseline.get("errors", [])]
    return lines


def _side_ratio(row: dict, key: str) -> str:
    base, current = row["base"], row["current"]
    if not base or not current or not base.get(key) or current.get(key) is None:
        return "-"
    return _fmt(current[key] / base[key], 3)


def markdown(result: dict) -> str:
    s = result["settings"]
    h = result["host"]
    lines = [
        f"# Token endpoint benchmark {result['run_id']}",
        "",
        f"{result['started_at']} · {h['cores']} cores · {h['wrk']} on the same cores · "
        f"{s['duration_s']} s per point after {s['warmup_s']} s warm-up · "
        f"wrk threads = min(2, c) · timeout {s['timeout_s']} s · {s['machines']} portal machines"
        f" · portal at {result.get('portal_commit', 'unknown')}",
        "",
        f"Portal mode: **{s.get('mode', 'web-only')}**"
        + (
            " (`manage.py serve` as `make run` starts it: granian, a Celery worker with beat "
            "sealing and checkpointing, output relayed by `serve`)"
            if s.get("mode") == "deployment"
            else " (granian alone, its log written straight to a file)"
        )
        + (f" · fleet of {s['fleet']:,} machines" if s.get("fleet") else ""),
        "",
        "| server | c | tokens/s | p50 ms | p90 ms | p99 ms | non-2xx | socket errors "
        "| server CPU ms/token | PostgreSQL CPU ms/token | audit lost / extra (max) "
        "| CPU ms/token web / worker / relay | unsealed at end / largest (limit) "
        "| sealer drained in s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    ordered = sorted(
        result["points"],
        key=lambda p: (
            SERIES_ORDER.index(p["series"]) if p["series"] in SERIES_ORDER else 99,
            p["concurrency"],
        ),
    )
    for p in ordered:
        lat = p["latency_ms"]
        audit = p.get("audit")
        audit_cell = (
            f"{audit['lost']} / {audit['extra']} ({audit['allowed_extra']})" if audit else "n/a"
        )
        if audit and not audit["ok"]:
            audit_cell += " **FAIL**"
        non2xx = str(p["non_2xx"])
        if p["non_2xx_statuses"]:
            non2xx += (
                " ("
                + ", ".join(f"{k}: {v}" for k, v in sorted(p["non_2xx_statuses"].items()))
                + ")"
            )
        lines.append(
            f"| {p['series']} | {p['concurrency']} | {_fmt(p['tokens_per_s'])} "
            f"| {_fmt(lat.get('p50'), 2)} | {_fmt(lat.get('p90'), 2)} | {_fmt(lat.get('p99'), 2)} "
            f"| {non2xx} | {sum(p['socket_errors'].values())} "
            f"| {_fmt(p['cpu_ms_per_token'], 2)} | {_fmt(p.get('db_cpu_ms_per_token'), 2)} "
            f"| {audit_cell} | {_parts_cell(p)} | {_backlog_cell(p)} "
            f"| {_fmt((p.get('backlog') or {}).get('drain_s'), 1)} |"
        )
    lines.append("")
    lines.append("Servers:")
    for name, info in result["servers"].items():
        skip = {"status", "reason", "errors"}
        extra = ", ".join(f"{k} {v}" for k, v in info.items() if k not in skip)
        reason = " ".join(str(info.get("reason", "")).split())
        state = f"{info['status']}: {reason}" if reason else info["status"]
        lines.append(f"- {name}: {state}" + (f" ({extra})" if extra else ""))
        lines += [f"  - not measured: {' '.join(str(e).split())}" for e in info.get("errors", [])]
    r = result["ratios"]
    if r:
        lines += [
            "",
            "| c | portal/node | portal/stock-default | private_key_jwt/secret "
            "| federated/secret | fleet/portal | introspect/portal |",
            "|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for c, row in r.items():
            lines.append(
                f"| {c} | {_fmt(row['portal/node'], 2)} | {_fmt(row['portal/stock-default'], 1)} "
                f"| {_fmt(row.get('private_key_jwt/secret'), 2)} "
                f"| {_fmt(row.get('federated/secret'), 2)} "
                f"| {_fmt(row.get('fleet/portal'), 2)} | {_fmt(row.get('introspect/portal'), 2)} |"
            )
    lines += _before_after_lines(result)
    if result.get("deployment_targets"):
        lines += ["", f"Targets (issue 13, at c{TARGET_CONCURRENCY}, same run):"]
        for t in result["deployment_targets"]:
            lines.append(f"- {t['verdict']} {t['target']}: {t['detail']}")
    if result.get("issue11_targets"):
        lines += ["", f"Targets (issue 11, at c{TARGET_CONCURRENCY}, same run):"]
        for t in result["issue11_targets"]:
            lines.append(f"- {t['verdict']} {t['target']}: {t['detail']}")
    lines += ["", f"Targets (issue 6, item 3, at c{TARGET_CONCURRENCY}):"]
    for t in result["targets"]:
        lines.append(f"- {t['verdict']} {t['target']}: {t['detail']}")
    for note in result["conditions"]:
        lines.append(f"- note: {note}")
    return "\n".join(lines) + "\n"


def svg_chart(points: list[dict], *, title: str) -> str:
    """Tokens/s against concurrency, one line per server, log scale (peers span 1000x)."""
    width, height = 760, 440
    left, right, top, bottom = 70, 190, 40, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = sorted({p["concurrency"] for p in points})
    values = [p["tokens_per_s"] for p in points if p["tokens_per_s"] > 0]
    lo = 10 ** math.floor(math.log10(min(values))) if values else 1
    hi = 10 ** math.ceil(math.log10(max(values))) if values else 10
    if hi <= lo:
        hi = lo * 10

    def x_of(c: int) -> float:
        if len(xs) == 1:
            return left + plot_w / 2
        pad = 24
        return left + pad + (plot_w - 2 * pad) * xs.index(c) / (len(xs) - 1)

    def y_of(v: float) -> float:
        v = max(v, lo)
        return top + plot_h * (
            1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        )

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    decade = lo
    while decade <= hi:
        y = y_of(decade)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{decade:,.0f}</text>')
        decade *= 10
    for c in xs:
        x = x_of(c)
        out.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#eee"/>'
        )
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{c}</text>')
    out.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>'
    )
    out.append(
        f'<text x="{left + plot_w / 2}" y="{height - 10}" text-anchor="middle">'
        "concurrency (connections)</text>"
    )
    out.append(
        f'<text x="16" y="{top + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + plot_h / 2})">tokens/s (log scale)</text>'
    )
    series = sorted(
        {p["series"] for p in points},
        key=lambda s: SERIES_ORDER.index(s) if s in SERIES_ORDER else 99,
    )
    for index, name in enumerate(series):
        colour = COLOURS.get(name, "#6e7781")
        mine = sorted((p for p in points if p["series"] == name), key=lambda p: p["concurrency"])
        coords = [(x_of(p["concurrency"]), y_of(p["tokens_per_s"])) for p in mine]
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        for (x, y), p in zip(coords, mine, strict=True):
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}">'
                f"<title>{escape(name)} c{p['concurrency']}: "
                f"{p['tokens_per_s']:,.1f} tokens/s</title></circle>"
            )
        ly = top + 14 + index * 20
        lx = left + plot_w + 16
        out.append(
            f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 22}" y2="{ly - 4}" '
            f'stroke="{colour}" stroke-width="3"/>'
        )
        out.append(f'<text x="{lx + 28}" y="{ly}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
