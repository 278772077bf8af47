"""Soak benchmark: ingest + subscribers for a long run, then the server's RSS drift.

    python -m bench.soak [--duration 600] [--rate 20000] [--subscribers 500]

Runs ``tvflux-loadgen --spawn`` (a fresh server on 127.0.0.1, stops by itself) and reads its
per-second samples. Drift compares the median RSS of the last minute with the median of the
minute after warm-up (caches, connection buffers and DuckDB's pools fill during the first
minute, which is growth, not a leak). The goal is < 5 %. Prints a table and writes
``bench/results/soak.json``. A benchmark, not a test: figures, no assertions.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600)
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
    result = {
        "settings": vars(args),
        "drift": drift(report.get("samples", []), args.warmup),
        "problems": problems,
        "achieved_trades_per_s": ingest.get("achieved_per_s"),
        "summary": {k: v for k, v in report.items() if k != "samples"},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2, default=str))
    d = result["drift"]
    print(f"soak {args.duration:.0f}s at {args.rate:,.0f} trades/s with {args.subscribers} subscribers")
    for key, value in d.items():
        print(f"  {key:>22}: {value}")
    for key, value in problems.items():
        print(f"  {key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
