"""The text of ``docs/performance.md``: sections built from the results, with the
verdicts and the sentences that quote figures computed from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.figures import (
    FAN_HEAD,
    LOAD_HEAD,
    RES_LABEL,
    TARGETS,
    cell,
    evaluate,
    fan_row,
    fanout_marginal_us,
    history_tables,
    load_row,
    ms,
    n,
    ratio,
)
from loadgen.stats import markdown_table

NOTES = Path(__file__).with_name("optimisations.md")


def document(results: dict[str, Any], charts: dict[str, str], *, quick: bool = False) -> str:
    parts = [
        _title(results, quick),
        _summary(results),
        _machine(results),
        _method(results),
        _dataset(results),
        _history(results, charts),
        _chart_requests(results),
        _influx(results, charts),
        _ingest(results, charts),
        _fanout(results, charts),
        _live_history(results),
        _soak(results, charts),
        _optimisations(),
        _recommendations(results),
        _reproduce(),
    ]
    return "\n\n".join(p.strip() for p in parts if p and p.strip()) + "\n"


def _title(results: dict[str, Any], quick: bool) -> str:
    m = results.get("machine", {})
    warn = (
        (
            "\n\n> **Quick mode**: a 1M-trade month and seconds-long runs — a smoke test of the pipeline, not "
            "the real figures (those are in `docs/performance.md`).\n"
        )
        if quick
        else ""
    )
    return f"""# tvflux performance

Measured on {m.get("measured_at", "?")[:10]} by `make bench` (`python -m bench.run`), which regenerates
every number, table and chart here from `bench/results/*.json`. Nothing in this document is
typed by hand except the prose and the optimisation log.{warn}"""


def _summary(results: dict[str, Any]) -> str:
    rows = evaluate(results)
    out = ["## Summary: the POC's answer"]
    hist = results.get("history")
    if hist:
        big = max(hist["ranges"].values())
        label = next(k for k, v in hist["ranges"].items() if v == big)
        t = cell(hist, "cells", "tiers", "1D", label)
        d = cell(hist, "cells", "duckdb_1s", "1D", label)
        r = cell(hist, "cells", "redis_1s", "1D", label)
        w = cell(hist, "cells", "raw", "1D", label)
        m1 = cell(hist, "cells", "tiers", "1", label)
        m1d = cell(hist, "cells", "duckdb_1s", "1", label)
        if t and d:
            verdict_text = (
                "**Yes — pre-downsampling wins, and by more the coarser the bars and the longer the range.**"
                if (d["ratio_to_tiers"] or 0) >= 10
                else "**Pre-downsampling wins, but only modestly at this dataset size.**"
            )
            sentence = (
                f"{verdict_text} "
                f"Daily bars over {label} of {hist['symbol']} come from tvflux's `1d` tier in "
                f"{ms(t['p50'])} ms (median); aggregating that range's per-second bars at request time takes "
                f"{ms(d['p50'])} ms in the same DuckDB ({ratio(d['ratio_to_tiers'])})"
            )
            if r:
                sentence += (
                    f" and {ms(r['p50'])} ms from Redis with the aggregation in the application "
                    f"({ratio(r['ratio_to_tiers'])})"
                )
            if w:
                sentence += f"; from raw trades, {ms(w['p50'])} ms ({ratio(w['ratio_to_tiers'])})"
            sentence += "."
            if m1 and m1d:
                sentence += (
                    f" The advantage shrinks where the answer itself is large: {label} of 1-minute bars "
                    f"({n(m1['bars'])} bars) takes {ms(m1['p50'])} ms from the `1m` tier against "
                    f"{ms(m1d['p50'])} ms from per-second bars ({ratio(m1d['ratio_to_tiers'])}) — building "
                    "that many bars dominates, whichever way they are computed; charts page such "
                    "ranges anyway (`countback`)."
                )
            out.append(sentence)
    fan = results.get("fanout")
    if fan and fan.get("headline"):
        knee = fanout_knee(fan)
        h = fan["headline"]
        mux = fan.get("multiplexed")
        ing = results.get("ingest") or {}
        best = max(
            (
                r["ingest"]["achieved_per_s"]
                for r in ing.get("sweep", [])
                if r["ingest"]["trades_sent"] == r["ingest"]["trades_acked"]
            ),
            default=None,
        )
        sent = ""
        if ing.get("headline"):
            sent = (
                f"**Live ingest meets its target with room to spare**: "
                f"{n(ing['headline']['ingest']['achieved_per_s'])} trades/s for a minute without loss"
                + (
                    f", and {n(best)} trades/s for {ing['sweep'][-1]['measure_s']:.0f} s in the sweep. "
                    if best
                    else ". "
                )
            )
        workers = h["config"].get("workers", 0)
        sent += (
            f"**Fan-out**: {h['subscribers']['subscriptions']:,} one-connection subscribers with {workers} edge "
            f"workers get their pushes with p99 {ms(h['latency_ms']['p99'])} ms (target "
            f"{(h['config']['push_interval_ms'] or 0) + TARGETS['fanout_slack_ms']} ms) at "
            f"{h['resources'].get('server_cpu_us_per_frame') or 0:.1f} µs of server CPU per pushed frame"
            + (f"; the target holds up to {knee:,} in the sweep" if knee else "")
        )
        if mux:
            sent += (
                f" (and {mux['subscribers']['subscriptions']:,} subscriptions multiplexed "
                f"{mux['config']['subs_per_conn']} per connection, p99 {ms(mux['latency_ms']['p99'])} ms)"
            )
        sent += " — see the fan-out section for 1 vs 2 workers and the projection to bigger edge hosts."
        out.append(sent)
    out.append(markdown_table(rows, ["target (2-core machine)", "measured", "verdict"], align="lll"))
    others = _interference(results)
    if others:
        out.append(others)
    return "\n\n".join(out)


def _interference(results: dict[str, Any]) -> str:
    busy = []
    for step in ("ingest", "fanout", "live_history"):
        data = results.get(step) or {}
        for key in ("headline", "loaded", "idle"):
            run = data.get(key)
            if run and (run["resources"].get("others_cpu_avg_pct") or 0) >= 20:
                busy.append(f"{step} {key}: {run['resources']['others_cpu_avg_pct']:.0f}%")
    if not busy:
        return ""
    return (
        "**The machine was shared** with other work while measuring (average CPU of other processes, "
        "in % of one core: " + ", ".join(busy) + "). Those runs are pessimistic; the per-run tables show "
        "the interference next to every figure."
    )


def _machine(results: dict[str, Any]) -> str:
    m = results.get("machine")
    if not m:
        return ""
    pk = m.get("packages", {})
    rows = [
        ["CPU", f"{m.get('cpu_model')} — {m.get('cores')} logical cores"],
        ["memory", f"{m.get('memory_gib')} GiB"],
        ["OS", m.get("os")],
        ["Python", m.get("python")],
        ["packages", ", ".join(f"{k} {v}" for k, v in pk.items() if v)],
        ["redis-server", m.get("redis_server")],
        ["tvflux commit", f"{m.get('git_commit')}{' + uncommitted changes' if m.get('working_tree_dirty') else ''}"],
        ["load average at start", " / ".join(f"{x:.2f}" for x in m.get("load_average_at_start", []))],
    ]
    return (
        "## The machine\n\n"
        + markdown_table(rows, ["", ""], align="ll")
        + (
            "\n\nThe load generator, the server, DuckDB's threads and Redis all share these cores: every "
            "figure below is for *everything on one small box*. CPU is reported in % of one core "
            "(200 % = both cores)."
        )
    )


def _method(results: dict[str, Any]) -> str:
    hist = results.get("history") or {}
    reps, budget = hist.get("reps", 15), hist.get("budget_s", 3.0)
    return _METHOD.replace("{reps}", str(reps)).replace("{budget}", f"{budget:g}")


_METHOD = """## Method

