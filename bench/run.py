"""Regenerate every benchmark and the performance report: ``python -m bench.run``
(``make bench``).

Steps (each writes ``bench/results/<step>.json``; ``--only`` re-runs some and keeps the
others' last results):

* ``machine``   — what the numbers were measured on;
* ``dataset``   — the 50M-trade year (built with ``tvflux generate`` + ``tvflux downsample``
                  when missing: that build is the generation benchmark);
* ``backfill``  — all tiers rebuilt from the raw trades of a copy of the dataset;
* ``history``   — ``tvflux-bench history``: tiers vs per-second (DuckDB, Redis) vs raw;
* ``chart``     — ``tvflux-bench chart``: chart open / scroll-back / long ranges over HTTP with
                  trades arriving (server time from ``/metrics``, client time), and the peers
                  (DuckDB on sorted raw trades, ClickHouse via chDB raw and 1-minute view);
* ``ingest``    — loadgen: the sustained-ingest target run, then a rate sweep;
* ``fanout``    — loadgen: the 5,000-subscriber target run, then a subscriber sweep;
* ``live_history`` — chart-history requests against the 50M dataset while ingesting and
                  pushing;
* ``influx``    — ``python -m bench.influx``: the same questions asked of a real InfluxDB 2
                  (ingest through the service, the tasks' backfill, history from tiers vs
                  per-second bars vs raw trades in Flux, disk, RSS); skipped, with the reason
                  printed, when no ``influxd`` binary is available;
* ``report``    — ``docs/performance.md`` and the charts in ``docs/img/``.

``--quick`` uses a 1M-trade month and seconds-long runs, and writes everything (report
included) under ``bench/data/quick/`` (git-ignored), so the pipeline can be smoke-tested in
about a minute and a half without touching the real results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUICK = False  # set by main(): shorter pauses between runs
STEPS = ("machine", "dataset", "backfill", "history", "chart", "ingest", "fanout", "live_history", "influx", "report")


class Profile:
    """Sizes and durations of one mode (full or quick)."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        # quick mode keeps everything, its report included, under the git-ignored bench/data/
        self.results_dir = ROOT / "bench" / "data" / "quick" / "results" if quick else ROOT / "bench" / "results"
        self.data_dir = ROOT / "bench" / "data" / ("quick" if quick else "")
        self.scratch_dir = ROOT / "bench" / "data" / ("quick-scratch" if quick else "scratch")
        self.doc_path = self.results_dir / "performance.md" if quick else ROOT / "docs" / "performance.md"
        self.img_dir = self.results_dir / "img" if quick else ROOT / "docs" / "img"
        self.trades = 1_000_000 if quick else 50_000_000
        self.days = 30.0 if quick else 365.0
        self.history_reps = 3 if quick else 15
        self.history_budget_s = 0.3 if quick else 3.0
        self.slow_reps = 1 if quick else 3
        self.load_s = 2.0 if quick else 60.0
        self.sweep_s = 1.5 if quick else 15.0
        self.warmup_s = 0.5 if quick else 5.0
        self.ingest_target = 300_000
        self.ingest_sweep = (
            (20_000, 50_000) if quick else (100_000, 200_000, 300_000, 400_000, 600_000, 800_000, 1_000_000)
        )
        self.fanout_subs = 200 if quick else 5_000
        self.fanout_workers = 2  # edge processes of the target run (tvflux serve --workers)
        self.fanout_sweep = (50, 100) if quick else (3_000, 5_000, 6_000, 7_000, 8_000, 10_000)
        self.fanout_rate = 50_000
        self.push_interval_ms = 250
        self.live_history_s = 2.0 if quick else 30.0
        # InfluxDB: the tasks' backfill of a year is ~585 manual runs of a few seconds each on
        # this 2-core machine whatever the trade count, so even a 5M-trade year takes ~30 min
        # (the whole step ~40); 50M would add ~4 min of loading and heavier runs
        # (docs/performance.md). A full year is kept so that the 1-year ranges are measured.
        self.influx_trades = 200_000 if quick else 5_000_000
        self.influx_days = 30.0 if quick else 365.0
        self.influx_rates = (10_000,) if quick else (25_000, 50_000, 100_000, 200_000, 300_000)
        self.influx_ingest_s = 3.0 if quick else 15.0


