"""Soak benchmark: ingest + subscribers for a long run; the server's RSS as a curve, against
the bound its settings give it.

    python -m bench.soak [--duration 1800] [--rate 20000] [--subscribers 500] [--duckdb-memory-mb 256]

Runs ``tvflux-loadgen --spawn`` (a fresh server on 127.0.0.1, stops by itself) with
``TVFLUX_DUCKDB_MEMORY_LIMIT`` set, and reads its per-second samples. The bound: the RSS the
server had when the load started (interpreter, libraries, connections) plus DuckDB's memory
limit plus the hot window's (``TVFLUX_HOT_WINDOW_BARS`` bars × tiers × symbols, at the bytes
a bar takes, measured here). Reported: the per-minute curve, its peak against the bound, the
slope of the last ten minutes (a plateau is ~0) and the drift of the last minute against the
minute after warm-up. Prints a table and writes ``bench/results/soak.json``. A benchmark,
not a test: figures, no assertions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def drift(samples: list[dict], warmup_s: float) -> dict:
    rss = [(s["t"], s["server_rss_mb"]) for s in samples if s.get("server_rss_mb") is not None]
    if not rss:
        return {"error": "no RSS samples"}
    end_t = rss[-1][0]
    early = [v for t, v in rss if warmup_s <= t < warmup_s + 60]
    late = [v for t, v in rss if t >= end_t - 60]
    if not early or not late:
        return {"error": "run too short for a drift figure (needs warm-up + 2 minutes)"}
    base, last = statistics.median(early), statistics.median(late)
    return {
        "rss_after_warmup_mb": base,
        "rss_last_minute_mb": last,
        "rss_peak_mb": max(v for _, v in rss),
        "drift_pct": round(100 * (last - base) / base, 2),
        "duration_s": end_t,
    }


def curve(samples: list[dict]) -> list[dict]:
    """Median RSS and server CPU per minute of the run."""
    minutes: dict[int, list[dict]] = {}
    for s in samples:
        if s.get("server_rss_mb") is not None:
            minutes.setdefault(int(s["t"] // 60), []).append(s)
    return [
        {
            "minute": m,
            "rss_mb": statistics.median(r["server_rss_mb"] for r in rows),
            "server_cpu_pct": statistics.median(r.get("server_cpu") or 0.0 for r in rows),
        }
        for m, rows in sorted(minutes.items())
    ]


def slope_mb_per_min(points: list[dict], last_min: int = 10) -> float | None:
    """Least-squares slope of the per-minute RSS over the last ``last_min`` whole minutes."""
    tail = points[-(last_min + 1) : -1] if len(points) > last_min + 1 else points[:-1]
    if len(tail) < 3:
        return None
    xs, ys = [p["minute"] for p in tail], [p["rss_mb"] for p in tail]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs), 2)


def hot_window_mb(bars: int, tiers: int, symbols: int) -> float:
    """What the hot window may hold at most, at the bytes one bar takes in its ring (the
    Bar struct, its floats and the ring's time entry), measured with tracemalloc."""
    import tracemalloc

    from service.core.models import Bar

    n = 20_000
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    ring = [Bar(1_700_000_000_000 + i, i + 0.5, i + 1.5, i - 0.5, i + 0.25, i * 0.001) for i in range(n)]
    times = [b.time for b in ring]
    per_bar = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    del ring, times
    return round(bars * tiers * symbols * per_bar / 2**20, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1800)
    parser.add_argument("--duckdb-memory-mb", type=int, default=256, help="TVFLUX_DUCKDB_MEMORY_LIMIT of the server")
    parser.add_argument("--rate", type=float, default=20_000)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--warmup", type=float, default=60)
    args = parser.parse_args(argv)
    loadgen = str(Path(sys.executable).parent / "tvflux-loadgen")
    with tempfile.TemporaryDirectory(prefix="tvflux-soak-") as tmp:
        report_path = Path(tmp) / "report.json"
        cmd = [
            loadgen,
            "--spawn",
            "--rate",
            str(args.rate),
            "--subscribers",
            str(args.subscribers),
            "--duration",
            str(args.duration),
            "--warmup",
            "5",
            "--server-env",
            f"TVFLUX_DUCKDB_MEMORY_LIMIT={args.duckdb_memory_mb}MB",
            "--quiet",
            "--json",
            str(report_path),
        ]
        done = subprocess.run(cmd, timeout=args.duration + 600)
        if not report_path.exists():
            print(f"the load generator failed (exit {done.returncode})", file=sys.stderr)
            return 1
        report = json.loads(report_path.read_text())
    ingest, subs = report.get("ingest", {}), report.get("subscribers", {})
    problems = {
        "ingest_errors": ingest.get("errors"),
        "trades_unacked": ingest.get("trades_unacked"),
        "trades_refused": ingest.get("trades_refused"),
        "ingest_disconnects": ingest.get("disconnects"),
        "subscriber_errors": subs.get("errors"),
        "subscribers_cut_off": subs.get("cut_off"),
        "subscribers_starved": subs.get("starved"),
        "connect_failures": subs.get("connect_failures"),
    }
    samples = report.get("samples", [])
    points = curve(samples)
    from service.core.settings import load_settings

    settings = load_settings({})
    start_mb = next((s["server_rss_mb"] for s in samples if s.get("server_rss_mb") is not None), None)
    hot_mb = hot_window_mb(settings.hot_window_bars, len(settings.plan.tiers), len(settings.symbols))
    peak_mb = max((p["rss_mb"] for p in points), default=None)
    bound = {
        "start_mb": start_mb,
        "duckdb_memory_limit_mb": args.duckdb_memory_mb,
        "hot_window_mb": hot_mb,
        "bound_mb": None if start_mb is None else round(start_mb + args.duckdb_memory_mb + hot_mb, 1),
        "peak_minute_median_mb": peak_mb,
        "slope_last_10_min_mb_per_min": slope_mb_per_min(points),
    }
    result = {
        "settings": vars(args),
        "curve": points,
        "bound": bound,
        "drift": drift(samples, args.warmup),
        "problems": problems,
        "achieved_trades_per_s": ingest.get("achieved_per_s"),
        "summary": {k: v for k, v in report.items() if k != "samples"},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2, default=str))
    d = result["drift"]
    print(f"soak {args.duration:.0f}s at {args.rate:,.0f} trades/s with {args.subscribers} subscribers")
    for key, value in {**d, **bound}.items():
        print(f"  {key:>22}: {value}")
    for key, value in problems.items():
        print(f"  {key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
