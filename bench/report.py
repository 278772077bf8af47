"""``docs/performance.md`` and its charts from the saved ``bench/results/*.json`` only:
``python -m bench.report`` (also the last step of ``python -m bench.run``).

The text is ``bench/performance.md.in``: fixed prose and tables whose ``{fields}`` are the
results themselves (``{ingest[headline][measure_s]:.0f}``, with the specs of :class:`Figures`
for latencies, sizes and ratios) or, for what needs computing — verdicts against ``TARGETS``,
tables of many rows, lookups in lists — a name returned by the function named after the
section. ``<!-- section: NAME | needs: FILE … -->`` lines cut the template in sections; a
section is kept when the results files it needs exist. Adding a benchmark step means a results
file (``bench/run.py``), a template section that needs it, and, if it computes anything, one
function here.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import string
import sys
from collections import ChainMap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loadgen.stats import markdown_table as table

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"
TEMPLATE = Path(__file__).with_name("performance.md.in")
LOG = Path(__file__).with_name("optimisations.md")

RES = {"1": "1m", "5": "5m", "15": "15m", "60": "1h", "240": "4h", "1D": "1d"}
EMBEDDED = {
    "tiers": "tvflux tiers (store)",
    "http": "tvflux HTTP /api/bars",
    "duckdb_1s": "per-second, DuckDB",
    "redis_1s": "per-second, Redis",
    "raw": "raw trades",
}
INFLUX = {
    "tiers": "tvflux tiers (InfluxDB)",
    "influx_1s": "per-second bars, Flux at request time",
    "raw": "raw trades, Flux at request time",
}
# What the POC asked of a 2-core machine; the template quotes them as {T[name]}.
TARGETS = {
    "ingest_per_s": 300_000,
    "ingest_s": 60,
    "fanout_subs": 5_000,
    "slack_ms": 25,  # fan-out: p99 ≤ push interval + this
    "us_per_frame": 15,
    "chart_ms": 5,
    "ratio": 100,
    "backfill_s": 60,
    "generate_s": 120,
    "rss_mb": 1024,
    "open_ms": 1,
    "open_client_ms": 2,
    "scroll_ms": 3,
}
PLATEAU_MB_PER_MIN = 0.5  # a soak's RSS slope below this over its last ten minutes is flat

# --- formatting ----------------------------------------------------------------------------------


def n(value: Any, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def ms(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def ratio(value: Any) -> str:
    return "–" if value is None else f"{value:,.0f}×" if value >= 10 else f"{value:.1f}×"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else "**met**" if ok else "**missed**"


def within(value: float | None, limit: float) -> str:
    return verdict(None if value is None else value <= limit)


def span(values: Sequence[float | None]) -> str:
    xs = [v for v in values if v is not None]
    return f"{ms(min(xs))}–{ms(max(xs))}" if xs else "–"


def mb(b: int | None) -> str:
    return "–" if b is None else f"{b / 2**20:,.0f} MB"


def cell(hist: dict[str, Any], kind: str, strategy: str, res: str, rng: str) -> dict[str, Any]:
    """One timed cell of a history result (``{}`` when absent)."""
    key = (strategy, res, rng)
    return next((e for e in hist.get(kind, []) if (e["strategy"], e["resolution"], e["range"]) == key), {})


def biggest(hist: dict[str, Any]) -> str:
    return str(max(hist["ranges"], key=lambda k: hist["ranges"][k]))


def history_tables(hist: dict[str, Any], labels: dict[str, str], embedded: dict[str, Any] | None = None) -> str:
    """A table per question (the last 300 bars, then each range), a row per resolution: p50 / p95
    ms per strategy, the ratio of p50 to tiers, ``n=`` under 5 samples; ``embedded`` adds the
    embedded store's tiers for the same request."""
    names = [s for s in labels if any(e["strategy"] == s for e in hist["cells"])]
    head = ["resolution", "bars", *(labels[s] for s in names)] + (["embedded tiers p50"] if embedded else [])
    out = []
    for kind, rng in [("chart", "300 bars")] + [("cells", rng) for rng in hist["ranges"]]:
        rows = []
        for res in hist["resolutions"]:
            row = [RES.get(res, res), n(cell(hist, kind, "tiers", res, rng).get("bars"))]
            for s in names:
                e = cell(hist, kind, s, res, rng)
                text = f"{ms(e['p50'])} / {ms(e['p95'])}" if e else "–"
                text += f" ({ratio(e.get('ratio_to_tiers'))})" if e and s != "tiers" else ""
                row.append(text + (f" n={e['n']}" if e and e["n"] < 5 else ""))
            rows.append(row + ([ms(cell(embedded, kind, "tiers", res, rng).get("p50"))] if embedded else []))
        title = "A chart opening: the last 300 bars" if kind == "chart" else f"Range: {rng}"
        out.append(f"#### {title}\n\n{table(rows, head)}")
    return "\n\n".join(out)