# --- steps --------------------------------------------------------------------------------


def step_machine(p: Profile) -> dict[str, Any]:
    import psutil

    def version(mod: str) -> str | None:
        try:
            from importlib.metadata import version as v

            return v(mod)
        except Exception:  # noqa: BLE001
            return None

    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "service", "loadgen"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    redis_version = None
    if shutil.which("redis-server"):
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
        redis_version = out.split("v=")[1].split()[0] if "v=" in out else out.strip()
    return {
        "cpu_model": cpu_model,
        "cores": psutil.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "git_commit": commit,
        "working_tree_dirty": dirty,
        "packages": {
            m: version(m)
            for m in (
                "duckdb",
                "numpy",
                "pyarrow",
                "msgspec",
                "litestar",
                "uvicorn",
                "uvloop",
                "websockets",
                "redis",
                "hiredis",
            )
        },
        "redis_server": redis_version,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_start": list(os.getloadavg()),
    }


def spec_for(p: Profile) -> Any:
    from bench.data import DatasetSpec

    return DatasetSpec(trades=p.trades, days=p.days)


def step_dataset(p: Profile) -> dict[str, Any]:
    from bench.data import ensure_dataset

    return ensure_dataset(str(p.data_dir), spec_for(p))


def step_backfill(p: Profile) -> dict[str, Any]:
    from bench.data import ensure_dataset, rebackfill

    ensure_dataset(str(p.data_dir), spec_for(p))
    result = rebackfill(str(p.data_dir), str(p.scratch_dir / "backfill"))
    shutil.rmtree(p.scratch_dir / "backfill", ignore_errors=True)
    return result


def step_history(p: Profile) -> dict[str, Any]:
    from bench.history import RANGES, run_history_bench

    spec = spec_for(p)
    ranges = {k: v for k, v in RANGES.items() if v <= spec.days}
    return asyncio.run(
        run_history_bench(
            str(p.data_dir),
            spec,
            reps=p.history_reps,
            budget_s=p.history_budget_s,
            slow_reps=p.slow_reps,
            ranges=ranges,
        )
    )


def step_chart(p: Profile) -> dict[str, Any]:
    """The requests charts really send (chart open with countback at the live edge, scroll-back
    pages, long ranges) with server and client time, and the peers (DuckDB sorted raw, chDB
    raw and its 1-minute materialized view) on the same trades: ``bench/chart.py``."""
    from bench.chart import run_chart_bench

    return asyncio.run(
        run_chart_bench(
            str(p.data_dir),
            spec_for(p),
            str(p.scratch_dir / "chart"),
            reps=10 if p.quick else 40,
            peer_reps=3 if p.quick else 10,
            peer_budget_s=1.0 if p.quick else 5.0,
        )
    )


def _load(cfg: Any) -> dict[str, Any]:
    from loadgen.runner import run_load

    try:
        import uvloop

        return uvloop.run(run_load(cfg))
    except ImportError:
        return asyncio.run(run_load(cfg))


def _trim(report: dict[str, Any]) -> dict[str, Any]:
    report = dict(report)
    report.pop("server_stats", None)
    return report


def _pause(seconds: float = 2.0) -> None:
    time.sleep(seconds if not QUICK else 0.3)  # let the previous server's files and sockets go before the next run


