"""The figures of ``docs/performance.md`` without the charts: labels, targets, number
formatting, the target table and the result tables. Shared by :mod:`bench.report` (the
charts, and writing the file) and :mod:`bench.narrative` (the prose), which import it and
not each other."""

from __future__ import annotations

import math
from typing import Any

from loadgen.stats import markdown_table

RES_LABEL = {"1": "1m", "5": "5m", "15": "15m", "60": "1h", "240": "4h", "1D": "1d"}
STRATEGY_LABEL = {
    "tiers": "tvflux tiers (store)",
    "http": "tvflux HTTP /api/bars",
    "duckdb_1s": "per-second, DuckDB",
    "redis_1s": "per-second, Redis",
    "raw": "raw trades",
}
STRATEGY_ORDER = ("tiers", "http", "duckdb_1s", "redis_1s", "raw")
COLORS = {"tiers": "#1b9e77", "http": "#66a61e", "duckdb_1s": "#d95f02", "redis_1s": "#e7298a", "raw": "#7570b3"}

TARGETS = {
    "ingest_per_s": 300_000,
    "ingest_s": 60,
    "fanout_subs": 5_000,
    "push_ms": 250,
    "fanout_slack_ms": 25,
    "fanout_us_per_frame": 15.0,
    "chart_p50_ms": 5.0,
    "ratio_1d_1y": 100.0,
    "backfill_s": 60.0,
    "generate_s": 120.0,
    "rss_mb": 1024.0,
}


def n(value: Any, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}" if unit else text


def ms(value: Any) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}×" if value >= 10 else f"{value:.1f}×"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**missed**")


def cell(history: dict[str, Any], kind: str, strategy: str, res: str, rng: str) -> dict[str, Any] | None:
    for e in history.get(kind, []):
        if e["strategy"] == strategy and e["resolution"] == res and e["range"] == rng:
            return e
    return None