def lost(ing: dict[str, Any]) -> int:
    return int(ing["trades_sent"] - ing["trades_acked"] - ing["duplicates"])


def fanout_ok(r: dict[str, Any]) -> bool:
    p99, subs = r["latency_ms"]["p99"], r["subscribers"]
    limit = (r["config"]["push_interval_ms"] or 0) + TARGETS["slack_ms"]
    return p99 is not None and p99 <= limit and not subs["starved"] and not subs["cut_off"]


def fanout_marginal_us(fan: dict[str, Any]) -> float | None:
    """Server CPU per pushed frame of the target run beyond what the same ingest costs with no
    subscribers (the ``ingest_only`` run, same workers)."""
    h, base = fan["headline"], fan.get("ingest_only")
    cpu, frames = h["resources"].get("server_cpu_avg_pct"), h["subscribers"]["frames_per_s"]
    if not base or cpu is None or not frames or base["resources"].get("server_cpu_avg_pct") is None:
        return None
    return round(max(0.0, cpu - base["resources"]["server_cpu_avg_pct"]) * 10_000 / frames, 1)


def influx_kept_up(r: dict[str, Any]) -> bool:
    """Nothing lost, ≥ 97 % of the target acknowledged, drained within 2 s of the publisher stopping."""
    return bool(r["lost"] == 0 and r["acked_per_s"] >= 0.97 * r["target_per_s"] and r["drain_s"] <= 2.0)


def rss_peaks(r: dict[str, Any]) -> dict[str, float]:
    peaks = {"generate": r["dataset"]["generate"]["peak_rss_mb"], "backfill": r["backfill"]["peak_rss_mb"]}
    peaks["downsample (dataset build)"] = r["dataset"]["backfill"]["peak_rss_mb"]
    for step in ("ingest", "fanout", "live_history"):
        for key, value in (r.get(step) or {}).items():
            for i, run in enumerate(value if isinstance(value, list) else [value]):
                if isinstance(run, dict) and (rss := run.get("resources", {}).get("server_rss_peak_mb")) is not None:
                    peaks[f"server, {step} {key}" + (f" {i}" if isinstance(value, list) else "")] = rss
    return peaks


class Figures(string.Formatter):
    """``str.format`` over the results, where ``None`` prints as ``–`` and three more format
    specs exist: ``ms`` (a latency), ``mb`` (bytes as MB) and ``x`` (a ratio)."""

    SPECS: dict[str, Callable[[Any], str]] = {"ms": ms, "mb": mb, "x": ratio}

    def format_field(self, value: Any, format_spec: str) -> str:
        if value is None:
            return "–"
        spec = self.SPECS.get(format_spec)
        return spec(value) if spec else format(value, format_spec)


# --- the sections: each returns the values of its template's names -----------------------------