def step_ingest(p: Profile) -> dict[str, Any]:
    from loadgen.runner import LoadConfig

    base = dict(
        spawn=True,
        transport="ws",
        fmt="msgpack",
        connections=2,
        frame_trades=10_000,
        window=4,
        warmup_s=p.warmup_s,
        progress=True,
    )
    print(f"ingest: {p.ingest_target:,} trades/s for {p.load_s:g} s, a subscriber per symbol × tier", file=sys.stderr)
    headline = _load(LoadConfig(rate=p.ingest_target, duration_s=p.load_s, subscribers=18, **base))
    sweep = []
    for target in p.ingest_sweep:
        _pause()
        print(f"ingest sweep: {target:,} trades/s for {p.sweep_s:g} s", file=sys.stderr)
        sweep.append(_trim(_load(LoadConfig(rate=target, duration_s=p.sweep_s, subscribers=0, **base))))
    _pause()
    alt_rate = p.ingest_sweep[1] if p.quick else 500_000
    print(f"ingest over HTTP (POST /api/trades, JSON): {alt_rate:,} trades/s target", file=sys.stderr)
    http = _trim(
        _load(
            LoadConfig(
                spawn=True,
                rate=alt_rate,
                duration_s=p.sweep_s,
                transport="http",
                connections=4,
                frame_trades=5_000,
                warmup_s=p.warmup_s,
            )
        )
    )
    _pause()
    print(f"ingest over /ws/ingest with JSON frames: {alt_rate:,} trades/s target", file=sys.stderr)
    json_frames = _trim(
        _load(
            LoadConfig(rate=alt_rate, duration_s=p.sweep_s, fmt="json", **{k: v for k, v in base.items() if k != "fmt"})
        )
    )
    return {"headline": _trim(headline), "sweep": sweep, "http": http, "json_frames": json_frames}


def step_fanout(p: Profile) -> dict[str, Any]:
    """The target run (5,000 one-connection subscribers, 2 edge workers), the same load on
    one process and on one edge, the ingest alone (what the fan-out's CPU is measured
    against), a subscriber sweep with the workers, multiplexed and bursty variants."""
    from loadgen.runner import LoadConfig

    base = dict(
        spawn=True,
        rate=p.fanout_rate,
        connections=1,
        frame_trades=2_000,
        window=4,
        push_interval_ms=p.push_interval_ms,
        warmup_s=p.warmup_s,
        progress=True,
        connect_concurrency=200,
    )

    def load(label: str, subscribers: int, workers: int, duration_s: float, **more: Any) -> dict[str, Any]:
        _pause()
        print(
            f"fan-out, {label}: {subscribers:,} subscribers, {workers} edge workers, push every "
            f"{p.push_interval_ms} ms, ingest {p.fanout_rate:,}/s, {duration_s:g} s",
            file=sys.stderr,
        )
        env = {"TVFLUX_WORKERS": str(workers)}
        report = _load(LoadConfig(subscribers=subscribers, duration_s=duration_s, server_env=env, **{**base, **more}))
        report["config"]["workers"] = workers
        return _trim(report)

    w = p.fanout_workers
    headline = load("target run", p.fanout_subs, w, p.load_s)
    by_workers = [load("one process", p.fanout_subs, 0, p.sweep_s), load("one edge", p.fanout_subs, 1, p.sweep_s)]
    ingest_only = load("ingest alone", 0, w, p.sweep_s)
    sweep = [load("sweep", n, w, p.sweep_s) for n in p.fanout_sweep]
    multiplexed = load("multiplexed, 100 per connection", p.fanout_subs * 2, w, p.sweep_s, subs_per_conn=100)
    batched = load(
        "batched publisher (10,000-trade frames, markers at 5 Hz)",
        p.fanout_subs,
        w,
        p.sweep_s,
        frame_trades=10_000,
        marker_hz=5.0,
    )
    return {
        "headline": headline,
        "by_workers": by_workers,
        "ingest_only": ingest_only,
        "sweep": sweep,
        "multiplexed": multiplexed,
        "batched": batched,
    }


