"""Regenerate every benchmark and the performance report: ``python -m bench.run`` (``make bench``).

Each step is a ``step_<name>(profile)`` function, listed in ``STEPS``, whose dict is saved as
``bench/results/<name>.json`` (``None``: skipped, the last results kept); ``--only`` re-runs
some steps and keeps the others' last results. The report (``bench/report.py``) shows a
step's figures in a template section that needs its file.

* ``machine``      — what the numbers were measured on;
* ``dataset``      — the 50M-trade year, built when missing with ``tvflux generate`` +
                     ``tvflux downsample`` (that build is the generation benchmark);
* ``backfill``     — all tiers rebuilt from the raw trades of a copy of the dataset;
* ``history``      — ``bench/history.py``: tiers vs per-second bars (DuckDB, Redis) vs raw trades;
* ``chart``        — ``bench/chart.py``: the requests charts send, over HTTP with trades arriving,
                     and the peers (DuckDB on sorted raw trades, ClickHouse via chDB);
* ``ingest``       — loadgen: the sustained-ingest target run, a rate sweep, HTTP and JSON;
* ``fanout``       — loadgen: the 5,000-subscriber target run, then a subscriber sweep;
* ``live_history`` — chart requests against the dataset while the server ingests and pushes;
* ``influx``       — ``bench/influx.py``: the same questions asked of a real InfluxDB 2; skipped,
                     with the reason printed, when no ``influxd`` binary is available;
* ``report``       — ``docs/performance.md`` and ``docs/img/`` from the saved results only
                     (``--only report`` or ``python -m bench.report``: nothing measured).

``--quick`` uses a 1M-trade month and seconds-long runs and writes everything, its report
included, under the git-ignored ``bench/data/quick/``: a smoke test of the whole pipeline.
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
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("machine", "dataset", "backfill", "history", "chart", "ingest", "fanout", "live_history", "influx", "report")
PACKAGES = ("duckdb", "numpy", "pyarrow", "msgspec", "litestar", "uvicorn", "uvloop", "websockets", "redis", "hiredis")


class Profile:
    """Sizes and durations of one mode (full or quick)."""

    def __init__(self, quick: bool) -> None:
        def q(quick_value: Any, full_value: Any) -> Any:
            return quick_value if quick else full_value

        self.quick = quick
        data = ROOT / "bench" / "data"
        self.results_dir = q(data / "quick" / "results", ROOT / "bench" / "results")
        self.data_dir, self.scratch_dir = q(data / "quick", data), q(data / "quick-scratch", data / "scratch")
        self.doc_path = q(self.results_dir / "performance.md", ROOT / "docs" / "performance.md")
        self.trades, self.days = q(1_000_000, 50_000_000), q(30.0, 365.0)
        self.history_reps, self.history_budget_s, self.slow_reps = q(3, 15), q(0.3, 3.0), q(1, 3)
        self.load_s, self.sweep_s, self.warmup_s, self.pause_s = q(2.0, 60.0), q(1.5, 15.0), q(0.5, 5.0), q(0.3, 2.0)
        self.ingest_target = 300_000
        self.ingest_sweep = q((20_000, 50_000), (100_000, 200_000, 300_000, 400_000, 600_000, 800_000, 1_000_000))
        self.fanout_subs, self.fanout_workers, self.fanout_rate = q(200, 5_000), 2, 50_000
        self.fanout_sweep = q((50, 100), (3_000, 5_000, 6_000, 7_000, 8_000, 10_000))
        self.push_interval_ms, self.live_history_s = 250, q(2.0, 30.0)
        # The POC's own year on InfluxDB: its tasks size runs by work (TVFLUX_DOWNSAMPLE_RUN_ROWS)
        # and skip empty time, so 50M trades backfill in a few dozen runs, not ~585.
        self.influx_trades, self.influx_days = q(200_000, 50_000_000), q(30.0, 365.0)
        self.influx_rates = q((10_000,), (25_000, 50_000, 100_000, 200_000, 300_000))
        self.influx_ingest_s = q(3.0, 15.0)


# --- steps ---------------------------------------------------------------------------------------


def _out(argv: list[str]) -> str | None:
    try:
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def step_machine(p: Profile) -> dict[str, Any]:
    import psutil

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    redis = _out(["redis-server", "--version"]) or ""
    return {
        "cpu_model": models[0] if models else None,
        "cores": psutil.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "git_commit": _out(["git", "rev-parse", "--short", "HEAD"]),
        "working_tree_dirty": bool(_out(["git", "status", "--porcelain", "service", "loadgen"])),
        "packages": {name: version(name) for name in PACKAGES},
        "redis_server": redis.split("v=")[1].split()[0] if "v=" in redis else redis or None,
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
    try:
        return rebackfill(str(p.data_dir), str(p.scratch_dir / "backfill"))
    finally:
        shutil.rmtree(p.scratch_dir / "backfill", ignore_errors=True)


def step_history(p: Profile) -> dict[str, Any]:
    from bench.history import RANGES, run_history_bench

    spec = spec_for(p)
    ranges = {k: v for k, v in RANGES.items() if v <= spec.days}
    bench = run_history_bench(
        str(p.data_dir), spec, reps=p.history_reps, budget_s=p.history_budget_s, slow_reps=p.slow_reps, ranges=ranges
    )
    return asyncio.run(bench)


def step_chart(p: Profile) -> dict[str, Any]:
    from bench.chart import run_chart_bench

    reps, peer_reps, peer_budget_s = (10, 3, 1.0) if p.quick else (40, 10, 5.0)
    bench = run_chart_bench(
        str(p.data_dir),
        spec_for(p),
        str(p.scratch_dir / "chart"),
        reps=reps,
        peer_reps=peer_reps,
        peer_budget_s=peer_budget_s,
    )
    return asyncio.run(bench)


def _load(p: Profile, label: str, **config: Any) -> dict[str, Any]:
    """One load-generator run (after a pause that lets the previous server's files and sockets
    go), without its per-process server stats."""
    from loadgen.runner import LoadConfig, run_load

    time.sleep(p.pause_s)
    print(label, file=sys.stderr)
    try:
        import uvloop

        report = uvloop.run(run_load(LoadConfig(**config)))
    except ImportError:
        report = asyncio.run(run_load(LoadConfig(**config)))
    report.pop("server_stats", None)
    return report


def step_ingest(p: Profile) -> dict[str, Any]:
    base: dict[str, Any] = dict(spawn=True, transport="ws", fmt="msgpack", connections=2, frame_trades=10_000)
    base.update(window=4, warmup_s=p.warmup_s, progress=True)
    target, alt = p.ingest_target, p.ingest_sweep[1] if p.quick else 500_000
    return {
        "headline": _load(
            p,
            f"ingest: {target:,} trades/s for {p.load_s:g} s, a subscriber per symbol × tier",
            **base,
            rate=target,
            duration_s=p.load_s,
            subscribers=18,
        ),
        "sweep": [
            _load(p, f"ingest sweep: {rate:,} trades/s", **base, rate=rate, duration_s=p.sweep_s, subscribers=0)
            for rate in p.ingest_sweep
        ],
        "http": _load(
            p,
            f"ingest over HTTP (POST /api/trades, JSON): {alt:,} trades/s target",
            spawn=True,
            rate=alt,
            duration_s=p.sweep_s,
            transport="http",
            connections=4,
            frame_trades=5_000,
            warmup_s=p.warmup_s,
        ),
        "json_frames": _load(
            p,
            f"ingest over /ws/ingest, JSON frames: {alt:,} trades/s",
            **base | {"fmt": "json"},
            rate=alt,
            duration_s=p.sweep_s,
        ),
    }


def step_fanout(p: Profile) -> dict[str, Any]:
    """The target run (one-connection subscribers, 2 edge workers), the same load on one process
    and on one edge, the ingest alone (what the fan-out's CPU is measured against), a subscriber
    sweep with the workers, multiplexed and bursty variants."""

    def run(label: str, subscribers: int, workers: int, duration_s: float, **more: Any) -> dict[str, Any]:
        config: dict[str, Any] = dict(spawn=True, rate=p.fanout_rate, connections=1, frame_trades=2_000, window=4)
        config.update(push_interval_ms=p.push_interval_ms, warmup_s=p.warmup_s, progress=True, connect_concurrency=200)
        config.update(subscribers=subscribers, duration_s=duration_s, server_env={"TVFLUX_WORKERS": str(workers)})
        report = _load(p, f"fan-out, {label}: {subscribers:,} subscribers, {workers} edge workers", **config | more)
        report["config"]["workers"] = workers
        return report

    subs, w = p.fanout_subs, p.fanout_workers
    return {
        "headline": run("target run", subs, w, p.load_s),
        "by_workers": [run("one process", subs, 0, p.sweep_s), run("one edge", subs, 1, p.sweep_s)],
        "ingest_only": run("ingest alone", 0, w, p.sweep_s),
        "sweep": [run("sweep", n, w, p.sweep_s) for n in p.fanout_sweep],
        "multiplexed": run("multiplexed, 100 per connection", subs * 2, w, p.sweep_s, subs_per_conn=100),
        "batched": run("batched publisher", subs, w, p.sweep_s, frame_trades=10_000, marker_hz=5.0),
    }


def step_live_history(p: Profile) -> dict[str, Any]:
    """Chart requests (300 bars, every resolution) on a copy of the dataset, first alone, then
    while the same server ingests and pushes."""
    from bench.data import DB_NAME, ensure_dataset

    spec = spec_for(p)
    ensure_dataset(str(p.data_dir), spec)
    scratch = p.scratch_dir / "live"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    shutil.copyfile(p.data_dir / DB_NAME, scratch / DB_NAME)
    common: dict[str, Any] = dict(spawn=True, data_dir=str(scratch), connections=1, frame_trades=2_000, window=4)
    common.update(push_interval_ms=p.push_interval_ms, warmup_s=p.warmup_s, progress=True)
    common.update(history_to_ms=spec.end_ms, history_countback=300, history_connections=2, history_rate=50)
    common.update(duration_s=p.live_history_s, server_env={"TVFLUX_DOWNSAMPLE_INTERVAL_MS": "2000"})
    # the dataset's symbols, in a scratch copy of it: the load generator may write there
    common.update(symbols=("BTCUSD", "ETHUSD", "LTCUSD"), allow_real_symbols=True)
    subs = 200 if p.quick else 1_000
    try:
        idle = _load(p, "history with no other load (same server setup)", rate=0, subscribers=0, **common)
        label = f"history under load: ingest {p.fanout_rate:,}/s, {subs:,} subscribers, 50 requests/s"
        return {"idle": idle, "loaded": _load(p, label, rate=p.fanout_rate, subscribers=subs, **common)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def step_influx(p: Profile) -> dict[str, Any] | None:
    from bench import influx

    if influx.influxd_binary() is None:
        print("influx: skipped, no influxd binary (TVFLUX_INFLUXD or PATH; docs/influxdb.md)", file=sys.stderr)
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


# --- driver --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small dataset, short runs (smoke test)")
    parser.add_argument("--only", help=f"comma-separated steps among {', '.join(STEPS)}")
    parser.add_argument("--skip", help="comma-separated steps to leave out")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    p = Profile(args.quick)
    skip = {s.strip() for s in (args.skip or "").split(",") if s.strip()}
    steps = [s.strip() for s in args.only.split(",")] if args.only else list(STEPS)
    if unknown := (set(steps) | skip) - set(STEPS):
        parser.error(f"unknown steps: {', '.join(sorted(unknown))}")
    if "machine" not in steps and not (p.results_dir / "machine.json").exists():
        steps.insert(0, "machine")
    started = time.perf_counter()
    for step in (s for s in steps if s not in skip):
        t0 = time.perf_counter()
        print(f"== {step} ==", file=sys.stderr, flush=True)
        result = globals()[f"step_{step}"](p)
        if result is not None:
            result["_step_seconds"] = round(time.perf_counter() - t0, 1)
            p.results_dir.mkdir(parents=True, exist_ok=True)
            tmp = p.results_dir / f"{step}.json.tmp"
            tmp.write_text(json.dumps(result, indent=1, default=str))
            tmp.replace(p.results_dir / f"{step}.json")
        print(f"== {step} done in {time.perf_counter() - t0:.1f} s ==", file=sys.stderr, flush=True)
    print(f"all done in {time.perf_counter() - started:.0f} s; report: {p.doc_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