def summary(r: dict[str, Any]) -> dict[str, Any]:
    hist, fan, T = r["history"], r["fanout"]["headline"], TARGETS
    rows = []
    stores = [("embedded (DuckDB)", hist, r["dataset"]["trades_written"], ("duckdb_1s", "redis_1s", "raw"))]
    if (r.get("influx") or {}).get("history"):
        stores.append(("InfluxDB", r["influx"]["history"], r["influx"]["load"]["trades"], ("influx_1s", "", "raw")))
    for store, h, trades, others in stores:
        for res in ("1D", "1"):
            tiers, cells = (
                cell(h, "cells", "tiers", res, biggest(h)),
                [cell(h, "cells", s, res, biggest(h)) for s in others],
            )
            rows.append(
                [f"{RES[res]} bars over {biggest(h)} ({n(tiers.get('bars'))} bars)", f"{store}, {n(trades)} trades"]
                + [ms(tiers.get("p50"))]
                + [f"{ms(e['p50'])} ({ratio(e.get('ratio_to_tiers'))})" if e else "–" for e in cells]
            )
    head = ["request", "store", "tiers", "per-second bars", "per-second bars in Redis", "raw trades"]
    ing_run = r["ingest"]["headline"]
    ing, subs, push = ing_run["ingest"], fan["subscribers"], fan["config"]["push_interval_ms"] or 0
    worst = {s: max((e["p50"] for e in hist["chart"] if e["strategy"] == s), default=None) for s in ("tiers", "http")}
    duck, redis = (cell(hist, "cells", s, "1D", biggest(hist)).get("ratio_to_tiers") for s in ("duckdb_1s", "redis_1s"))
    peaks = rss_peaks(r)
    top = max(peaks, key=lambda k: peaks[k])
    ingest_ok = ing["achieved_per_s"] >= T["ingest_per_s"] * 0.99 and ing_run["measure_s"] >= T["ingest_s"] * 0.99
    fan_ok = subs["subscriptions"] >= T["fanout_subs"] and fanout_ok(fan) and subs["connect_failures"] == 0
    return {
        "headline": table(rows, head, align="llrrrr"),
        "lost": lost(ing),
        "ingest_ok": verdict(ingest_ok and lost(ing) == 0 and not ing["server_pending_after"]),
        "push": push,
        "limit": push + T["slack_ms"],
        "fan_ok": verdict(fan_ok and fan["ingest"]["achieved_per_s"] >= 0.97 * fan["config"]["rate"]),
        "marginal_us": fanout_marginal_us(r["fanout"]),
        "per_frame_ok": within(fan["resources"].get("server_cpu_us_per_frame"), T["us_per_frame"]),
        "store_worst": worst["tiers"],
        "store_ok": within(worst["tiers"], T["chart_ms"]),
        "http_worst": worst["http"],
        "http_ok": within(worst["http"], T["chart_ms"]),
        "big": biggest(hist),
        "duck": duck,
        "duck_ok": verdict(None if duck is None else duck >= T["ratio"]),
        "redis": redis,
        "redis_ok": verdict(None if redis is None else redis >= T["ratio"]),
        "backfill_ok": within(r["backfill"]["seconds"], T["backfill_s"]),
        "generate_ok": within(r["dataset"]["generate"]["seconds"], T["generate_s"]),
        "rss": peaks[top],
        "rss_where": top,
        "rss_ok": within(peaks[top], T["rss_mb"]),
    }


def machine(r: dict[str, Any]) -> dict[str, Any]:
    m = r["machine"]
    return {
        "packages": ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items() if v),
        "dirty": " + uncommitted changes" if m.get("working_tree_dirty") else "",
        "loadavg": " / ".join(f"{x:.2f}" for x in m.get("load_average_at_start", [])),
    }


def dataset(r: dict[str, Any]) -> dict[str, Any]:
    d, b, h = r["dataset"], r["backfill"], r["history"]
    return {
        "symbols": ", ".join(d["spec"]["symbols"]),
        "bytes_per_trade": d["db_bytes"] / d["trades_written"],
        "tier_rows": ", ".join(f"{k} {v:,}" for k, v in b["tier_rows"].items()),
        "per_second": d["trades_written"] / h["bars_1s"]["rows"],
        "redis_symbols": ", ".join(h["redis"]["symbols"]),
    }


def history(r: dict[str, Any]) -> dict[str, Any]:
    h = r["history"]
    big = biggest(h)
    bars_1s = (h.get("bars_1s") or {}).get("rows")
    return {
        "mismatches": f"{len(h['mismatches'])}" + (f" ({h['mismatches'][:3]})" if h["mismatches"] else ""),
        "tables": history_tables(h, EMBEDDED),
        "tiers_open": span([e["p50"] for e in h["chart"] if e["strategy"] == "tiers"]),
        "http_open": span([e["p50"] for e in h["chart"] if e["strategy"] == "http"]),
        "big": big,
        **{k: cell(h, "cells", s, res, big).get("p50") for k, s, res in P50S},
        "per_second": h["dataset"]["trades_written"] / bars_1s if bars_1s else None,
    }