* **Dataset** — `tvflux generate` writes a seeded synthetic year (regime-switching GBM prices,
  Poisson arrivals, log-normal sizes) for BTCUSD, ETHUSD and LTCUSD into the embedded DuckDB
  store; `tvflux downsample` backfills every tier (`1m 5m 15m 1h 4h 1d`, each from the tier
  below). It is built once under `bench/data/` and reused while its description matches.
* **History strategies** — all five answer the same request (OHLCV bars of resolution R whose
  start is in `[to − range, to)`, `to` = the dataset's end) and their answers are checked
  against each other bar by bar:
  * *tvflux tiers* — `EmbeddedStore.bars`, the path behind `/api/bars`, served from the largest
    stored tier dividing R;
  * *tvflux HTTP* — the same request end to end through `tvflux serve` (`GET /api/bars`,
    validation, the writer's pending trades, JSON), client on the same machine;
  * *per-second, DuckDB* — the users' current approach inside the same engine: a `bars_1s`
    table (built once from the trades, stored time-ordered like the tiers) aggregated by SQL at
    request time. Same file, same connection, same worker-thread hop as *tiers*: the only
    difference is pre-downsampling;
  * *per-second, Redis* — the users' approach on a real NoSQL store: Debian's `redis-server`
    (persistence off), one sorted set per symbol, score = second, member = the packed bar;
    a request fetches the range in pages of 100,000 (`ZRANGE … BYSCORE LIMIT`, hiredis parser)
    and aggregates in the application with numpy — the most favourable application-side code;
  * *raw trades* — the trades aggregated at request time.
* **Repetitions** — each cell runs once per strategy untimed, then the strategies take
  turns until each has {reps} samples or spent {budget} s (3 samples for 3-month and 1-year
  ranges of the slow strategies; chart requests get 30), so outside load hits them alike;
  tables give the median and p95 and the ratio of medians to *tiers* measured in the same run.
* **Load** — `tvflux-loadgen` (this repository) spawns `tvflux serve` with a scratch data dir
  and publishes pre-encoded frames (msgpack or JSON records written by numpy, no per-trade
  Python) over `/ws/ingest`, pipelined (4 unacknowledged frames per connection), paced to a
  target rate; subscribers are WebSocket connections with one subscription each (like one
  browser chart) spread round-robin over symbols × the six tier resolutions.
  *Latency* is from the moment a *marker trade* is handed to the socket to the moment a
  subscriber receives the first pushed bar that reflects it: markers are ordinary trades
  priced far above the market (their price is their send time in ms, strictly increasing),
  sent 20 times a second per symbol on their own connection, so a bar whose `high` reaches a
  marker's price reflects that marker. Every subscriber measures every marker of its symbol.
  *Lost* = sent − acknowledged; the loadgen also checks the server's own count of accepted
  trades and that its writer queue drained into the store. CPU and RSS come from psutil,
  sampled every second for the server, the generator and the whole machine."""


def _dataset(results: dict[str, Any]) -> str:
    d, b = results.get("dataset"), results.get("backfill")
    if not d:
        return ""
    spec = d["spec"]
    rows = [
        [
            "dataset",
            f"{d['trades_written']:,} trades, {spec['days']:g} days, {', '.join(spec['symbols'])}, seed {spec['seed']}",
        ],
        [
            "DuckDB file",
            f"{d['db_bytes'] / 2**20:,.0f} MB with the tiers ({d['db_bytes'] / d['trades_written']:.1f} "
            "bytes per trade)",
        ],
        [
            "generation (`tvflux generate`)",
            f"{d['generate']['seconds']} s — {d['generate']['trades_per_s']:,} trades/s, "
            f"peak RSS {d['generate']['peak_rss_mb']:,.0f} MB",
        ],
        [
            "backfill at build (`tvflux downsample`)",
            f"{d['backfill']['seconds']} s — {d['backfill']['trades_per_s']:,} "
            f"trades/s, peak RSS {d['backfill']['peak_rss_mb']:,.0f} MB",
        ],
    ]
    if b:
        rows.append(
            [
                "backfill re-measured (fresh tiers on a copy)",
                f"{b['seconds']} s — {b['trades_per_s']:,} trades/s, "
                f"peak RSS {b['peak_rss_mb']:,.0f} MB, "
                f"CPU {b['cpu_s']} s",
            ]
        )
        rows.append(["tier rows", ", ".join(f"{k} {v:,}" for k, v in b["tier_rows"].items())])
    h = results.get("history") or {}
    if h.get("bars_1s"):
        rows.append(["per-second bars (`bars_1s`, all symbols)", f"{h['bars_1s']['rows']:,} rows"])
    if h.get("redis"):
        r = h["redis"]
        rows.append(
            [
                "Redis (per-second bars of " + ", ".join(r["symbols"]) + ")",
                f"{r['bars_loaded']:,} bars loaded in {r['load_seconds']} s, used_memory "
                f"{r['redis_used_memory_mb']:,.0f} MB",
            ]
        )
    built = d.get("built_at", "?")
    return (
        "## Dataset, generation and backfill\n\n"
        + markdown_table(rows, ["", ""], align="ll")
        + f"\n\nGeneration and the first backfill were timed when the dataset was built ({built}); the "
        "backfill is re-timed on every run on a copy whose tiers are emptied. Backfill rate is the raw "
        "trades divided by the time to build every tier from them (DuckDB aggregates the 1m tier from "
        "the trades, one day per window, and each higher tier from the one below)."
    )


def _history(results: dict[str, Any], charts: dict[str, str]) -> str:
    hist = results.get("history")
    if not hist:
        return ""
    out = ["## History latency: pre-downsampled tiers vs aggregation at request time"]
    if "history" in charts:
        out.append(f"![history latency by resolution and range]({charts['history']})")
    if "history300" in charts:
        out.append(f"![the last 300 bars]({charts['history300']})")
    out.append(
        f"Requests for {hist['symbol']}, ending at the dataset's end. Total bench time "
        f"{hist.get('seconds', '?')} s. Mismatching answers between strategies: "
        f"{len(hist['mismatches'])}." + (f" ({hist['mismatches'][:3]})" if hist["mismatches"] else "")
    )
    out.extend(history_tables(hist))
    out.append(_history_meaning(hist))
    return "\n\n".join(out)


def _chart_requests(results: dict[str, Any]) -> str:
    """``bench/chart.py``: chart open at the live edge (hot window), scroll-back, long ranges, peers."""
    if not results.get("chart"):
        return ""
    from bench.chart import render_section

    return render_section(results["chart"])


def _history_meaning(hist: dict[str, Any]) -> str:
    big = max(hist["ranges"].values())
    label = next(k for k, v in hist["ranges"].items() if v == big)
    lines = ["### What the numbers mean"]
    tiers_chart = [e["p50"] for e in hist["chart"] if e["strategy"] == "tiers"]
    http_chart = [e["p50"] for e in hist["chart"] if e["strategy"] == "http"]
    if tiers_chart:
        lines.append(
            f"* **A chart opening costs about the same at every resolution with tiers** "
            f"({ms(min(tiers_chart))}–{ms(max(tiers_chart))} ms in the store"
            + (f", {ms(min(http_chart))}–{ms(max(http_chart))} ms end to end over HTTP" if http_chart else "")
            + "): 300 rows of one table, whatever the bar size. At request time the cost grows with the "
            "span covered instead — 300 daily bars are 300 days of per-second bars."
        )
    d1 = cell(hist, "cells", "duckdb_1s", "1D", label)
    m1 = cell(hist, "cells", "duckdb_1s", "1", label)
    if d1 and m1:
        lines.append(
            f"* **Per-second aggregation costs roughly the same for every resolution over a given range** "
            f"({ms(m1['p50'])} ms for 1m and {ms(d1['p50'])} ms for 1d over {label} in DuckDB): the work "
            "is reading the range's per-second rows. Tiers read one row per answered bar, so the ratio "
            "grows with the bar size."
        )
    r1 = cell(hist, "cells", "redis_1s", "1D", label)
    if r1 and d1:
        lines.append(
            f"* **Redis is slower than DuckDB for the same per-second data** ({ms(r1['p50'])} vs "
            f"{ms(d1['p50'])} ms for 1d over {label}): every per-second bar crosses the socket and is "
            "parsed and aggregated by the client, where DuckDB scans compressed columns in place with "
            "two threads. It is the realistic shape of a NoSQL solution that stores fine bars and "
            "aggregates in the app."
        )
    w = cell(hist, "cells", "raw", "1D", label)
    if w and d1:
        per_bar = None
        if hist.get("bars_1s") and hist["bars_1s"].get("rows"):
            per_bar = hist["dataset"]["trades_written"] / hist["bars_1s"]["rows"]
        lines.append(
            f"* **Raw trades** ({ms(w['p50'])} ms for 1d bars over {label}) are about as costly as per-second "
            "bars here, because this dataset is sparse: "
            + (f"{per_bar:.2f} trades per non-empty second on average, " if per_bar else "")
            + "so a per-second bar saves little over the trades it summarises. On a busy market (hundreds "
            "of trades a second) raw aggregation grows with the trade count while per-second bars do "
            "not — and tiers do not either."
        )
    lines.append(
        "* **Large answers are dominated by building them**: for a year of 1-minute bars every strategy "
        "spends most of its time materialising half a million bars (and HTTP adds encoding them as "
        "~40 MB of JSON). Pre-downsampling only helps where it reduces the rows read; paging (`countback`, "
        "`max_bars`) is what bounds these requests in the product."
    )
    return "\n".join(lines)


def _ingest(results: dict[str, Any], charts: dict[str, str]) -> str:
    ing = results.get("ingest")
    if not ing:
        return ""
    out = ["## Live ingest"]
    if "ingest" in charts:
        out.append(f"![ingest]({charts['ingest']})")
    rows = [load_row("target run (+18 subscribers)", ing["headline"])]
    rows += [load_row(f"sweep {r['ingest']['target_per_s'] / 1000:.0f}k", r) for r in ing["sweep"]]
    if ing.get("json_frames"):
        rows.append(load_row("JSON frames", ing["json_frames"]))
    if ing.get("http"):
        rows.append(load_row("HTTP POST (JSON)", ing["http"]))
    out.append(markdown_table(rows, LOAD_HEAD))
    h = ing["headline"]
    lat = h["latency_ms"]
    out.append(
        f"The target run publishes {h['config']['rate']:,.0f} trades/s over {h['config']['connections']} "
        f"connections in {h['config']['frame_trades']:,}-trade msgpack frames for {h['measure_s']:.0f} s, "
        f"with one subscriber per symbol × tier so every live bar series is being built and pushed: "
        f"trade → pushed bar latency p50 {ms(lat['p50'])} ms, p99 {ms(lat['p99'])} ms. Server stored "
        f"{n(h['ingest']['server_stored_total'])} trades in total; notes: "
        + ("; ".join(h["notes"]) if h["notes"] else "none")
        + "."
    )
    return "\n\n".join(out)


def _fanout(results: dict[str, Any], charts: dict[str, str]) -> str:
    fan = results.get("fanout")
    if not fan:
        return ""
    out = ["## Fan-out to subscribers"]
    if "fanout" in charts:
        out.append(f"![fan-out]({charts['fanout']})")
    rows = [fan_row("target run", fan["headline"])]
    labels = {0: "one process", 1: "one edge"}
    rows += [fan_row(labels.get(r["config"].get("workers", 0), "same load"), r) for r in fan.get("by_workers", [])]
    if fan.get("ingest_only"):
        rows.append(fan_row("ingest alone (no subscribers)", fan["ingest_only"]))
    rows += [fan_row(f"sweep {r['subscribers']['subscriptions']:,}", r) for r in fan["sweep"]]
    if fan.get("multiplexed"):
        rows.append(fan_row("100 subs per connection", fan["multiplexed"]))
    if fan.get("batched"):
        rows.append(fan_row("batched publisher (10k-trade frames, 5 Hz markers)", fan["batched"]))
    out.append(markdown_table(rows, FAN_HEAD))
    h = fan["headline"]
    push = h["config"]["push_interval_ms"]
    out.append(_fanout_meaning(fan))
    out.append(_fanout_projection(fan))
    out.append(
        f"Push interval {push} ms: each series (symbol, resolution) pushes at most once per interval, at "
        f"a phase of its own, so a trade waits on average half an interval for the next push — the floor "
        f"of the latency distribution is the marker's processing time, its ceiling the interval plus "
        f"queueing. The target allows p99 ≤ interval + {TARGETS['fanout_slack_ms']} ms. Subscribers speak "
        "the datafeed's protocol (`/ws?v=2`). *Edge workers*: `tvflux serve --workers N` (0: one process "
        "does everything); the load generator's trades then reach the core through an edge like everyone "
        "else's. *µs/frame* is all of the server's CPU (core and edges, ingest included) over the "
        "measured window divided by the frames the subscribers received. *Worst gap* is the longest "
        "silence any subscription saw while measuring; *starved/cut* counts subscriptions that got "
        "nothing and connections the server cut off as too slow; *missed* counts marker observations "
        "that were never reflected (a marker reaching the server after its bar closed). Notes on the "
        "target run: " + ("; ".join(h["notes"]) if h["notes"] else "none") + "."
    )
    return "\n\n".join(out)


def fanout_knee(fan: dict[str, Any]) -> int | None:
    """Most subscribers (one per connection) for which the target latency held."""
    ok = [
        r["subscribers"]["subscriptions"]
        for r in fan["sweep"]
        if r["latency_ms"]["p99"] is not None
        and r["latency_ms"]["p99"] <= (r["config"]["push_interval_ms"] or 0) + TARGETS["fanout_slack_ms"]
        and not r["subscribers"]["starved"]
        and not r["subscribers"]["cut_off"]
    ]
    return max(ok) if ok else None


def _meets(r: dict[str, Any]) -> bool:
    p99, push = r["latency_ms"]["p99"], r["config"]["push_interval_ms"] or 0
    subs = r["subscribers"]
    return p99 is not None and p99 <= push + TARGETS["fanout_slack_ms"] and not subs["starved"] and not subs["cut_off"]


def _fanout_meaning(fan: dict[str, Any]) -> str:
    h = fan["headline"]
    push = h["config"]["push_interval_ms"] or 0
    target = push + TARGETS["fanout_slack_ms"]
    workers = h["config"].get("workers", 0)
    lines = ["### What the numbers mean"]
    lat = h["latency_ms"]
    lines.append(
        f"* **{h['subscribers']['subscriptions']:,} subscribers with {workers} edge workers**: p50 "
        f"{ms(lat['p50'])} ms, p99 {ms(lat['p99'])} ms, p99.9 {ms(lat.get('p999'))} ms against p99 ≤ {target} ms "
        f"— {'met' if _meets(h) else 'missed'}; starved {h['subscribers']['starved']}, cut off "
        f"{h['subscribers']['cut_off']}, markers missed {n(h['markers']['missed'])}."
    )
    for r in fan.get("by_workers", []):
        w = r["config"].get("workers", 0)
        lines.append(
            f"  The same load {'on one process' if w == 0 else f'with {w} edge worker'}: p99 "
            f"{ms(r['latency_ms']['p99'])} ms, p99.9 {ms(r['latency_ms'].get('p999'))} ms, "
            f"{r['resources'].get('server_cpu_us_per_frame') or 0:.1f} µs of server CPU per frame."
        )
    knee = fanout_knee(fan)
    if knee:
        beyond = [r for r in fan["sweep"] if r["subscribers"]["subscriptions"] > knee]
        first = beyond[0] if beyond else None
        text = (
            f"* **The largest sweep point that still met the target: {knee:,} subscribers** "
            f"({workers} edge workers, one connection each)."
        )
        if first is not None and (first["resources"].get("loadgen_cpu_avg_pct") or 0) >= 80:
            text += (
                f" Past it the limit is the load generator's, not the server's: at "
                f"{first['subscribers']['subscriptions']:,} the generator (one Python process receiving every "
                f"frame) used {n(first['resources']['loadgen_cpu_avg_pct'])} % of its core and fell behind "
                f"(ingest {n(first['ingest']['achieved_per_s'])}/s of {n(first['config']['rate'])}), while the "
                f"server (core and edges) used {n(first['resources']['server_cpu_avg_pct'])} % of one core of "
                "the two. A bigger measurement needs the clients on other machines."
            )
        else:
            text += (
                " Past it, this 2-core machine is shared by the core, the edges and a load generator "
                "receiving every frame in Python, and the tail grows."
            )
        lines.append(text)
    per_frame = h["resources"].get("server_cpu_us_per_frame")
    marginal = fanout_marginal_us(fan)
    if per_frame is not None:
        lines.append(
            f"* **Server CPU per pushed frame: {per_frame:.1f} µs** (was 61 µs before frames were encoded "
            "once per series and written straight into the transports; goal "
            f"{TARGETS['fanout_us_per_frame']:g} µs)"
            + (
                f", of which ingesting 50,000 trades/s accounts for the rest: **{marginal:.1f} µs per frame "
                "beyond the ingest alone**"
                if marginal is not None
                else ""
            )
            + ". What is left is mostly the kernel: a push to a client is one `send()` system call of a "
            "~150-byte frame, and on loopback that call also does the receiving side's TCP work. Python "
            "builds each push once (one JSON encoding, one WebSocket frame header per client) and wakes no "
            "task per client."
        )
    mux = fan.get("multiplexed")
    if mux:
        lines.append(
            f"* **Multiplexed**: {mux['subscribers']['subscriptions']:,} subscriptions on "
            f"{mux['subscribers']['connections']} connections ({mux['config']['subs_per_conn']} each, as one "
            f"browser page with many charts) got {n(mux['subscribers']['frames_per_s'])} bars/s with p99 "
            f"{ms(mux['latency_ms']['p99'])} ms, {mux['resources'].get('server_cpu_us_per_frame') or 0:.1f} µs "
            "per bar."
        )
    b = fan.get("batched")
    if b:
        lines.append(
            f"* **Bursty publisher**: the same {b['subscribers']['subscriptions']:,} subscribers fed by "
            f"{b['config']['frame_trades']:,}-trade frames ({b['config']['rate'] / b['config']['frame_trades']:.0f}"
            f" frames/s) saw p99 {ms(b['latency_ms']['p99'])} ms (it was 928 ms when every frame woke every "
            "connection at once; series now push on grids of their own phase)."
        )
    lines.append(
        f"* **The generator shares the machine**: it used {n(h['resources']['loadgen_cpu_avg_pct'])} % of a "
        f"core to receive {n(h['subscribers']['frames_per_s'])} bars/s while the server (core and edges) used "
        f"{n(h['resources']['server_cpu_avg_pct'])} %."
    )
    return "\n".join(lines)


def _fanout_projection(fan: dict[str, Any]) -> str:
    """Subscribers per edge core, per 16-core edge host and per N hosts, from the measured
    marginal CPU per frame (on paper: see the caveats in the text)."""
    h = fan["headline"]
    marginal = fanout_marginal_us(fan) or h["resources"].get("server_cpu_us_per_frame")
    push = h["config"]["push_interval_ms"] or 0
    if not marginal or not push:
        return ""
    frames_per_core = 1e6 / marginal
    per_sub = 1000 / push  # a busy series pushes once per interval
    per_core = frames_per_core / per_sub
    usable = 0.6  # leave headroom: the latency tail grows well before a core is full
    host = 15 * per_core * usable  # 16 cores, one left to the kernel's network work
    return "\n".join(
        [
            "### Projection to bigger edge hosts (on paper)",
            f"From the measured {marginal:.1f} µs of CPU per pushed frame: one core pushes about "
            f"{frames_per_core:,.0f} frames/s, i.e. {per_core:,.0f} one-chart subscribers at {push} ms pushes "
            f"({per_sub:g} frames/s each, the busy case). Planning at {usable:.0%} of that (the tail grows "
            "before a core is full), a **16-core edge host** running 15 edge processes holds about "
            f"**{host:,.0f} subscribers**, and **N such hosts about N × {host:,.0f}**: edges share nothing, and "
            "the core publishes each series' push once to the broker whatever the number of edges (its cost "
            "is per series, not per subscriber; NATS then sends one copy per edge host). Caveats: measured on "
            "loopback, where `send()` also carries the receiver's TCP work (a NIC moves some of that off the "
            "CPU, interrupts add some back); browsers with several charts per page cost less per bar "
            "(multiplexed row); slow clients cost buffer memory until they are cut off "
            "(`TVFLUX_CLIENT_BUFFER_MAX_BYTES`).",
        ]
    )


def _influx(results: dict[str, Any], charts: dict[str, str]) -> str:
    if not (results.get("influx") or {}).get("history"):
        return ""
    from bench.influx_report import section

    return section(results["influx"], results, charts)


def _live_history(results: dict[str, Any]) -> str:
    lh = results.get("live_history")
    if not lh:
        return ""
    idle, loaded = lh["idle"]["history"], lh["loaded"]["history"]
    rows = []
    for res in idle["by_resolution"]:
        a, b = idle["by_resolution"][res], loaded["by_resolution"].get(res, {})
        rows.append([RES_LABEL.get(res, res), ms(a.get("p50")), ms(a.get("p99")), ms(b.get("p50")), ms(b.get("p99"))])
    rows.append(
        [
            "all",
            ms(idle["latency_ms"]["p50"]),
            ms(idle["latency_ms"]["p99"]),
            ms(loaded["latency_ms"]["p50"]),
            ms(loaded["latency_ms"]["p99"]),
        ]
    )
    L = lh["loaded"]
    return (
        "## History under live load\n\n"
        f"`GET /api/bars?countback=300` at {L['config']['history_rate']:g} requests/s (all six resolutions, "
        "all symbols, ending at the dataset's end) against a server on a copy of the "
        f"{(results.get('dataset') or {}).get('trades_written', 0):,}-trade dataset, "
        f"first alone, then while the same server ingests {L['ingest']['achieved_per_s']:,} trades/s and pushes "
        f"to {L['subscribers']['subscriptions']:,} subscribers (their p99 {ms(L['latency_ms']['p99'])} ms).\n\n"
        + markdown_table(rows, ["resolution", "idle p50 ms", "idle p99 ms", "loaded p50 ms", "loaded p99 ms"])
        + f"\n\nRequests answered: {idle['requests']:,} idle, {loaded['requests']:,} loaded "
        f"({loaded['errors']} errors). Server CPU while loaded: {n(L['resources']['server_cpu_avg_pct'])} % "
        f"of a core, RSS peak {n(L['resources']['server_rss_peak_mb'])} MB."
    )


PLATEAU_MB_PER_MIN = 0.5  # a soak's RSS slope below this over its last ten minutes is flat


def _soak(results: dict[str, Any], charts: dict[str, str]) -> str:
    soak = results.get("soak")
    if not soak or "drift_pct" not in (soak.get("drift") or {}):
        return ""
    d, cfg, problems = soak["drift"], soak["settings"], soak.get("problems") or {}
    issues = {k: v for k, v in problems.items() if v not in (0, None, [], {})}
    head = (
        "## Soak: memory over a long run\n\n"
        f"`python -m bench.soak` (run on its own: it takes {cfg['duration']:.0f} s, so `make bench` reuses its "
        f"last result): {soak.get('achieved_trades_per_s') or 0:,.0f} trades/s ingested while pushing to "
        f"{cfg['subscribers']:,} subscribers for {d['duration_s']:.0f} s"
    )
    problems_text = (
        "No errors, unacknowledged trades, cut-off or starved subscribers." if not issues else f"Problems: {issues}."
    )
    bound = soak.get("bound")
    if not bound or not soak.get("curve"):  # a result from before the curve was recorded
        verdict = "**met**" if d["drift_pct"] < 5 and not issues else "**missed**"
        return (
            head + f". Server RSS {d['rss_after_warmup_mb']:.0f} MB in the minute after a {cfg['warmup']:.0f} s "
            f"warm-up, {d['rss_last_minute_mb']:.0f} MB in the last minute (peak {d['rss_peak_mb']:.0f} MB): "
            f"drift **{d['drift_pct']:+.1f} %** against the goal of < 5 % — {verdict}. " + problems_text
        )
    within = bound["bound_mb"] is not None and bound["peak_minute_median_mb"] <= bound["bound_mb"]
    slope = bound["slope_last_10_min_mb_per_min"]
    points = soak["curve"]
    step = max(1, len(points) // 10)
    rows = [[str(p["minute"]), f"{p['rss_mb']:.0f}", f"{p['server_cpu_pct']:.0f}"] for p in points[::step]]
    out = [
        head + f", with `TVFLUX_DUCKDB_MEMORY_LIMIT={cfg['duckdb_memory_mb']}MB`. "
        f"Bound: the RSS when the load started ({bound['start_mb']:.0f} MB: interpreter, libraries, "
        f"connections) + DuckDB's limit ({bound['duckdb_memory_limit_mb']} MB) + the hot window's most "
        f"({bound['hot_window_mb']:.1f} MB: `TVFLUX_HOT_WINDOW_BARS` × tiers × symbols, at the bytes a bar "
        f"takes) = **{bound['bound_mb']:.0f} MB**. Peak (median of a minute): "
        f"**{bound['peak_minute_median_mb']:.0f} MB** — {'**within**' if within else '**over**'} the bound. "
        f"Slope over the last ten minutes: {'—' if slope is None else f'{slope:+.2f} MB/min'} "
        + (
            "(a plateau). "
            if slope is not None and abs(slope) < PLATEAU_MB_PER_MIN
            else "(still moving at the end of the run). "
        )
        + f"Last minute {d['rss_last_minute_mb']:.0f} MB against {d['rss_after_warmup_mb']:.0f} MB after "
        f"warm-up ({d['drift_pct']:+.1f} %). " + problems_text,
    ]
    if charts.get("soak"):
        out.append(f"![soak: RSS per minute]({charts['soak']})")
    out.append(markdown_table(rows, ["minute", "RSS MB", "server CPU %"]))
    return "\n\n".join(out)


def _optimisations() -> str:
    if NOTES.exists():
        return NOTES.read_text()
    return ""


def _recommendations(results: dict[str, Any]) -> str:
    d = results.get("dataset") or {}
    bytes_per_trade = d["db_bytes"] / d["trades_written"] if d else None
    trades_per_year = d.get("trades_written")
    per_symbol_year = {"1m": 525_600, "5m": 105_120, "15m": 35_040, "1h": 8_760, "4h": 2_190, "1d": 365}
    lines = ["## Recommendations for production", "### Tiers"]
    lines.append(
        "* **Keep the six tiers `1m 5m 15m 1h 4h 1d`.** Every TradingView resolution from 1 minute up is "
        "served from a tier that divides it (30 from 15m, 120/180/360/480/720 from 1h or 4h, 3D/1W/1M from "
        "1d), so no chart request reads more than a few hundred rows plus the live tail. The tiers cost "
        f"little: one year is {sum(per_symbol_year.values()):,} bars per symbol in all six together, against "
        "31.5 million seconds."
    )
    lines.append(
        "* **Seconds resolutions (`1S`…`30S`) are built from raw trades** and cost in proportion to the trades "
        "in range: keep them paged (`countback`) and short. If they matter, add a `1s` tier fed by raw "
        "trades (the plan builds `1m` from it); its size is at most one row per second per symbol."
    )
    lines.append(
        "* **Do not add tiers between the existing ones** for speed: a request served from a tier that is "
        "2–4× finer than the resolution reads 2–4× more rows of an already small answer, which the tables "
        "above show costs well under a millisecond."
    )
    lines.append("### Retention")
    if bytes_per_trade:
        lines.append(
            f"* **Raw trades** are the bulk of the storage ({bytes_per_trade:.1f} bytes per trade in DuckDB "
            f"with the tiers included; {trades_per_year:,} trades a year here). Keep them for as long as "
            "seconds resolutions, late-trade recomputation (the lookback and dirty windows) and audits need "
            "— typically 30–90 days — and rebuild tiers from an archive if ever needed."
        )
    lines.append(
        "* **`1m` for 1–2 years** (0.5M rows per symbol per year), **`5m`…`1d` forever**: together they are "
        "0.15M rows per symbol per year. Charts older than the `1m` retention then start at 5-minute bars, "
        "which is what TradingView asks for when zoomed that far out anyway."
    )
    lines.append("### InfluxDB 2 sizing")
    if (results.get("influx") or {}).get("history"):
        from bench.influx_report import sizing_lines

        lines.extend(sizing_lines(results["influx"]))
    else:
        lines.append(
            "* Not measured in this report: `python -m bench.influx` (the `influx` step of `make bench`) needs "
            "an `influxd` binary (`TVFLUX_INFLUXD` or `PATH`; see `docs/influxdb.md`)."
        )
    lines.append("### The service itself")
    fan = results.get("fanout") or {}
    knee = fanout_knee(fan) if fan.get("sweep") else None
    best = max((r["ingest"]["achieved_per_s"] for r in (results.get("ingest") or {}).get("sweep", [])), default=None)
    lines.append(
        "* **Ingest needs no scaling** at the POC's rates"
        + (
            f": one process sustained {best:,} trades/s in the sweep (its event loop on one core, DuckDB's "
            "appends on the other)"
            if best
            else ""
        )
        + ". Keep ingest on one process (the writer, the unique timestamps and the live bars assume it)."
    )
    lines.append(
        "* **Plan fan-out per core**: past what one process holds, run edge processes — "
        "`tvflux serve --workers N` on the core's host (one per spare core), `tvflux edge --broker` on other "
        "hosts — and the core keeps ingest, the store and downsampling"
        + (f"; on this 2-core machine 2 edge workers held {knee:,} one-connection subscribers" if knee else "")
        + ' (docs/deployment.md, "Fan-out"; the projection in the fan-out section above).'
    )
    lines.append(
        "* **Multiplex subscriptions**: one WebSocket per browser page carrying all its charts' subscriptions "
        "costs a fraction of one connection per chart (see the multiplexed run) — `frontend/datafeed.js` "
        "already shares one socket per page; other clients should do the same."
    )
    lines.append(
        "* **Push interval**: `TVFLUX_PUSH_INTERVAL_MS` sets both the latency floor (a trade waits on average "
        "half an interval) and the push cost, which is proportional to connections ÷ interval and "
        "independent of the trade rate thanks to coalescing: 500 ms halves the cost; 100 ms multiplies it "
        "by 2.5."
    )
    lines.append(
        "* **Publish steadily**: feeds that arrive in large bursts synchronise every subscriber's push; prefer "
        "frames every 50–200 ms to one big frame a second."
    )
    lines.append(
        "* **Keep the GC tuning** (`tvflux serve` sets it): with thousands of connections CPython's default "
        "thresholds spent a third of the loop in full collections (see the optimisation log)."
    )
    return "\n".join(lines)


def _reproduce() -> str:
    return """## Reproduce

```sh
make bench                                  # everything: ~15–20 min, builds bench/data/ once (≈ 1.3 GB)
.venv/bin/python -m bench.run --quick       # smoke test: ~1.5 min, writes bench/data/quick/results/
.venv/bin/python -m bench.run --only history,report
.venv/bin/tvflux-bench history --help       # the history benchmark alone (also: python -m bench)
.venv/bin/tvflux-bench chart                # chart open / scroll-back / ranges with trades arriving, and the peers (pip install -e '.[bench]' for chdb)
.venv/bin/tvflux-loadgen --spawn --rate 300000 --duration 60 --subscribers 18 --frame-trades 10000
.venv/bin/tvflux-loadgen --spawn --rate 50000 --subscribers 5000 --push-interval-ms 250 --duration 60
.venv/bin/python -m bench.soak              # 30 min: memory under 20k trades/s and 500 subscribers, then `--only report`
```

Raw results: `bench/results/*.json` (every run keeps its per-second samples)."""
