"""The InfluxDB part of ``docs/performance.md``: the section, the sizing bullets and the
chart, from ``bench/results/influx.json`` (written by :mod:`bench.influx`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.influx import LABEL, PER_SECOND_BUCKET, STRATEGIES


def keeps_up(r: dict[str, Any]) -> bool:
    """InfluxDB kept up with a rate: everything acknowledged, stored, and stored about as
    fast as it came (the writer had drained within 2 s of the publisher stopping)."""
    return r["lost"] == 0 and r["acked_per_s"] >= 0.97 * r["target_per_s"] and r["drain_s"] <= 2.0


def best_ingest(r: dict[str, Any]) -> dict[str, Any] | None:
    ok = [i for i in r.get("ingest", []) if keeps_up(i)]
    return max(ok, key=lambda i: i["target_per_s"]) if ok else None


def _mb(b: int | None) -> str:
    return "–" if b is None else f"{b / 2**20:,.0f} MB"


def _disk(r: dict[str, Any]) -> dict[str, int | None]:
    disk = r.get("disk_compacted") or r.get("disk_after_restart") or r.get("disk") or {}
    ids = r.get("bucket_ids", {})
    return {name: disk.get(bid) if bid else None for name, bid in ids.items()} | {"total": disk.get("total")}


def section(r: dict[str, Any], results: dict[str, Any], charts: dict[str, str]) -> str:
    """``## On InfluxDB 2 itself`` for docs/performance.md."""
    from bench.figures import RES_LABEL, cell, ms, n, ratio
    from loadgen.stats import markdown_table

    spec, load, back, hist = r["spec"], r["load"], r["backfill"], r["history"]
    trades = load["trades"]
    out = ["## On InfluxDB 2 itself"]
    if charts.get("influx"):
        out.append(f"![InfluxDB: tiers vs aggregation at request time]({charts['influx']})")
    full = spec["trades"] >= 50_000_000
    runs = sum(e["runs"] for e in back["runs"].values())
    per_run_s = back["seconds"] / max(runs, 1)
    scale = (
        "the POC's full 50M-trade year"
        if full
        else f"**{n(trades)} trades over {spec['days']:g} days** ({', '.join(spec['symbols'])}, seed "
        f"{spec['seed']}), not the POC's 50M over a year. Backfilling through InfluxDB's tasks is bounded by "
        f"task runs more than by trades: {spec['days']:g} days are {runs} manual runs (one chunk each), "
        f"{per_run_s:.1f} s per run on average here, so the backfill alone took "
        f"{back['seconds'] / 60:.0f} min at {trades / spec['days'] / (50e6 / 365):.0%} of the POC's trade "
        "density — beyond the ~15 minutes this "
        "step may take, with 50M it would be longer still (each run reading "
        f"{50e6 / max(trades, 1):,.0f}× the trades; loading them would take ≈ "
        f"{50e6 / (load.get('append_trades_per_s') or load['trades_per_s']) / 60:,.0f} min at the measured "
        "append rate). A full year was kept, at lower density, so that the long ranges (1 year of daily bars) "
        "are measured"
    )
    out.append(
        f"Measured on {r['measured_at'][:10]} by `python -m bench.influx` (step `influx` of `make bench`) against a "
        f"real InfluxDB {r['influxd'].get('version') or '2.x'} (`influxd` on 127.0.0.1, its data on the same disk, "
        f"sharing the 2 cores with tvflux and the load generator). Dataset: {scale}. The embedded store's "
        f"figures above are for {n((results.get('dataset') or {}).get('trades_written'))} trades; ratios below are "
        "within the InfluxDB run."
    )
    ing = r.get("ingest") or []
    if ing:
        best = best_ingest(r)
        rows = [
            [
                f"{i['target_per_s']:,}",
                n(i["acked_per_s"]),
                n(i["stored_per_s"]),
                n(i["trades_acked"]),
                n(i["stored_in_influxdb"]),
                n(i["lost"]),
                n(i["backlog_at_end"]),
                f"{i['drain_s']:g}",
                n(i.get("influxd_cpu_pct")),
                n(i.get("influxd_rss_peak_mb")),
                n(i.get("server_cpu_pct")),
                "yes" if keeps_up(i) else "**no**",
            ]
            for i in ing
        ]
        out.append("### Ingest into InfluxDB through the service")
        out.append(
            "`tvflux serve` with `TVFLUX_STORE=influx` (its tasks scheduled, as deployed) under the load generator: "
            "`/ws/ingest`, msgpack frames of 10,000 trades, 2 connections, "
            f"{ing[0]['measure_s']:g} s per rate after a warm-up. *Stored/s* is end to end: the trades counted **in "
            "InfluxDB** (Flux `count()` after the run) over the wall time from the first trade sent to the last one "
            "stored; *backlog* is what the writer still held when publishing stopped (acknowledged, in the spool), "
            "*drain* how long InfluxDB then needed for it."
        )
        out.append(
            markdown_table(
                rows,
                [
                    "target/s",
                    "acked/s",
                    "stored/s",
                    "acked",
                    "in InfluxDB",
                    "lost",
                    "backlog",
                    "drain s",
                    "influxd CPU %",
                    "influxd RSS MB",
                    "tvflux CPU %",
                    "kept up",
                ],
            )
        )
        if best:
            out.append(
                f"**InfluxDB kept up with {best['target_per_s']:,} trades/s** ({n(best['stored_per_s'])}/s "
                f"stored end to end, {2 * best['target_per_s']:,} field values/s) and lost nothing at any "
                "rate"
                + (
                    " — the highest rate this sweep tried, so not a ceiling (`make bench` now sweeps up to 300,000/s)"
                    if best is ing[-1]
                    else ": above what it keeps up with, acknowledgements stay fast (the spool takes them) and "
                    "the backlog is written afterwards"
                )
                + ". Everything shares this 2-core box, "
                f"against {n(((results.get('ingest') or {}).get('headline') or {}).get('ingest', {}).get('achieved_per_s'))}"
                "/s into the embedded store."
            )
    out.append("### Loading and backfilling the dataset")
    tiers_rows = [
        [t, str(e["runs"]), n(back["tier_rows"].get(t)), n(e["run_ms_p50"]), n(e["run_ms_max"])]
        for t, e in back["runs"].items()
    ]
    out.append(
        markdown_table(
            [
                ["trades written (`InfluxStore.append`, 4 gzip'd requests of 5,000 lines in flight)", n(trades)],
                ["per-second bars of " + hist["symbol"] + " (own bucket)", n(load["per_second_bars"])],
                ["load time (trades + per-second bars)", f"{load['seconds']:g} s — {n(load['trades_per_s'])} trades/s"],
                [
                    "… of which writing trades",
                    f"{load['append_seconds']:g} s — {n(load['append_trades_per_s'])} trades/s",
                ],
                [
                    "backfill by the Flux tasks (all tiers, from empty)",
                    f"**{back['seconds']:g} s — {n(back['trades_per_s'])} trades/s**",
                ],
            ],
            ["", ""],
        )
    )
    out.append(
        "The backfill is InfluxDB's own tasks, run back to back as manual runs by the service's run loop "
        "(`InfluxStore.run_downsampling`, the code behind `POST /api/downsampling/run`), one chunk per run "
        "(1m: 1 day, 5m: 3 days, 15m: 7 days, 1h: 14 days, 4h: 30 days, 1d: 90 days), each run waited for:"
    )
    out.append(markdown_table(tiers_rows, ["tier", "runs", "bars", "run p50 ms", "run max ms"]))
    emb = results.get("backfill") or {}
    if emb.get("seconds"):
        out.append(
            f"The embedded store backfills its {n(emb.get('trades'))} trades in {emb['seconds']:g} s "
            f"({n(emb.get('trades_per_s'))} trades/s): DuckDB aggregates a day in one vectorised query, while "
            "each task run costs InfluxDB a Flux query per aggregate and a write back through its own "
            "write path."
        )
    out.append("### History latency on InfluxDB: tiers vs aggregation at request time")
    out.append(
        f"Requests for {hist['symbol']} ending at the dataset's end, three ways, answers checked bar by bar against "
        f"*tiers* (mismatches: {len(hist['mismatches'])}): *tiers* = `InfluxStore.bars`, the path behind `/api/bars` "
        "(stored tier bars below the watermark, Flux streamed as CSV, folded in Python); *per-second* = the users' "
        f"approach, per-second bars in their own bucket aggregated at request time by Flux (`aggregateWindow` "
        "with first/max/min/last/sum, one pushed-down `from()` per field); *raw* = the raw trades aggregated the "
        "same way. p50 / p95 ms, ratio of p50 to tiers; the last column is the embedded store's tiers for the same "
        "request (its own dataset)."
    )
    emb_hist = results.get("history") or {}

    def row(kind: str, res: str, label: str) -> list[str]:
        t = cell(hist, kind, "tiers", res, label)
        cols = [RES_LABEL.get(res, res), n(t["bars"]) if t else "–"]
        for s_ in STRATEGIES:
            e = cell(hist, kind, s_, res, label)
            if not e:
                cols.append("–")
                continue
            text = f"{ms(e['p50'])} / {ms(e['p95'])}"
            if s_ != "tiers":
                text += f" ({ratio(e.get('ratio_to_tiers'))})"
            if e.get("n", 5) < 5:
                text += f" n={e['n']}"
            cols.append(text)
        e = cell(emb_hist, kind, "tiers", res, label) if emb_hist else None
        cols.append(ms(e["p50"]) if e else "–")
        return cols

    fresh = r.get("history_fresh")
    if fresh:
        pairs = [
            (cell(fresh, k, "tiers", e["resolution"], e["range"]), e)
            for k in ("chart", "cells")
            for e in hist[k]
            if e["strategy"] == "tiers"
        ]
        slower = sorted(f["p50"] / e["p50"] for f, e in pairs if f and e["p50"] and f["p50"])
        if slower and r.get("status_read_ms_before"):
            out.append(
                f"These were measured once InfluxDB had compacted its shards (`python -m bench.influx --history-only`, "
                f"on {r.get('history_measured_at', '?')[:16].replace('T', ' ')} UTC), with the bounded status read and "
                "`keep()` bar queries described below. `history_fresh` in the results holds the reads measured "
                "straight after the backfill, with the code before those fixes: not comparable with these."
            )
        elif slower:
            out.append(
                f"These were measured once InfluxDB had compacted its shards (`python -m bench.influx --history-only`, "
                f"on {r.get('history_measured_at', '?')[:16].replace('T', ' ')} UTC). Measured straight after the "
                "backfill, while the tier bars the tasks had just written were still spread over many small files in "
                "every shard, the same tier reads were slower: median "
                f"{slower[len(slower) // 2]:.1f}× and up to {slower[-1]:,.0f}× the latencies below "
                "(`history_fresh` in the results) — a backfill or catch-up leaves history slow until InfluxDB "
                "compacts (by default after 4 hours without writes to a shard)."
            )
    status_ms = r.get("status_read_ms")
    before_ms = r.get("status_read_ms_before")
    runs = sum(e["runs"] for e in back["runs"].values())
    load = r.get("load_avg_history")
    if load:
        out.append(
            f"Machine load while measuring: load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
            "(1 / 5 / 15 min) on 2 cores — other work (tests, other benchmarks) was running at the same "
            "time, so the spread (p95) is partly theirs."
        )
    if status_ms and before_ms:
        out.append(
            "**The status read is bounded now.** `InfluxStore.bars` re-reads the tasks' state (watermarks, "
            "cursors, leases, run stats, pending dirty markers) once its one-second cache has expired; it used to "
            "read every dirty marker of the last 7 days and `max()` every watermark point, and after this year's "
            f"{runs} task runs (and the 26,280 markers loading the year left) that took "
            f"{', '.join(f'{v:,.0f}' for v in before_ms)} ms, stalling the first request of every cell. Now it is "
            "one query of pushed-down `last()` per series plus, per tier, the count / least start / greatest end "
            "of the markers after its cursor — "
            f"{', '.join(f'{v:,.0f}' for v in status_ms)} ms on the same data, independent of the number of runs — "
            "and it runs in the background while requests answer from the (safe: only ever lagging) cached "
            "watermarks. The bar queries also return `_time, _field, _value` as stored (`keep()`) instead of a "
            "per-row Flux `map()`, which was most of a chart opening's time; the per-second and raw strategies "
            "here were changed the same way, so the three columns stay comparable (the earlier figures of all three "
            "included that `map()`)."
        )
    elif status_ms:
        out.append(
            "**Read the tier rows with care: many *tiers* cells with n=1 are one stall, not the tier read.** "
            "`InfluxStore.bars` re-reads the tasks' state (watermarks, leases, run stats) from the status bucket "
            "when its one-second cache has expired — which is the case for the first request of every cell here — "
            f"and after this year's {runs} task runs that read took "
            f"{', '.join(f'{v:,.0f}' for v in status_ms)} ms (timed on its own, same data). A cell whose first "
            "request took over a second keeps it as its only sample. The chart-opening rows (several samples, "
            "most within the cache) show the tier read itself. Cutting that status read (a narrower range, or "
            "keeping the watermarks in the service) is the first thing to fix for history on InfluxDB."
        )
    head = ["resolution", "bars", *[LABEL[s_] for s_ in STRATEGIES], "embedded tiers p50"]
    out.append("#### A chart opening: the last 300 bars")
    out.append(markdown_table([row("chart", res, "300 bars") for res in hist["resolutions"]], head))
    for label in hist["ranges"]:
        out.append(f"#### Range: {label}")
        out.append(markdown_table([row("cells", res, label) for res in hist["resolutions"]], head))
    # what it means, computed
    big = max(hist["ranges"], key=lambda k: hist["ranges"][k])
    t1d, s1d, r1d = (cell(hist, "cells", s_, "1D", big) for s_ in STRATEGIES)
    t1m, s1m = cell(hist, "cells", "tiers", "1", big), cell(hist, "cells", "influx_1s", "1", big)
    charts_t = [cell(hist, "chart", "tiers", res, "300 bars") for res in hist["resolutions"]]
    charts_s = [cell(hist, "chart", "influx_1s", res, "300 bars") for res in hist["resolutions"]]
    meaning = ["### What the InfluxDB numbers mean"]
    if t1d and s1d and r1d:
        if (s1d.get("ratio_to_tiers") or 0) >= 1:
            meaning.append(
                f"* **Pre-downsampling wins on InfluxDB too**: daily bars over {big} come from the `1d` tier in "
                f"{ms(t1d['p50'])} ms, against {ms(s1d['p50'])} ms aggregating per-second bars in Flux "
                f"({ratio(s1d['ratio_to_tiers'])}) and {ms(r1d['p50'])} ms from raw trades "
                f"({ratio(r1d['ratio_to_tiers'])})."
            )
        else:
            meaning.append(
                f"* **In this run the tiers did not win on InfluxDB**: daily bars over {big} took {ms(t1d['p50'])} ms "
                f"from the `1d` tier (n={t1d['n']}) against {ms(s1d['p50'])} ms aggregating per-second bars in Flux "
                f"and {ms(r1d['p50'])} ms from raw trades. The tier read itself is a few hundred rows; what the "
                "tiers path paid is "
                + (
                    "one Flux query per segment"
                    if before_ms
                    else "the status-bucket read above (seconds, "
                    "on every request after a one-second pause), plus one Flux query per segment"
                )
                + ". Per-second bars and raw trades at this density "
                "(≈ 5 trades per second at most) are small enough for Flux's pushed-down `aggregateWindow` to "
                "answer long ranges in a few hundred ms; at the POC's density they would be ten times larger, the "
                "tiers not."
            )
    if all(charts_t) and all(charts_s):
        lo_t, hi_t = min(e["p50"] for e in charts_t), max(e["p50"] for e in charts_t)
        lo_s, hi_s = min(e["p50"] for e in charts_s), max(e["p50"] for e in charts_s)
        meaning.append(
            f"* **A chart opening costs {ms(lo_t)}–{ms(hi_t)} ms from the tiers** at every resolution, against "
            f"{ms(lo_s)}–{ms(hi_s)} ms from per-second bars (growing with the span the 300 bars cover). Every request "
            "to InfluxDB costs a Flux query over HTTP — parsing, planning, CSV — so even tiny answers take "
            "milliseconds, several times the embedded store's in-process read."
        )
    if t1m and s1m:
        meaning.append(
            f"* **Large answers are dominated by building them**: {big} of 1-minute bars ({n(t1m['bars'])} bars) takes "
            f"{ms(t1m['p50'])} ms from the `1m` tier against {ms(s1m['p50'])} ms from per-second bars — InfluxDB "
            "streams one CSV row per field per bar either way; paging (`countback`) is what bounds these requests."
        )
    out.append("\n".join(meaning))
    d = _disk(r)
    res_ = r.get("resources", {})
    peaks = res_.get("peak_rss_mb", {})
    per_trade = d.get("trades") / trades if d.get("trades") and trades else None
    out.append("### InfluxDB's disk and memory")
    out.append(
        markdown_table(
            [
                [
                    "raw trades bucket",
                    f"{_mb(d.get('trades'))} ({per_trade:.1f} bytes per trade)" if per_trade else _mb(d.get("trades")),
                ],
                ["tier bars bucket (6 tiers)", _mb(d.get("bars"))],
                ["status bucket", _mb(d.get("tvflux_status"))],
                [f"per-second bars of {hist['symbol']} (the users' layout)", _mb(d.get(PER_SECOND_BUCKET))],
                ["engine directory in all (also the ingest runs' buckets)", _mb(d.get("total"))],
                [
                    "influxd peak RSS: ingest / load / backfill / history",
                    " / ".join(
                        n(max([v for k, v in peaks.items() if k.startswith(p)], default=None)) + " MB"
                        for p in ("ingest", "load", "backfill", "history")
                    ),
                ],
                ["influxd RSS at the end", f"{n(r.get('influxd_rss_end_mb'))} MB"],
                [
                    "influxd CPU: load / backfill / history (% of one core)",
                    " / ".join(n(res_.get("cpu_pct", {}).get(p)) for p in ("load", "backfill", "history")),
                ],
            ],
            ["", ""],
        )
    )
    out.append(
        "Sizes are InfluxDB's files once it has fully compacted its shards (restarted with "
        "`--storage-compact-full-write-cold-duration 5s` at the end, instead of the default 4 h of quiet); "
        f"before that compaction the engine directory was {_mb((r.get('disk_after_restart') or {}).get('total'))}. "
        "The embedded store keeps "
        f"trades and tiers in {_mb((results.get('dataset') or {}).get('db_bytes'))} for "
        f"{n((results.get('dataset') or {}).get('trades_written'))} trades."
    )
    return "\n\n".join(out)