P50S = (
    ("duck_1m", "duckdb_1s", "1"),
    ("duck_1d", "duckdb_1s", "1D"),
    ("redis_1d", "redis_1s", "1D"),
    ("raw_1d", "raw", "1D"),
)


def chart(r: dict[str, Any]) -> dict[str, Any]:
    c, T = r["chart"], TARGETS
    cells, peers = c["cells"], c.get("peers") or []

    def of(kind: str, key: str = "server_p50", res: Sequence[str] = ()) -> list[tuple[float, str]]:
        return [(e[key], e["resolution"]) for e in cells if e["kind"] == kind and (not res or e["resolution"] in res)]

    kinds = {
        "open": "chart open: countback 300, to = now (hot window)",
        "open_store": "the same, hot window off (TVFLUX_HOT_WINDOW_BARS=0: the store)",
        "scroll": "scroll-back page: countback 300, to = 7 days before the data's end (store)",
    }
    rows = [
        [kinds.get(e["kind"], e["kind"]), e["resolution"], n(e["bars"])]
        + [n(e[k], 2) for k in ("server_p50", "server_p95", "client_p50", "client_p95")]
        for e in cells
    ]
    head = ["request", "res", "bars", "server p50 ms", "server p95 ms", "client p50 ms", "client p95 ms"]
    names, opens = list(dict.fromkeys(e["peer"] for e in peers)), dict((res, x) for x, res in of("open", "client_p50"))
    by = {(e["peer"], e["resolution"]): e for e in peers}
    peer_rows = [
        [res, n(by.get((names[0], res), {}).get("bars"))]
        + [f"{n(e['p50'], 2)} / {n(e['p95'], 2)}" + ("" if e["same_bars"] else " (differs)") if e else "–"
           for e in (by.get((name, res)) for name in names)]
        for res in dict.fromkeys(e["resolution"] for e in peers)
    ]  # fmt: skip
    near = min(peers, key=lambda e: e["p50"] / opens[e["resolution"]], default=None)
    worst = {k: max(of(kind, key), default=(None, "–")) for k, kind, key in WORST}
    year, quarter = (max(of(kind), default=(None, ""))[0] for kind in ("range 365d", "range 90d"))
    return {
        "loadavg_start": ", ".join(f"{x:.2f}" for x in c.get("loadavg_start", [])),
        "loadavg_end": ", ".join(f"{x:.2f}" for x in c.get("loadavg_end", [])),
        **worst,
        **{
            f"{k}_ok": within(worst[k][0], T[limit]) for k, limit in (("open", "open_ms"), ("client", "open_client_ms"))
        },
        "scroll_ok": within(worst["scroll"][0], T["scroll_ms"]),
        "year": year,
        "quarter": quarter,
        "ranges_ok": within(None if year is None or quarter is None else max(year, quarter), T["scroll_ms"]),
        "cells": table(rows, head, align="llrrrrr"),
        "open_server": span([x for x, _ in of("open")]),
        "open_client": span([x for x, _ in of("open", "client_p50")]),
        "store_server": span([x for x, _ in of("open_store")]),
        "scroll_server": span([x for x, _ in of("scroll", res=tuple(RES))]),
        "peer_mismatches": len(c["mismatches"]),
        "closest": "–"
        if near is None
        else f"{near['peer']} at {near['resolution']}, {n(near['p50'], 2)} ms: "
        f"{near['p50'] / opens[near['resolution']]:.1f}× tvflux's {n(opens[near['resolution']], 2)} ms",
        "peer_status": ", ".join(
            f"{k} {v.get('built_s') or v.get('skipped') or 'cached'}" for k, v in (c.get("peer_status") or {}).items()
        ),
        "peers": table(peer_rows, ["res", "bars", *[f"{name} p50 / p95 ms" for name in names]]) if peers else "",
    }


WORST = (("open", "open", "server_p50"), ("client", "open", "client_p50"), ("scroll", "scroll", "server_p50"))


