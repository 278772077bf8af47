"""``tvflux-bench`` (also ``python -m bench``): the benchmarks' own entry point.

* ``tvflux-bench history``  — history latency: pre-downsampled tiers vs per-second bars
  aggregated at request time (DuckDB and Redis) vs raw trades;
* ``tvflux-bench chart``    — the requests charts really send, server and client time, and
  the peers (DuckDB sorted raw trades, ClickHouse via chDB) on the same trades;
* ``tvflux-bench backfill`` — generation and backfill throughput on the benchmark dataset;
* ``tvflux-bench all``      — everything, report included (same as ``python -m bench.run``).

Separate from ``tvflux`` on purpose: the product CLI never imports the benchmark (its
matplotlib, Redis and load-generator dependencies), and the benchmark drives the product
the way a user would (``bench/data.py`` runs ``tvflux generate`` as a subprocess).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    from bench import chart, history

    parser = argparse.ArgumentParser(
        prog="tvflux-bench", description="tvflux benchmarks (history, chart, backfill, all)"
    )
    sub = parser.add_subparsers(dest="bench_command", required=True)
    p = sub.add_parser("history", help="history latency: tiers vs per-second bars vs raw trades")
    history.add_arguments(p)
    p.set_defaults(func=cmd_history)
    p = sub.add_parser("chart", help="the requests charts send (hot window, scroll-back, ranges) and the peers")
    chart.add_arguments(p)
    p.set_defaults(func=cmd_chart)
    p = sub.add_parser("backfill", help="time generation (when building) and backfill of the dataset")
    p.add_argument("--bench-dir", default="bench/data")
    p.add_argument("--trades", type=int, default=50_000_000)
    p.add_argument("--days", type=float, default=365.0)
    p.add_argument("--json", metavar="PATH")
    p.set_defaults(func=cmd_backfill)
    p = sub.add_parser("all", help="run every benchmark and render docs/performance.md")
    p.add_argument("--quick", action="store_true", help="small dataset, short runs (a smoke test)")
    p.set_defaults(func=cmd_all)
    return parser


def _done(args: argparse.Namespace, results: dict[str, Any], tables: str) -> int:
    """Print the report's tables of a run, save its JSON when asked; 1 when answers differed."""
    if tables:
        print(tables)
    if results.get("mismatches"):
        print("MISMATCHES: " + json.dumps(results["mismatches"][:10]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if results.get("mismatches") else 0


def cmd_history(args: argparse.Namespace, settings: Any) -> int:
    from bench.data import DatasetSpec
    from bench.history import RANGES, STRATEGIES, run_history_bench
    from bench.report import EMBEDDED, history_tables

    spec = DatasetSpec(trades=args.trades, days=args.days, end_ms=args.end_ms, seed=args.seed)
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    if unknown := set(strategies) - set(STRATEGIES):
        print(f"unknown strategies: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    bench = run_history_bench(
        args.bench_dir,
        spec,
        symbol=args.symbol,
        strategies=strategies,
        ranges={k: v for k, v in RANGES.items() if v <= spec.days},
        reps=args.reps,
        budget_s=args.budget_s,
        slow_reps=args.slow_reps,
        plan=settings.plan,
    )
    results = asyncio.run(bench)
    return _done(args, results, history_tables(results, EMBEDDED))


def cmd_chart(args: argparse.Namespace, settings: Any) -> int:
    from bench.chart import run_chart_bench
    from bench.data import DatasetSpec
    from bench.report import chart

    spec = DatasetSpec(trades=args.trades, days=args.days)
    peers = tuple(x for x in args.peers.split(",") if x)
    bench = run_chart_bench(
        args.bench_dir, spec, args.scratch_dir, symbol=args.symbol, reps=args.reps, rate=args.rate, peers=peers
    )
    results = asyncio.run(bench)
    values = chart({"chart": results})
    return _done(args, results, values["cells"] + "\n\n" + values["peers"])


def cmd_backfill(args: argparse.Namespace, settings: Any) -> int:
    from bench.data import DatasetSpec, ensure_dataset, rebackfill

    meta = ensure_dataset(args.bench_dir, DatasetSpec(trades=args.trades, days=args.days))
    b = rebackfill(args.bench_dir, os.path.join(args.bench_dir, "backfill"))
    print(
        f"backfill: {b['trades']:,} trades through every tier in {b['seconds']} s ({b['trades_per_s']:,} trades/s), peak RSS {b['peak_rss_mb']} MB"
    )
    return _done(args, {"dataset": meta, "backfill": b}, "")


def cmd_all(args: argparse.Namespace, settings: Any) -> int:
    from bench.run import main as run_main

    return run_main(["--quick"] if args.quick else [])


def main(argv: Sequence[str] | None = None) -> int:
    """Settings come from ``TVFLUX_*`` like ``tvflux``'s (the history benchmark reads the
    downsampling plan from them); logging is configured here once."""
    from service.core.errors import ConfigError, TvfluxError
    from service.core.settings import load_settings
    from service.ops.console import configure_logging

    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        print(f"tvflux-bench: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        return int(args.func(args, settings) or 0)
    except TvfluxError as exc:
        print(f"tvflux-bench: {exc.message}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C (asyncio.run cancels its task)
        print("tvflux-bench: interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as exc:  # a step that failed says why in its message
        print(f"tvflux-bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