def sizing_lines(r: dict[str, Any]) -> list[str]:
    """The measured bullets of "InfluxDB 2 sizing" in the recommendations."""
    from bench.figures import n

    best = best_ingest(r)
    back = r["backfill"]
    d = _disk(r)
    trades = r["load"]["trades"]
    lines = []
    if best:
        lines.append(
            f"* **Writes (measured)**: on this 2-core box, with tvflux and the load generator on the same cores, "
            f"InfluxDB {r['influxd'].get('version')} kept up with {best['target_per_s']:,} trades/s through the service "
            f"({2 * best['target_per_s']:,} field values/s) with nothing lost (the highest rate measured: a "
            "lower bound); when InfluxDB falls behind, the spool absorbs the difference and the backlog drains "
            "afterwards. A dedicated InfluxDB node with its own cores is needed "
            "for rates near the 300,000/s target — size it by re-running `python -m bench.influx` there."
        )
    lines.append(
        f"* **Backfill (measured)**: the Flux tasks rebuilt every tier at {n(back['trades_per_s'])} trades/s "
        f"({back['seconds']:g} s for {n(trades)} trades), dominated by the `1m` task (one run per day of trades). "
        "Rebuilding a year of tiers after an outage therefore takes minutes to hours, not seconds: keep the raw "
        "trades' retention long enough to cover it, and let the tasks catch up one chunk per run."
    )
    if d.get("trades"):
        lines.append(
            f"* **Disk (measured)**: {d['trades'] / trades:.1f} bytes per raw trade in InfluxDB's TSM files; "
            f"the six tiers add {_mb(d.get('bars'))} for the whole dataset."
        )
    lines.append(
        "* **Series cardinality is tiny** (symbols × measurements: 3 symbols × 7 measurements here), far "
        "below any guideline, so memory goes to the write cache and query working sets rather than the "
        "series index."
    )
    lines.append(
        "* **Retention policies**: a bucket for raw trades with a 30–90-day retention, the `1m` measurement "
        "in a bucket with 1–2 years, the other tiers in a bucket without expiry."
    )
    return lines


def chart(r: dict[str, Any], path: Path) -> None:
    from bench.figures import RES_LABEL, cell
    from bench.plotting import pyplot

    plt = pyplot()
    hist = r["history"]
    big = max(hist["ranges"], key=lambda k: hist["ranges"][k])
    colors = {"tiers": "#1b9e77", "influx_1s": "#d95f02", "raw": "#7570b3"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=False)
    for ax, (kind, label, title) in zip(
        axes, (("chart", "300 bars", "A chart opening: the last 300 bars"), ("cells", big, f"Range: {big}"))
    ):
        xs = [RES_LABEL.get(x, x) for x in hist["resolutions"]]
        for s_ in STRATEGIES:
            ys = [(cell(hist, kind, s_, res, label) or {}).get("p50") for res in hist["resolutions"]]
            ax.plot(
                xs,
                [y if y is not None else float("nan") for y in ys],
                marker="o",
                ms=3,
                color=colors[s_],
                label=LABEL[s_],
            )
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("resolution")
        ax.set_ylabel("p50 latency (ms, log)")
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"History on InfluxDB {r['influxd'].get('version') or ''} ({hist['symbol']}, "
        f"{r['load']['trades']:,} trades over {r['spec']['days']:g} days)"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