def influx(r: dict[str, Any]) -> dict[str, Any]:
    x = r["influx"]
    load, back, hist, when = x["load"], x["backfill"], x["history"], x.get("history_measured_at")
    runs = sum(e["runs"] for e in back["runs"].values())
    ingest = [
        [f"{i['target_per_s']:,}"]
        + [n(i.get(k)) for k in ("acked_per_s", "stored_per_s", "trades_acked", "stored_in_influxdb", "lost")]
        + [n(i["backlog_at_end"]), f"{i['drain_s']:g}"]
        + [n(i.get(k)) for k in ("influxd_cpu_pct", "influxd_rss_peak_mb", "server_cpu_pct")]
        + ["yes" if influx_kept_up(i) else "**no**"]
        for i in x.get("ingest", [])
    ]
    ingest_head = ["target/s", "acked/s", "stored/s", "acked", "in InfluxDB", "lost", "backlog", "drain s"]
    ingest_head += ["influxd CPU %", "influxd RSS MB", "tvflux CPU %", "kept up"]
    run_rows = [
        [t, e["runs"], n(back["tier_rows"].get(t)), n(e["run_ms_p50"]), n(e["run_ms_max"])]
        for t, e in back["runs"].items()
    ]
    disk = x.get("disk_compacted") or x.get("disk_after_restart") or x.get("disk") or {}
    bucket = {name: disk.get(bid) for name, bid in x.get("bucket_ids", {}).items() if bid}
    peaks = x["resources"].get("peak_rss_mb", {})
    before = x.get("status_read_ms_before")

    def listed(values: Sequence[float]) -> str:
        return ", ".join(f"{v:,.0f}" for v in values)

    return {
        "symbols": ", ".join(x["spec"]["symbols"]),
        "density": load["trades"] / x["spec"]["days"] / (50e6 / 365),
        "runs": runs,
        "per_run": back["seconds"] / max(runs, 1),
        "history_when": "straight after the backfill"
        if not when
        else f"again on {when[:16].replace('T', ' ')} UTC, once InfluxDB had compacted its shards "
        "(`python -m bench.influx --history-only`; the first timing, straight after the backfill, is "
        "`history_fresh` in the results)",
        "history_load": " / ".join(f"{v:.1f}" for v in x.get("load_avg_history", [])) or "–",
        "status_ms": f"{listed(x.get('status_read_ms', []))} ms"
        + (f" (before it was bounded: {listed(before)} ms)" if before else ""),
        "ingest_table": table(ingest, ingest_head) if ingest else "(no ingest runs in this result)",
        "runs_table": table(run_rows, ["tier", "runs", "bars", "run p50 ms", "run max ms"]),
        "mismatches": len(hist["mismatches"]),
        "tables": history_tables(hist, INFLUX, r["history"]),
        "tiers_open": span([e["p50"] for e in hist["chart"] if e["strategy"] == "tiers"]),
        "persec_open": span([e["p50"] for e in hist["chart"] if e["strategy"] == "influx_1s"]),
        "disk": {**bucket, "total": disk.get("total")},
        "raw_per_trade": bucket["trades"] / load["trades"] if bucket.get("trades") else None,
        "peaks": " / ".join(
            n(max((v for k, v in peaks.items() if k.startswith(p)), default=None)) + " MB"
            for p in ("ingest", "load", "backfill", "history")
        ),
    }


def load_row(name: str, r: dict[str, Any]) -> list[str]:
    ing, res = r["ingest"], r["resources"]
    return (
        [name, *(n(ing[k]) for k in ("target_per_s", "achieved_per_s", "trades_acked")), n(lost(ing))]
        + [ms(ing["ack_rtt_ms"][q]) for q in ("p50", "p99")]
        + [n(res[k]) for k in ("server_cpu_avg_pct", "server_rss_peak_mb", "loadgen_cpu_avg_pct", "others_cpu_avg_pct")]
    )


