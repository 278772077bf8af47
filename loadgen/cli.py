"""``tvflux-loadgen``: publish trades, subscribe to bars, measure, report.

Examples::

    tvflux-loadgen --spawn --rate 300000 --duration 60           # ingest only
    tvflux-loadgen --spawn --rate 50000 --subscribers 5000 --push-interval-ms 250
    tvflux-loadgen --url http://127.0.0.1:8000 --pid 1234 --rate 20000 --subscribers 100 --json

Trades go only to the load generator's own symbols (``LOADGEN-1..3`` by default): a run
that would publish to other symbols of a server that is not a scratch one is refused
unless ``--allow-real-symbols`` (see :mod:`loadgen.guard`). Only 127.0.0.1 is targeted, and every run stops by itself after warm-up + duration +
a bounded drain. ``--spawn`` starts ``tvflux serve`` on a free port with a scratch data
directory (synthetic trades off) and stops it at the end; otherwise give ``--pid`` of
the server to get its CPU and memory in the report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from loadgen.guard import DEFAULT_SYMBOLS
from loadgen.runner import DEFAULT_RESOLUTIONS, LoadConfig, run_load
from loadgen.stats import fmt_latency, fmt_num, table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tvflux-loadgen",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = p.add_argument_group("target")
    target.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL (127.0.0.1 only)")
    target.add_argument("--spawn", action="store_true", help="start `tvflux serve` for the run")
    target.add_argument("--pid", type=int, help="server pid, for its CPU and RSS (not needed with --spawn)")
    target.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="TVFLUX_* setting for the spawned server (repeatable)",
    )
    target.add_argument("--data-dir", help="data dir of the spawned server (default: a scratch dir)")
    target.add_argument("--push-interval-ms", type=int, help="TVFLUX_PUSH_INTERVAL_MS of the spawned server")
    target.add_argument(
        "--workers", type=int, help="edge processes of the spawned server (tvflux serve --workers; default 0)"
    )
    target.add_argument("--token", help="bearer token for ingest, if the server requires one")
    target.add_argument(
        "--allow-real-symbols",
        action="store_true",
        help="publish to symbols that are not the load generator's own (LOADGEN-…) on a server that "
        "is not a scratch one: its trades and markers (priced ≈1.8e12) stay in their bars for good",
    )

    pub = p.add_argument_group("publishing")
    pub.add_argument("--rate", type=float, default=10_000, help="target trades/s (0: none; default 10000)")
    pub.add_argument("--transport", choices=("ws", "http"), default="ws")
    pub.add_argument(
        "--format",
        dest="fmt",
        choices=("msgpack", "json"),
        default="msgpack",
        help="/ws/ingest frame encoding (HTTP is always JSON)",
    )
    pub.add_argument("--connections", type=int, default=2, help="publishing connections (default 2)")
    pub.add_argument("--frame-trades", type=int, default=5_000, help="trades per frame/request (default 5000)")
    pub.add_argument("--window", type=int, default=4, help="unacknowledged frames per connection (default 4)")
    pub.add_argument(
        "--marker-hz",
        type=float,
        default=20.0,
        help="latency markers per symbol per second (default 20; needs subscribers)",
    )

    sub = p.add_argument_group("subscribing")
    sub.add_argument("--subscribers", type=int, default=0, help="subscriptions (default 0)")
    sub.add_argument("--subs-per-conn", type=int, default=1, help="subscriptions per connection (default 1)")
    sub.add_argument(
        "--symbols",
        default=",".join(DEFAULT_SYMBOLS),
        help="symbols to publish to and subscribe to (default: the load generator's own, which a "
        "spawned server is created with; another server must list them in TVFLUX_SYMBOLS)",
    )
    sub.add_argument("--resolutions", default=",".join(DEFAULT_RESOLUTIONS))
    sub.add_argument("--connect-concurrency", type=int, default=100)
    sub.add_argument("--deflate", action="store_true", help="negotiate permessage-deflate like browsers do")
    sub.add_argument(
        "--protocol",
        type=int,
        choices=(1, 2),
        default=2,
        help="/ws protocol version: 2 = topic frames, what the datafeed speaks (default); 1 = one message per id",
    )

    hist = p.add_argument_group("history under load")
    hist.add_argument("--history-rate", type=float, default=0.0, help="/api/bars requests per second (default 0)")
    hist.add_argument("--history-countback", type=int, default=300)
    hist.add_argument("--history-to-ms", type=int, help="`to` of the requests (default: now)")

    run = p.add_argument_group("run")
    run.add_argument("--duration", type=float, default=10.0, help="measured seconds (default 10)")
    run.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (default 2)")
    run.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="write the report as JSON to PATH (or stdout with no PATH)"
    )
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    env = {}
    for item in args.server_env:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--server-env expects NAME=VALUE, got {item!r}")
        env[name if name.startswith("TVFLUX_") else "TVFLUX_" + name.upper()] = value
    if args.workers is not None:
        env["TVFLUX_WORKERS"] = str(args.workers)
    return LoadConfig(
        url=args.url,
        spawn=args.spawn,
        pid=args.pid,
        server_env=env,
        data_dir=args.data_dir,
        rate=args.rate,
        transport=args.transport,
        fmt=args.fmt,
        connections=args.connections,
        frame_trades=args.frame_trades,
        window=args.window,
        marker_hz=args.marker_hz,
        token=args.token,
        allow_real_symbols=args.allow_real_symbols,
        subscribers=args.subscribers,
        subs_per_conn=args.subs_per_conn,
        symbols=tuple(s.strip() for s in args.symbols.split(",") if s.strip()),
        resolutions=tuple(r.strip() for r in args.resolutions.split(",") if r.strip()),
        connect_concurrency=args.connect_concurrency,
        deflate=args.deflate,
        push_interval_ms=args.push_interval_ms,
        protocol=args.protocol,
        history_rate=args.history_rate,
        history_countback=args.history_countback,
        history_to_ms=args.history_to_ms,
        duration_s=args.duration,
        warmup_s=args.warmup,
        progress=not args.quiet,
    )


def render(report: dict[str, Any]) -> str:
    ing, subs, res = report["ingest"], report["subscribers"], report["resources"]
    rows: list[list[Any]] = [
        ["measured", f"{report['measure_s']} s"],
        ["ingest target", fmt_num(ing["target_per_s"], "trades/s")],
        ["ingest achieved (acked)", fmt_num(ing["achieved_per_s"], "trades/s")],
        ["trades sent / acked", f"{ing['trades_sent']:,} / {ing['trades_acked']:,}"],
        ["refused / unacked / dup", f"{ing['trades_refused']:,} / {ing['trades_unacked']:,} / {ing['duplicates']:,}"],
        ["ingest errors", ", ".join(f"{k}: {v}" for k, v in ing["errors"].items()) or "none"],
        ["ack round trip", fmt_latency(ing["ack_rtt_ms"])],
        ["stored by server (total)", fmt_num(ing["server_stored_total"])],
    ]
    if subs["subscriptions"]:
        rows += [
            [
                "subscriptions / connections",
                f"{subs['subscriptions']:,} / {subs['connections']:,} "
                f"(connected in {subs['connect_s']} s, {subs['connect_failures']} failed)",
            ],
            ["pushed frames received", fmt_num(subs["frames_per_s"], "frames/s")],
            ["trade → pushed bar latency", fmt_latency(report["latency_ms"])],
            ["markers sent / missed", f"{report['markers']['sent']:,} / {report['markers']['missed']:,}"],
            ["worst gap per subscription", fmt_latency(subs["max_gap_ms"])],
            ["cut off / starved", f"{subs['cut_off']} / {subs['starved']}"],
            ["resets / sub errors", f"{subs['resets']} / {sum(subs['errors'].values())}"],
        ]
    hist = report.get("history")
    if hist:
        rows += [
            ["history requests", f"{hist['requests']:,} ({hist['requests_per_s']}/s, {hist['errors']} errors)"],
            ["history latency", fmt_latency(hist["latency_ms"])],
        ]
    rows += [
        [
            "server CPU avg / max",
            f"{fmt_num(res['server_cpu_avg_pct'], '%')} / {fmt_num(res['server_cpu_max_pct'], '%')}"
            f" (of one core; {res['cpus']} cores; edge processes included)",
        ],
        ["server CPU per pushed frame", f"{fmt_num(res.get('server_cpu_us_per_frame'), 'µs', 1)}"],
        [
            "server RSS peak / end",
            f"{fmt_num(res['server_rss_peak_mb'], 'MB')} / {fmt_num(res['server_rss_end_mb'], 'MB')}",
        ],
        [
            "loadgen CPU avg / max",
            f"{fmt_num(res['loadgen_cpu_avg_pct'], '%')} / {fmt_num(res['loadgen_cpu_max_pct'], '%')}",
        ],
        ["other processes CPU avg", fmt_num(res["others_cpu_avg_pct"], "%")],
    ]
    out = table(rows, ["tvflux-loadgen", "result"], align="ll")
    if report["notes"]:
        out += "\n\nnotes:\n" + "\n".join(f"  - {n}" for n in report["notes"])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        print(
            f"tvflux-loadgen: --data-dir {args.data_dir}: no such directory (omit it for a scratch server)",
            file=sys.stderr,
        )
        return 2
    cfg = config_from_args(args)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        report = asyncio.run(run_load(cfg))
    except KeyboardInterrupt:
        return 130
    except (RuntimeError, OSError) as exc:  # RefusedRun too: nothing was sent
        print(f"tvflux-loadgen: {exc}", file=sys.stderr)
        return 1
    if args.json == "-":
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(render(report))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
