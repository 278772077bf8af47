"""``tvflux``: serve, generate a dataset, run downsampling.

``main(argv) -> int``; logging is configured here once, settings are built once from
``TVFLUX_*`` variables (flags override them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Sequence

from service.core.errors import ConfigError, TvfluxError, UsageError
from service.core.settings import Settings, load_settings
from service.core.synthetic import SyntheticMarket
from service.core.timearg import FORMS, parse_time_ms
from service.ops import commands, influx_cli, symbols_cli
from service.ops import workers as workers_cli
from service.ops.console import Progress, configure_logging
from service.ops.downsample import run_to_edge
from service.ops.remote import ServiceSink
from service.runtime.clock import now_ms
from service.runtime.sources import backfill_synthetic
from service.storage.base import Store

log = logging.getLogger("tvflux")
DAY_MS = 86_400_000


# --- serve --------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from service.api.app import create_app

    if settings.host not in ("127.0.0.1", "localhost", "::1") and not (settings.ingest_token and settings.admin_token):
        log.warning(
            "!!! binding %s WITHOUT %s: anyone who can reach this port can post trades or run admin "
            "actions; set TVFLUX_INGEST_TOKEN and TVFLUX_ADMIN_TOKEN",
            settings.host,
            " and ".join(
                n
                for n, v in (
                    ("TVFLUX_INGEST_TOKEN", settings.ingest_token),
                    ("TVFLUX_ADMIN_TOKEN", settings.admin_token),
                )
                if not v
            ),
        )
    from service.ops.workers import EdgeSupervisor, listen_socket, shared_port_socket, tune_gc, uvicorn_config

    workers = args.workers if getattr(args, "workers", None) is not None else settings.workers
    # Bind first: on a busy port, fail at once, not after the store, the spool replay and
    # the synthetic backfill (uvicorn binds only after the app's startup).
    public: socket.socket | None = None
    if workers:
        try:  # reserved (bound, not listening): the edges listen on it, the core on loopback
            public = shared_port_socket(settings.host, settings.port, listen=False)
        except OSError as exc:
            print(f"tvflux: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
            return 1
        sock = listen_socket("127.0.0.1", 0)
    else:
        sock = listen_socket(settings.host, settings.port)
    if sock is None:
        return 1
    app = create_app(settings)
    server = uvicorn.Server(uvicorn_config(app, settings))
    tune_gc()
    public_port = settings.port if workers else sock.getsockname()[1]
    print(
        f"tvflux serving on http://{settings.host}:{public_port}/ (store: {settings.store}, "
        f"data: {os.path.abspath(settings.data_dir)}"
        + (f", {workers} edge workers, core on 127.0.0.1:{sock.getsockname()[1]}" if workers else "")
        + ")",
        file=sys.stderr,
        flush=True,
    )
    from service.ops.discovery import remove_service_file, url_for, write_service_file

    # commands on this data dir find the service here, whatever port it listens on
    write_service_file(settings.data_dir, url_for(settings.host, public_port), settings.store)
    supervisor = None
    if workers:
        supervisor = EdgeSupervisor(workers, f"http://127.0.0.1:{sock.getsockname()[1]}", settings)
        supervisor.start()
    try:
        server.run(sockets=[sock])
    finally:
        if supervisor is not None:
            supervisor.stop()
        if public is not None:
            public.close()
        sock.close()
        remove_service_file(settings.data_dir)
    return 0 if server.started else 1


# --- generate -----------------------------------------------------------------------------

# Through a running service, generated trades travel as HTTP batches (~0.3M trades/s on a
# quiet machine, while the service also serves); beyond this many, stopping the service and
# writing the file in bulk (~2M trades/s) is the reasonable way, and generate says so.
GENERATE_VIA_SERVICE_MAX = 5_000_000


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from service.ops import remote
    from service.storage.factory import build_store, store_file

    if args.end_ms is not None:
        args.end_ms = parse_time_ms(args.end_ms, "end-ms")
    symbols = tuple(s.strip() for s in args.symbols.split(",") if s.strip()) if args.symbols else settings.symbols
    # Generated history goes straight into the store, in bulk: the embedded file (through the
    # service when one holds it), or InfluxDB, which takes writes from any number of clients
    # (its tasks build the tiers; history already behind their watermarks is rebuilt as late data).
    url = remote.serving_url(settings) if store_file(settings) is not None else None
    if url is None:
        return asyncio.run(_generate(build_store(settings), symbols, args, None))
    if args.trades > GENERATE_VIA_SERVICE_MAX:
        found = _service_pid(settings)
        again = " ".join(["tvflux", *sys.argv[1:]]) if sys.argv[1:] else "tvflux generate"
        print(
            f"tvflux: the service at {url}{f' (pid {found})' if found else ''} holds the store of "
            f"{os.path.abspath(settings.data_dir)}. {args.trades:,} trades are too many to send through it "
            f"(at most {GENERATE_VIA_SERVICE_MAX:,}; bulk writes to the file are several times faster). "
            f"Either stop the service{f' (kill {found})' if found else ''}, run\n  {again}\nand start it again; "
            f"or write fewer through the running service: --trades {GENERATE_VIA_SERVICE_MAX}",
            file=sys.stderr,
        )
        return 2
    print(f"generate: the store is open in the running service; sending the trades to {url}", file=sys.stderr)
    sink = remote.ServiceSink(url, settings.admin_token, batch_trades=settings.max_batch_trades)
    code = asyncio.run(_generate(sink, symbols, args, url))
    if code == 0:
        remote.run_downsampling(url, settings.admin_token)
    return code


def _service_pid(settings: Settings) -> int | None:
    from service.ops.discovery import read_service_file

    found = read_service_file(settings.data_dir)
    return None if found is None else int(found["pid"])


async def _generate(
    store: Store | ServiceSink, symbols: tuple[str, ...], args: argparse.Namespace, url: str | None
) -> int:
    """Into ``store`` directly (``url`` is None), or through the service at ``url`` (``store``
    is then its :class:`ServiceSink`)."""
    from service.ops.generate import Overlap, ServiceView, StoreView, join, place, say, utc

    days, trades, seed, end_ms = args.days, args.trades, args.seed, args.end_ms
    if isinstance(store, ServiceSink):
        assert url is not None
        view: ServiceView | StoreView = ServiceView(url, store.token)
    else:
        await store.start()
        view = StoreView(store)
    interrupted = False
    try:
        span_ms = int(days * DAY_MS)
        asked = end_ms if end_ms is not None else now_ms()
        try:
            end = await place(view, symbols, span_ms, asked, fixed=end_ms is not None)
        except Overlap as exc:
            free = await place(view, symbols, span_ms, asked, fixed=False)
            say(
                f"tvflux: the store already has trades of {exc.symbol} at {utc(exc.first_ms)} UTC, inside "
                f"that span; refusing to write over them. To write the {days:g} days before them, pass "
                f"--end-ms {free}; or use a fresh TVFLUX_DATA_DIR"
            )
            return 2
        if end != asked:
            say(
                f"generate: the store already has trades from {utc(end)} UTC on; writing the {days:g} days "
                f"before them (--end-ms {end})"
            )
        start = end - span_ms
        market = SyntheticMarket(symbols, seed=(seed, start, end))  # another span, another walk
        for symbol, how in (await join(view, market, start, end)).items():
            say(f"generate: {symbol} joins the stored prices on either side, {how}")
        progress = Progress("generate", trades, "trades")
        written = await backfill_synthetic(
            store, market, trades / (span_ms / 1000), span_ms, end, on_written=progress.update
        )
        progress.finish(written)
        say(
            f"wrote {written:,} trades for {','.join(symbols)} over {days:g} days ({utc(start)} to {utc(end)} UTC)"
            f"{' through the service' if url else ''}"
        )
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancelled us
        interrupted = True
        raise KeyboardInterrupt from None
    finally:
        if not isinstance(store, ServiceSink):
            # after Ctrl-C a write may still hold the file (DuckDB recovers it at the next open)
            with contextlib.suppress(Exception) if interrupted else contextlib.nullcontext():
                await store.close()
    return 0


# --- downsample ---------------------------------------------------------------------------


def cmd_downsample(args: argparse.Namespace, settings: Settings) -> int:
    from service.ops import remote
    from service.storage.factory import build_store

    url = remote.serving_url(settings)
    if url is not None:  # the service holds the store file: it runs the plan
        remote.run_downsampling(url, settings.admin_token)
        return 0
    return asyncio.run(_downsample(build_store(settings)))


async def _downsample(store: Store) -> int:
    await store.start()
    try:
        await run_to_edge(store)
    finally:
        await store.close()
    return 0


# --- entry point ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvflux", description="Streaming candlestick service for crypto trades.")
    parser.add_argument("--data-dir", help="overrides TVFLUX_DATA_DIR")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP/WebSocket service")
    serve.add_argument("--host", help="overrides TVFLUX_HOST")
    serve.add_argument("--port", type=int, help="overrides TVFLUX_PORT")
    serve.add_argument(
        "--workers",
        type=workers_cli.count,
        help="edge processes that hold the clients on the port while this one is the core (overrides TVFLUX_WORKERS)",
    )
    serve.set_defaults(func=cmd_serve)

    gen = sub.add_parser(
        "generate",
        help="write a synthetic dataset into the embedded store (before any trades "
        "it holds; through the running service for up to 5M trades)",
    )
    gen.add_argument("--symbols", help="comma-separated (default: TVFLUX_SYMBOLS)")
    gen.add_argument("--days", type=float, default=365.0, help="span ending now (default 365)")
    gen.add_argument("--trades", type=int, default=50_000_000, help="total trades (default 50M)")
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument(
        "--end-ms", "--end", dest="end_ms", metavar="TIME", help=f"end of the span (default: now): {FORMS} (UTC)"
    )
    gen.set_defaults(func=cmd_generate)

    down = sub.add_parser(
        "downsample",
        help="run the downsampling plan up to the live edge (by the running service, if one holds the store)",
    )
    down.set_defaults(func=cmd_downsample)

    workers_cli.register(sub)
    influx_cli.register(sub)
    commands.register(sub)
    symbols_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = {k: getattr(args, k, None) for k in ("host", "port", "data_dir")}
    try:
        settings = load_settings(os.environ, **overrides)
    except (ConfigError, UsageError) as exc:
        print(f"tvflux: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if os.path.exists(settings.data_dir) and not os.path.isdir(settings.data_dir):
        print(
            f"tvflux: the data directory {settings.data_dir} is a file, not a directory; "
            "pass --data-dir (or TVFLUX_DATA_DIR) a directory",
            file=sys.stderr,
        )
        return 2
    try:
        return int(args.func(args, settings) or 0)
    except (ConfigError, UsageError) as exc:
        print(f"tvflux: {exc.message}", file=sys.stderr)
        return 2
    except TvfluxError as exc:
        print(f"tvflux: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tvflux: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