def ingest(r: dict[str, Any]) -> dict[str, Any]:
    ing = r["ingest"]
    rows = [load_row("target run (+18 subscribers)", ing["headline"])]
    rows += [load_row(f"sweep {s['ingest']['target_per_s'] / 1000:.0f}k", s) for s in ing["sweep"]]
    rows += [
        load_row(name, ing[k]) for k, name in (("json_frames", "JSON frames"), ("http", "HTTP POST (JSON)")) if k in ing
    ]
    head = ["run", "target/s", "achieved/s", "acked", "lost", "ack p50 ms", "ack p99 ms", "server CPU %"]
    head += ["server RSS MB", "loadgen CPU %", "others CPU %"]
    return {"table": table(rows, head), "notes": "; ".join(ing["headline"]["notes"]) or "none"}


def fanout(r: dict[str, Any]) -> dict[str, Any]:
    fan = r["fanout"]
    names = {0: "one process", 1: "one edge"}
    runs = [("target run", fan["headline"])]
    runs += [(names.get(x["config"].get("workers", 0), "same load"), x) for x in fan.get("by_workers", [])]
    runs += [("ingest alone (no subscribers)", fan["ingest_only"])] if "ingest_only" in fan else []
    runs += [(f"sweep {x['subscribers']['subscriptions']:,}", x) for x in fan["sweep"]]
    runs += [("100 subs per connection", fan["multiplexed"])] if "multiplexed" in fan else []
    runs += [("batched publisher (10k-trade frames, 5 Hz markers)", fan["batched"])] if "batched" in fan else []
    rows = []
    for name, x in runs:
        lat, subs, res = x["latency_ms"], x["subscribers"], x["resources"]
        rows.append(
            [name, *(n(v) for v in (x["config"].get("workers", 0), subs["subscriptions"], subs["connections"]))]
            + [n(x["ingest"]["achieved_per_s"]), n(subs["frames_per_s"])]
            + [ms(lat.get(q)) for q in ("p50", "p95", "p99", "p999", "max")]
            + [ms(subs["max_gap_ms"]["max"]), f"{subs['starved']}/{subs['cut_off']}", n(x["markers"]["missed"])]
            + [("yes" if fanout_ok(x) else "no") if subs["subscriptions"] else "–", n(res["server_cpu_avg_pct"])]
            + [n(res.get("server_cpu_us_per_frame"), 1), n(res["server_rss_peak_mb"])]
            + [n(res["loadgen_cpu_avg_pct"]), n(res["others_cpu_avg_pct"])]
        )
    head = ["run", "edge workers", "subs", "conns", "ingest/s", "frames/s", "p50 ms", "p95 ms", "p99 ms", "p99.9 ms"]
    head += ["max ms", "worst gap ms", "starved/cut", "missed", "met", "server CPU %", "server µs/frame"]
    head += ["server RSS MB", "loadgen CPU %", "others CPU %"]
    return {"table": table(rows, head), "notes": "; ".join(fan["headline"]["notes"]) or "none", **projection(fan)}


def projection(fan: dict[str, Any]) -> dict[str, Any]:
    """Subscribers per edge core and per 16-core edge host (15 edge processes, one core left to
    the kernel's network work) from the fan-out's CPU per frame beyond the ingest, planned at
    60 % of a core: on paper, for sizing."""
    h = fan["headline"]
    per_frame_us = fanout_marginal_us(fan)
    pushes_per_s = 1000 / (h["config"]["push_interval_ms"] or 1000)  # a busy series pushes every interval
    frames_per_core = 1e6 / per_frame_us if per_frame_us else None
    per_core = frames_per_core / pushes_per_s if frames_per_core else None
    usable = 0.6
    return {
        "per_frame_us": per_frame_us,
        "frames_per_core": frames_per_core,
        "subs_per_core": per_core,
        "usable": usable,
        "subs_per_host": 15 * per_core * usable if per_core else None,
    }


def live_history(r: dict[str, Any]) -> dict[str, Any]:
    idle, loaded = (r["live_history"][k]["history"] for k in ("idle", "loaded"))
    rows = [
        [RES.get(res, res), *(ms(x.get(q)) for x in (a, loaded["by_resolution"].get(res, {})) for q in ("p50", "p99"))]
        for res, a in idle["by_resolution"].items()
    ]
    rows.append(["all", *(ms(x["latency_ms"][q]) for x in (idle, loaded) for q in ("p50", "p99"))])
    return {"table": table(rows, ["resolution", "idle p50 ms", "idle p99 ms", "loaded p50 ms", "loaded p99 ms"])}