def evaluate(results: dict[str, Any]) -> list[list[str]]:
    """The target table: target, measured, verdict."""
    rows: list[list[str]] = []
    ingest = results.get("ingest", {}).get("headline")
    if ingest:
        ing = ingest["ingest"]
        lost = ing["trades_sent"] - ing["trades_acked"] - ing["duplicates"]
        ok = (
            ing["achieved_per_s"] >= TARGETS["ingest_per_s"] * 0.99
            and ingest["measure_s"] >= TARGETS["ingest_s"] * 0.99
            and lost == 0
            and not ing["server_pending_after"]
        )
        rows.append(
            [
                f"ingest ≥ {TARGETS['ingest_per_s']:,}/s for {TARGETS['ingest_s']} s, zero loss",
                f"{ing['achieved_per_s']:,}/s for {ingest['measure_s']:.0f} s; lost {lost:,}",
                verdict(ok),
            ]
        )
    fan = results.get("fanout", {}).get("headline")
    if fan:
        push = fan["config"]["push_interval_ms"] or 0
        p99 = fan["latency_ms"]["p99"]
        subs = fan["subscribers"]
        ok = (
            subs["subscriptions"] >= TARGETS["fanout_subs"]
            and p99 is not None
            and p99 <= push + TARGETS["fanout_slack_ms"]
            and subs["starved"] == 0
            and subs["cut_off"] == 0
            and subs["connect_failures"] == 0
            and fan["ingest"]["achieved_per_s"] >= 0.97 * fan["config"]["rate"]
        )
        workers = fan["config"].get("workers", 0)
        rows.append(
            [
                f"fan-out {TARGETS['fanout_subs']:,} subs @ {push} ms, 50k trades/s: p99 ≤ {push + 25} ms, "
                f"none starved ({workers} edge workers)",
                f"{subs['subscriptions']:,} subs, ingest {fan['ingest']['achieved_per_s']:,}/s, p99 {ms(p99)} ms, "
                f"starved {subs['starved']}, cut {subs['cut_off']}",
                verdict(ok),
            ]
        )
        per_frame = fan["resources"].get("server_cpu_us_per_frame")
        if per_frame is not None:
            rows.append(
                [
                    f"server CPU per pushed frame ≤ {TARGETS['fanout_us_per_frame']:g} µs (was 61)",
                    f"{per_frame:.1f} µs (all of the server's CPU, ingest included; "
                    f"{fanout_marginal_us(results['fanout']) or 0:.1f} µs beyond the ingest alone)",
                    verdict(per_frame <= TARGETS["fanout_us_per_frame"]),
                ]
            )
    hist = results.get("history")
    if hist:
        worst = max((e["p50"] for e in hist["chart"] if e["strategy"] == "tiers"), default=None)
        rows.append(
            [
                f"history p50 ≤ {TARGETS['chart_p50_ms']:g} ms for 300 bars, every resolution (store)",
                f"worst p50 {ms(worst)} ms",
                verdict(None if worst is None else worst <= TARGETS["chart_p50_ms"]),
            ]
        )
        worst_http = max((e["p50"] for e in hist["chart"] if e["strategy"] == "http"), default=None)
        if worst_http is not None:
            rows.append(
                [
                    "… the same through HTTP `/api/bars` (end to end)",
                    f"worst p50 {ms(worst_http)} ms",
                    verdict(worst_http <= TARGETS["chart_p50_ms"]),
                ]
            )
        big = max(hist["ranges"].values())
        label = next(k for k, v in hist["ranges"].items() if v == big)
        e = cell(hist, "cells", "duckdb_1s", "1D", label)
        if e is not None:
            rows.append(
                [
                    f"tiers ≥ {TARGETS['ratio_1d_1y']:.0f}× faster than per-second for 1d over {label} (DuckDB)",
                    ratio(e["ratio_to_tiers"]),
                    verdict(e["ratio_to_tiers"] >= TARGETS["ratio_1d_1y"]),
                ]
            )
        e = cell(hist, "cells", "redis_1s", "1D", label)
        if e is not None:
            rows.append(
                [
                    "… against per-second bars in Redis",
                    ratio(e["ratio_to_tiers"]),
                    verdict(e["ratio_to_tiers"] >= TARGETS["ratio_1d_1y"]),
                ]
            )
    backfill = results.get("backfill")
    if backfill:
        rows.append(
            [
                f"backfill {backfill['trades']:,} trades through all tiers ≤ {TARGETS['backfill_s']:.0f} s",
                f"{backfill['seconds']} s ({backfill['trades_per_s']:,} trades/s)",
                verdict(backfill["seconds"] <= TARGETS["backfill_s"]),
            ]
        )
    dataset = results.get("dataset")
    if dataset:
        g = dataset["generate"]
        rows.append(
            [
                f"generate {dataset['trades_written']:,} trades ≤ {TARGETS['generate_s']:.0f} s",
                f"{g['seconds']} s ({g['trades_per_s']:,} trades/s)",
                verdict(g["seconds"] <= TARGETS["generate_s"]),
            ]
        )
    peaks = rss_peaks(results)
    if peaks:
        worst = max(peaks.values())
        rows.append(
            [
                f"RSS ≤ {TARGETS['rss_mb']:.0f} MB throughout",
                f"max {worst:,.0f} MB ({max(peaks, key=peaks.get)})",
                verdict(worst <= TARGETS["rss_mb"]),
            ]
        )
    return rows


def rss_peaks(results: dict[str, Any]) -> dict[str, float]:
    peaks: dict[str, float] = {}
    if results.get("dataset"):
        peaks["generate"] = results["dataset"]["generate"]["peak_rss_mb"]
        peaks["downsample (dataset build)"] = results["dataset"]["backfill"]["peak_rss_mb"]
    if results.get("backfill"):
        peaks["backfill"] = results["backfill"]["peak_rss_mb"]
    for step in ("ingest", "fanout", "live_history"):
        for name, run in runs(results.get(step)):
            value = run["resources"].get("server_rss_peak_mb")
            if value is not None:
                peaks[f"server, {step} {name}"] = value
    return peaks