def step_live_history(p: Profile) -> dict[str, Any]:
    """Chart requests (300 bars, every resolution) on a copy of the dataset while the same
    server ingests and pushes."""
    from bench.data import DB_NAME, ensure_dataset
    from loadgen.runner import LoadConfig

    spec = spec_for(p)
    ensure_dataset(str(p.data_dir), spec)
    scratch = p.scratch_dir / "live"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    shutil.copyfile(p.data_dir / DB_NAME, scratch / DB_NAME)
    subs = 200 if p.quick else 1_000
    common = dict(
        spawn=True,
        data_dir=str(scratch),
        connections=1,
        frame_trades=2_000,
        window=4,
        push_interval_ms=p.push_interval_ms,
        warmup_s=p.warmup_s,
        progress=True,
        history_to_ms=spec.end_ms,
        history_countback=300,
        history_connections=2,
        server_env={"TVFLUX_DOWNSAMPLE_INTERVAL_MS": "2000"},
        # the dataset's symbols, in a scratch copy of it: the loadgen may write there
        symbols=("BTCUSD", "ETHUSD", "LTCUSD"),
        allow_real_symbols=True,
    )
    try:
        print("history with no other load (same server setup)", file=sys.stderr)
        idle = _trim(_load(LoadConfig(rate=0, subscribers=0, history_rate=50, duration_s=p.live_history_s, **common)))
        _pause()
        print(f"history under load: ingest {p.fanout_rate:,}/s, {subs:,} subscribers, 50 requests/s", file=sys.stderr)
        loaded = _trim(
            _load(
                LoadConfig(rate=p.fanout_rate, subscribers=subs, history_rate=50, duration_s=p.live_history_s, **common)
            )
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"idle": idle, "loaded": loaded}


def step_influx(p: Profile) -> dict[str, Any] | None:
    from bench import influx

    if influx.influxd_binary() is None:
        print(
            "influx: skipped — no influxd binary (set TVFLUX_INFLUXD or put influxd on PATH; docs/influxdb.md "
            "says how to get one); the report keeps the last bench/results/influx.json, if any",
            file=sys.stderr,
        )
        return None
    return influx.run(
        p.influx_trades,
        p.influx_days,
        data_dir=p.data_dir / "influx",
        ingest_rates=p.influx_rates,
        ingest_s=p.influx_ingest_s,
        warmup_s=p.warmup_s if p.quick else 3.0,
        reps=p.history_reps if p.quick else 10,
        budget_s=p.history_budget_s if p.quick else 1.5,
    )


def step_report(p: Profile) -> None:
    from bench.report import load_results, write

    write(load_results(p.results_dir), p.doc_path, quick=p.quick)


# --- driver -------------------------------------------------------------------------------


def save(p: Profile, step: str, result: dict[str, Any]) -> None:
    p.results_dir.mkdir(parents=True, exist_ok=True)
    tmp = p.results_dir / f"{step}.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(p.results_dir / f"{step}.json")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small dataset, short runs (smoke test)")
    parser.add_argument("--only", help=f"comma-separated steps among {', '.join(STEPS)}")
    parser.add_argument("--skip", help="comma-separated steps to leave out")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    p = Profile(args.quick)
    global QUICK
    QUICK = args.quick
    steps = [s.strip() for s in args.only.split(",")] if args.only else list(STEPS)
    skip = {s.strip() for s in (args.skip or "").split(",") if s.strip()}
    unknown = (set(steps) | skip) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps: {', '.join(sorted(unknown))}")
    if "machine" not in steps and not (p.results_dir / "machine.json").exists():
        steps.insert(0, "machine")
    started = time.perf_counter()
    for step in steps:
        if step in skip:
            continue
        t0 = time.perf_counter()
        print(f"== {step} ==", file=sys.stderr, flush=True)
        result = globals()[f"step_{step}"](p)
        if step != "report" and result is not None:
            result["_step_seconds"] = round(time.perf_counter() - t0, 1)
            save(p, step, result)
        print(f"== {step} done in {time.perf_counter() - t0:.1f} s ==", file=sys.stderr, flush=True)
    print(f"all done in {time.perf_counter() - started:.0f} s; report: {p.doc_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
