"""Render ``docs/performance.md`` and its charts from ``bench/results/*.json``.

Every figure in the document comes from the JSON files; the prose around them states
what was measured and how, and its verdicts (met / missed) are computed, not typed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.figures import COLORS, RES_LABEL, STRATEGY_LABEL, STRATEGY_ORDER, TARGETS
from bench.narrative import document
from bench.plotting import pyplot

# --- charts --------------------------------------------------------------------------------


def chart_history(history: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    ranges = list(history["ranges"])
    fig, axes = plt.subplots(1, len(ranges), figsize=(3.1 * len(ranges), 3.6), sharey=True)
    if len(ranges) == 1:
        axes = [axes]
    cells = history["cells"]
    resolutions = history["resolutions"]
    for ax, rng in zip(axes, ranges):
        for s in STRATEGY_ORDER:
            ys = []
            for r in resolutions:
                e = next((c for c in cells if c["strategy"] == s and c["resolution"] == r and c["range"] == rng), None)
                ys.append(e["p50"] if e else None)
            if any(y is not None for y in ys):
                ax.plot(
                    [RES_LABEL.get(r, r) for r in resolutions],
                    [y if y is not None else float("nan") for y in ys],
                    marker="o",
                    ms=3,
                    color=COLORS[s],
                    label=STRATEGY_LABEL[s],
                )
        ax.set_yscale("log")
        ax.set_title(rng)
        ax.set_xlabel("resolution")
    axes[0].set_ylabel("p50 latency (ms, log)")
    axes[-1].legend(fontsize=7, loc="upper right")
    fig.suptitle(
        f"History request latency by resolution and range ({history['symbol']}, "
        f"{history['dataset']['trades_written']:,} trades)"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def chart_chart_requests(history: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    import numpy as np

    resolutions = history["resolutions"]
    strategies = [s for s in STRATEGY_ORDER if any(c["strategy"] == s for c in history["chart"])]
    x = np.arange(len(resolutions))
    width = 0.8 / max(1, len(strategies))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for i, s in enumerate(strategies):
        ys = []
        for r in resolutions:
            e = next((c for c in history["chart"] if c["strategy"] == s and c["resolution"] == r), None)
            ys.append(e["p50"] if e else 0)
        ax.bar(x + i * width - 0.4 + width / 2, ys, width, color=COLORS[s], label=STRATEGY_LABEL[s])
    ax.axhline(TARGETS["chart_p50_ms"], color="k", ls="--", lw=0.8, label="target p50 5 ms")
    ax.set_yscale("log")
    ax.set_xticks(x, [RES_LABEL.get(r, r) for r in resolutions])
    ax.set_ylabel("p50 latency (ms, log)")
    ax.set_title("A chart opening: the last 300 bars, by resolution")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def chart_ingest(ingest: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    sweep = ingest["sweep"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    targets = [r["ingest"]["target_per_s"] / 1000 for r in sweep]
    achieved = [r["ingest"]["achieved_per_s"] / 1000 for r in sweep]
    ax.plot(targets, targets, ls="--", color="grey", lw=0.8, label="target")
    ax.plot(targets, achieved, marker="o", color=COLORS["tiers"], label="achieved (acked)")
    ax.set_xlabel("target (k trades/s)")
    ax.set_ylabel("k trades/s")
    ax.set_title("Ingest over /ws/ingest (msgpack, 10k-trade frames)")
    axc = ax.twinx()
    axc.plot(
        targets,
        [r["resources"]["server_cpu_avg_pct"] or 0 for r in sweep],
        marker="s",
        color="#d95f02",
        lw=0.8,
        label="server CPU %",
    )
    axc.set_ylabel("server CPU (% of one core)")
    axc.grid(False)
    ax.legend(loc="upper left", fontsize=7)
    axc.legend(loc="lower right", fontsize=7)
    samples = ingest["headline"]["samples"]
    ts = [s["t"] for s in samples if s.get("phase") == "measure"]
    t0 = ts[0] if ts else 0
    ax2.plot(
        [t - t0 for t in ts],
        [s["ingest_per_s"] / 1000 for s in samples if s.get("phase") == "measure"],
        color=COLORS["tiers"],
        label="ingest k/s",
    )
    ax2.set_xlabel("seconds")
    ax2.set_ylabel("k trades/s")
    ax3 = ax2.twinx()
    ax3.plot(
        [t - t0 for t in ts],
        [s.get("server_rss_mb") or 0 for s in samples if s.get("phase") == "measure"],
        color="#7570b3",
        lw=0.8,
        label="server RSS MB",
    )
    ax3.set_ylabel("RSS (MB)")
    ax3.grid(False)
    ax2.set_title(
        f"Target run: {ingest['headline']['ingest']['target_per_s']:,.0f}/s for {ingest['headline']['measure_s']:.0f} s"
    )
    ax2.legend(loc="lower left", fontsize=7)
    ax3.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def chart_fanout(fanout: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    sweep = fanout["sweep"]
    subs = [r["subscribers"]["subscriptions"] for r in sweep]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, style in (("p50", "-"), ("p99", "--"), ("max", ":")):
        ax.plot(
            subs, [r["latency_ms"][key] for r in sweep], marker="o", ls=style, color=COLORS["tiers"], label=f"{key}"
        )
    push = sweep[0]["config"]["push_interval_ms"] if sweep else TARGETS["push_ms"]
    ax.axhline((push or 0) + TARGETS["fanout_slack_ms"], color="k", lw=0.8, ls="--", label="target p99")
    ax.set_xlabel("subscribers (one connection each)")
    ax.set_ylabel("trade → pushed bar (ms)")
    ax.set_title(f"Fan-out latency, push every {push} ms")
    ax.legend(fontsize=7)
    ax2.plot(
        subs,
        [r["subscribers"]["frames_per_s"] / 1000 for r in sweep],
        marker="o",
        color="#7570b3",
        label="frames/s received (k)",
    )
    ax2.set_xlabel("subscribers")
    ax2.set_ylabel("k frames/s")
    axc = ax2.twinx()
    axc.plot(
        subs,
        [r["resources"]["server_cpu_avg_pct"] or 0 for r in sweep],
        marker="s",
        color="#d95f02",
        lw=0.8,
        label="server CPU %",
    )
    axc.plot(
        subs,
        [r["resources"]["loadgen_cpu_avg_pct"] or 0 for r in sweep],
        marker="^",
        color="#666",
        lw=0.8,
        label="loadgen CPU %",
    )
    axc.set_ylabel("CPU (% of one core)")
    axc.grid(False)
    ax2.set_title("Push throughput and CPU")
    ax2.legend(loc="upper left", fontsize=7)
    axc.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def chart_soak(soak: dict[str, Any], path: Path) -> None:
    """The server's RSS per minute of the soak, with the bound its settings give it."""
    plt = pyplot()
    points, bound = soak["curve"], soak["bound"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(
        [p["minute"] for p in points],
        [p["rss_mb"] for p in points],
        marker=".",
        color=COLORS["tiers"],
        label="server RSS (median of the minute)",
    )
    if bound.get("bound_mb"):
        ax.axhline(
            bound["bound_mb"], ls="--", color="grey", lw=0.8, label="bound: RSS at start + DuckDB limit + hot window"
        )
    ax.set_xlabel("minute of the run")
    ax.set_ylabel("MB")
    ax.set_ylim(bottom=0)
    ax.set_title("Soak: memory over the run")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_report(results: dict[str, Any], doc_path: Path, img_dir: Path, *, quick: bool = False) -> Path:
    img_dir.mkdir(parents=True, exist_ok=True)
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(img_dir, doc_path.parent)
    charts = {}
    if results.get("history"):
        chart_history(results["history"], img_dir / "perf-history.png")
        chart_chart_requests(results["history"], img_dir / "perf-history-300.png")
        charts["history"] = f"{rel}/perf-history.png"
        charts["history300"] = f"{rel}/perf-history-300.png"
    if results.get("ingest"):
        chart_ingest(results["ingest"], img_dir / "perf-ingest.png")
        charts["ingest"] = f"{rel}/perf-ingest.png"
    if results.get("fanout"):
        chart_fanout(results["fanout"], img_dir / "perf-fanout.png")
        charts["fanout"] = f"{rel}/perf-fanout.png"
    if (results.get("influx") or {}).get("history"):
        from bench.influx_report import chart

        chart(results["influx"], img_dir / "perf-influx.png")
        charts["influx"] = f"{rel}/perf-influx.png"
    if (results.get("soak") or {}).get("curve"):
        chart_soak(results["soak"], img_dir / "perf-soak.png")
        charts["soak"] = f"{rel}/perf-soak.png"
    doc_path.write_text(document(results, charts, quick=quick))
    return doc_path