def soak(r: dict[str, Any]) -> dict[str, Any]:
    s = r["soak"]
    bound, points, slope = s["bound"], s["curve"], s["bound"]["slope_last_10_min_mb_per_min"]
    problems = {k: v for k, v in (s.get("problems") or {}).items() if v not in (0, None, [], {})}
    step = max(1, len(points) // 10)
    curve = [[p["minute"], f"{p['rss_mb']:.0f}", f"{p['server_cpu_pct']:.0f}"] for p in points[::step]]
    return {
        "within": "within" if bound["peak_minute_median_mb"] <= bound["bound_mb"] else "**over**",
        "plateau": {None: "–", True: "a plateau", False: "still moving at the end"}[
            None if slope is None else abs(slope) < PLATEAU_MB_PER_MIN
        ],
        "problems": str(problems) if problems else "none",
        "curve": table(curve, ["minute", "RSS MB", "server CPU %"]),
    }


def optimisations(r: dict[str, Any]) -> dict[str, Any]:
    return {"log": LOG.read_text().strip()}


def recommendations(r: dict[str, Any]) -> dict[str, Any]:
    fan, d, rows = r["fanout"], r["dataset"], r["backfill"]["tier_rows"]
    symbol_years = len(d["spec"]["symbols"]) * d["spec"]["days"] / 365 * 1e6  # millions of rows per symbol-year
    return {
        "tier_rows": sum(rows.values()),
        "rows_1m_m": rows["1m"] / symbol_years,
        "rows_coarse_m": sum(v for k, v in rows.items() if k != "1m") / symbol_years,
        "bytes_per_trade": d["db_bytes"] / d["trades_written"],
        "best_ingest": max(
            (x["ingest"]["achieved_per_s"] for x in r["ingest"]["sweep"] if lost(x["ingest"]) == 0), default=None
        ),
        "knee": max((x["subscribers"]["subscriptions"] for x in fan["sweep"] if fanout_ok(x)), default=None),
    }


def influx_sizing(r: dict[str, Any]) -> dict[str, Any]:
    ingest = r["influx"].get("ingest", [])
    best = max((i for i in ingest if influx_kept_up(i)), key=lambda i: i["target_per_s"], default=None)
    last = " (the highest rate of its sweep: a lower bound)" if best is not None and best is ingest[-1] else ""
    return {"kept_up": "no rate of its sweep" if best is None else f"{best['target_per_s']:,} trades/s{last}"}


SECTIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    f.__name__: f
    for f in (summary, machine, dataset, history, chart, influx, ingest, fanout, live_history, soak)
    + (optimisations, recommendations, influx_sizing)
}
_MARK = re.compile(r"^<!-- section: (\w+)(?: \| needs: ([\w ]+))? -->\n", re.M)


def render(results: dict[str, Any], *, quick: bool = False) -> str:
    """The Markdown of the report (the charts are :func:`charts`')."""
    text = TEMPLATE.read_text()
    marks = list(_MARK.finditer(text))
    note = (
        "\n\n> **Quick mode**: a small dataset and seconds-long runs — a smoke test, not the figures." if quick else ""
    )
    parts = []
    for m, end in zip(marks, [x.start() for x in marks[1:]] + [len(text)]):
        name, needs = m.group(1), (m.group(2) or "").split()
        if all(results.get(k) for k in needs):
            names = SECTIONS[name](results) if name in SECTIONS else {}
            values = ChainMap(names, results, {"T": TARGETS, "quick_note": note})
            parts.append(Figures().vformat(text[m.end() : end], (), values).strip())
    return "\n\n".join(parts) + "\n"


# --- charts: a figure is a few panels of lines ---------------------------------------------------

Panel = tuple[str, str, str, dict[str, tuple[list[Any], list[Any]]]]  # title, x label, y label, series