def runs(step: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    if not step:
        return []
    out = []
    for key, value in step.items():
        if isinstance(value, dict) and "resources" in value:
            out.append((key, value))
        elif isinstance(value, list):
            out.extend((f"{key} {i}", v) for i, v in enumerate(value) if isinstance(v, dict) and "resources" in v)
    return out


def load_row(name: str, r: dict[str, Any]) -> list[str]:
    ing, res = r["ingest"], r["resources"]
    return [
        name,
        n(ing["target_per_s"]),
        n(ing["achieved_per_s"]),
        n(ing["trades_acked"]),
        n(ing["trades_sent"] - ing["trades_acked"] - ing["duplicates"]),
        ms(ing["ack_rtt_ms"]["p50"]),
        ms(ing["ack_rtt_ms"]["p99"]),
        n(res["server_cpu_avg_pct"]),
        n(res["server_rss_peak_mb"]),
        n(res["loadgen_cpu_avg_pct"]),
        n(res["others_cpu_avg_pct"]),
    ]


LOAD_HEAD = [
    "run",
    "target/s",
    "achieved/s",
    "acked",
    "lost",
    "ack p50 ms",
    "ack p99 ms",
    "server CPU %",
    "server RSS MB",
    "loadgen CPU %",
    "others CPU %",
]


def fanout_marginal_us(fan: dict[str, Any]) -> float | None:
    """Server CPU per pushed frame of the target run beyond what the same ingest costs with
    no subscribers (the ``ingest_only`` run, same workers)."""
    h, base = fan.get("headline"), fan.get("ingest_only")
    if not h or not base:
        return None
    frames = h["subscribers"]["frames_per_s"]
    cpu, cpu0 = h["resources"].get("server_cpu_avg_pct"), base["resources"].get("server_cpu_avg_pct")
    if not frames or cpu is None or cpu0 is None:
        return None
    return round(max(0.0, cpu - cpu0) * 10_000 / frames, 1)


def fan_row(name: str, r: dict[str, Any]) -> list[str]:
    lat, subs, res = r["latency_ms"], r["subscribers"], r["resources"]
    return [
        name,
        n(r["config"].get("workers", 0)),
        n(subs["subscriptions"]),
        n(subs["connections"]),
        n(r["ingest"]["achieved_per_s"]),
        n(subs["frames_per_s"]),
        ms(lat["p50"]),
        ms(lat["p95"]),
        ms(lat["p99"]),
        ms(lat.get("p999")),
        ms(lat["max"]),
        ms(subs["max_gap_ms"]["max"]),
        f"{subs['starved']}/{subs['cut_off']}",
        n(r["markers"]["missed"]),
        n(res["server_cpu_avg_pct"]),
        "-" if res.get("server_cpu_us_per_frame") is None else f"{res['server_cpu_us_per_frame']:.1f}",
        n(res["server_rss_peak_mb"]),
        n(res["loadgen_cpu_avg_pct"]),
        n(res["others_cpu_avg_pct"]),
    ]


FAN_HEAD = [
    "run",
    "edge workers",
    "subs",
    "conns",
    "ingest/s",
    "frames/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "worst gap ms",
    "starved/cut",
    "missed",
    "server CPU %",
    "server µs/frame",
    "server RSS MB",
    "loadgen CPU %",
    "others CPU %",
]


def history_tables(hist: dict[str, Any]) -> list[str]:
    out = []
    strategies = [s for s in STRATEGY_ORDER if any(e["strategy"] == s for e in hist["cells"])]
    head = ["resolution", "bars"] + [STRATEGY_LABEL[s] for s in strategies]
    # 300-bar requests
    rows = []
    for r in hist["resolutions"]:
        base = cell(hist, "chart", "tiers", r, "300 bars")
        row = [RES_LABEL.get(r, r), n(base["bars"]) if base else "–"]
        for s in strategies:
            e = cell(hist, "chart", s, r, "300 bars")
            row.append(
                "–"
                if e is None
                else f"{ms(e['p50'])} / {ms(e['p95'])}" + ("" if s == "tiers" else f" ({ratio(e['ratio_to_tiers'])})")
            )
        rows.append(row)
    out.append("#### A chart opening: the last 300 bars (p50 / p95 ms, ratio of p50 to tiers)\n")
    out.append(markdown_table(rows, head))
    for rng in hist["ranges"]:
        rows = []
        for r in hist["resolutions"]:
            base = cell(hist, "cells", "tiers", r, rng)
            row = [RES_LABEL.get(r, r), n(base["bars"]) if base else "–"]
            for s in strategies:
                e = cell(hist, "cells", s, r, rng)
                if e is None:
                    row.append("–")
                    continue
                row.append(
                    f"{ms(e['p50'])} / {ms(e['p95'])}"
                    + ("" if s == "tiers" else f" ({ratio(e['ratio_to_tiers'])})")
                    + (f" n={e['n']}" if e["n"] < 5 else "")
                )
            rows.append(row)
        out.append(f"\n#### Range: {rng} (p50 / p95 ms, ratio of p50 to tiers; n shown when < 5 samples)\n")
        out.append(markdown_table(rows, head))
    return out
