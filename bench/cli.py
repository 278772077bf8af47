"""``tvflux bench …``: the benchmark sub-commands, registered into tvflux's CLI by
:func:`register` (``service/ops/cli.py`` calls it when the ``loadgen`` package is installed).

* ``tvflux bench history``  — history latency: pre-downsampled tiers vs per-second bars
  aggregated at request time (DuckDB and Redis) vs raw trades;
* ``tvflux bench backfill`` — generation and backfill throughput on the benchmark dataset;
* ``tvflux bench all``      — everything, report included (same as ``python -m bench.run``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks (history, backfill, all)")
    sub = bench.add_subparsers(dest="bench_command", required=True)

    from bench import history as bench_history

    history = sub.add_parser("history", help="history latency: tiers vs per-second bars vs raw trades")
    bench_history.add_arguments(history)
    history.set_defaults(func=bench_history.cmd_history)

    backfill = sub.add_parser("backfill", help="time generation (when building) and backfill of the dataset")
    backfill.add_argument("--bench-dir", default="bench/data")
    backfill.add_argument("--trades", type=int, default=50_000_000)
    backfill.add_argument("--days", type=float, default=365.0)
    backfill.add_argument("--json", metavar="PATH")
    backfill.set_defaults(func=cmd_backfill)

    everything = sub.add_parser("all", help="run every benchmark and render docs/performance.md")
    everything.add_argument("--quick", action="store_true", help="small dataset, short runs (a smoke test)")
    everything.set_defaults(func=cmd_all)


def cmd_backfill(args: argparse.Namespace, settings: Any) -> int:
    import os

    from bench.data import DatasetSpec, ensure_dataset, rebackfill

    spec = DatasetSpec(trades=args.trades, days=args.days)
    meta = ensure_dataset(args.bench_dir, spec)
    result = {"dataset": meta, "backfill": rebackfill(args.bench_dir, os.path.join(args.bench_dir, "backfill"))}
    b = result["backfill"]
    print(f"backfill: {b['trades']:,} trades through every tier in {b['seconds']} s "
          f"({b['trades_per_s']:,} trades/s), peak RSS {b['peak_rss_mb']} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def cmd_all(args: argparse.Namespace, settings: Any) -> int:
    import os

    try:
        from bench.run import main as run_main
    except ImportError:  # `bench/` lives next to the (editable-installed) loadgen package
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from bench.run import main as run_main

    return run_main(["--quick"] if args.quick else [])


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m bench.cli history …``) until the ``bench``
    command is wired into ``tvflux``."""
    from service.core.settings import load_settings
    import os

    parser = argparse.ArgumentParser(prog="tvflux")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args, load_settings(os.environ)) or 0)


if __name__ == "__main__":
    sys.exit(main())