def plot(path: Path, title: str, panels: list[Panel], log_y: bool = False) -> None:
    """Panels three to a row; a legend wherever the series differ from the panel before."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1 + 3.6 * cols, 0.4 + 3.2 * rows), squeeze=False)
    legend: list[str] = []
    for ax, (sub, xlabel, ylabel, series) in zip(axes.flat, panels):
        for label, (xs, ys) in series.items():
            ax.plot(xs, [math.nan if y is None else y for y in ys], marker="o", ms=3, label=label)
        ax.set(title=sub, xlabel=xlabel, ylabel=ylabel, yscale="log" if log_y else "linear")
        ax.grid(alpha=0.3)
        if list(series) != legend:
            ax.legend(fontsize=7)
            legend = list(series)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def history_panels(h: dict[str, Any], labels: dict[str, str]) -> list[Panel]:
    xs = [RES.get(x, x) for x in h["resolutions"]]
    return [
        (rng, "resolution", "p50 ms (log)", {
            label: (xs, [cell(h, kind, s, res, rng).get("p50") for res in h["resolutions"]])
            for s, label in labels.items()
        })
        for kind, rng in [("chart", "300 bars")] + [("cells", rng) for rng in h["ranges"]]
    ]  # fmt: skip


def charts(r: dict[str, Any], img: Path) -> None:
    img.mkdir(parents=True, exist_ok=True)
    if h := r.get("history"):
        title = f"History latency ({h['symbol']}, {h['dataset']['trades_written']:,} trades)"
        plot(img / "perf-history.png", title, history_panels(h, EMBEDDED), log_y=True)
    if (x := r.get("influx")) and x.get("history"):
        title = f"History on InfluxDB ({x['history']['symbol']}, {x['load']['trades']:,} trades)"
        plot(img / "perf-influx.png", title, history_panels(x["history"], INFLUX), log_y=True)
    if ing := r.get("ingest"):
        k = [s["ingest"]["target_per_s"] / 1000 for s in ing["sweep"]]
        achieved = {"achieved": (k, [s["ingest"]["achieved_per_s"] / 1000 for s in ing["sweep"]]), "target": (k, k)}
        cpu = {"server": (k, [s["resources"]["server_cpu_avg_pct"] for s in ing["sweep"]])}
        panels = [("acknowledged", "target (k trades/s)", "k trades/s", achieved)]
        plot(
            img / "perf-ingest.png",
            "Ingest sweep over /ws/ingest",
            panels + [("CPU", "target (k trades/s)", "% of one core", cpu)],
        )
    if fan := r.get("fanout"):
        subs = [s["subscribers"]["subscriptions"] for s in fan["sweep"]]
        lat = {q: (subs, [s["latency_ms"][q] for s in fan["sweep"]]) for q in ("p50", "p99", "max")}
        lat["target p99"] = (
            subs,
            [(fan["headline"]["config"]["push_interval_ms"] or 0) + TARGETS["slack_ms"]] * len(subs),
        )
        cpu = {w: (subs, [s["resources"][f"{w}_cpu_avg_pct"] for s in fan["sweep"]]) for w in ("server", "loadgen")}
        panels = [("trade → pushed bar", "subscribers", "ms", lat), ("CPU", "subscribers", "% of one core", cpu)]
        plot(
            img / "perf-fanout.png",
            f"Fan-out sweep ({fan['headline']['config'].get('workers', 0)} edge workers)",
            panels,
        )
    if (s := r.get("soak")) and s.get("curve"):
        minutes = [p["minute"] for p in s["curve"]]
        rss = {"server RSS (median of the minute)": (minutes, [p["rss_mb"] for p in s["curve"]])}
        rss["bound"] = (minutes, [s["bound"]["bound_mb"]] * len(minutes))
        plot(img / "perf-soak.png", "Soak: memory over the run", [("server RSS", "minute", "MB", rss)])


# --- files ---------------------------------------------------------------------------------------


def load_results(results_dir: Path = RESULTS_DIR) -> dict[str, Any]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))}


def write(results: dict[str, Any], doc: Path = DOC, *, quick: bool = False) -> Path:
    """The report, and its charts in ``img/`` beside it."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    charts(results, doc.parent / "img")
    doc.write_text(render(results, quick=quick))
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="the folder of results JSON files")
    p.add_argument("--out", type=Path, default=DOC, help="the Markdown file (its charts go to img/ beside it)")
    args = p.parse_args(argv)
    print(f"report: {write(load_results(args.results), args.out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
