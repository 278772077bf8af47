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
    parser = argparse.ArgumentParser(prog="tvflux-bench", description="tvflux benchmarks (history, backfill, all)")
    sub = parser.add_subparsers(dest="bench_command", required=True)

    from bench import history as bench_history

    history = sub.add_parser("history", help="history latency: tiers vs per-second bars vs raw trades")
    bench_history.add_arguments(history)
    history.set_defaults(func=bench_history.cmd_history)

    from bench import chart as bench_chart

    chart = sub.add_parser("chart", help="the requests charts send (hot window, scroll-back, ranges) and the peers")
    bench_chart.add_arguments(chart)
    chart.set_defaults(func=lambda args, settings: bench_chart.main_args(args))

    backfill = sub.add_parser("backfill", help="time generation (when building) and backfill of the dataset")
    backfill.add_argument("--bench-dir", default="bench/data")
    backfill.add_argument("--trades", type=int, default=50_000_000)
    backfill.add_argument("--days", type=float, default=365.0)
    backfill.add_argument("--json", metavar="PATH")
    backfill.set_defaults(func=cmd_backfill)

    everything = sub.add_parser("all", help="run every benchmark and render docs/performance.md")
    everything.add_argument("--quick", action="store_true", help="small dataset, short runs (a smoke test)")
    everything.set_defaults(func=cmd_all)
    return parser


def cmd_backfill(args: argparse.Namespace, settings: Any) -> int:
    from bench.data import DatasetSpec, ensure_dataset, rebackfill

    spec = DatasetSpec(trades=args.trades, days=args.days)
    meta = ensure_dataset(args.bench_dir, spec)
    result = {"dataset": meta, "backfill": rebackfill(args.bench_dir, os.path.join(args.bench_dir, "backfill"))}
    b = result["backfill"]
    print(
        f"backfill: {b['trades']:,} trades through every tier in {b['seconds']} s "
        f"({b['trades_per_s']:,} trades/s), peak RSS {b['peak_rss_mb']} MB"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


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
