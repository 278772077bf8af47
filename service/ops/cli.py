"""``tvflux``: serve, generate a dataset, run downsampling.

``main(argv) -> int``; logging is configured here once, settings are built once from
``TVFLUX_*`` variables (flags override them).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import socket
import sys
from collections.abc import Sequence

from service.core.errors import ConfigError, TvfluxError
from service.core.settings import Settings, load_settings
from service.core.synthetic import SyntheticMarket
from service.ops import commands, influx_cli
from service.ops.console import Progress, configure_logging
from service.ops.downsample import run_to_edge
from service.runtime.clock import now_ms
from service.runtime.sources import backfill_synthetic
from service.storage.base import Store

log = logging.getLogger("tvflux")
DAY_MS = 86_400_000


# --- serve --------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from service.api.app import create_app
    from service.api.wsproto import FrameLimitProtocol

    if settings.host not in ("127.0.0.1", "localhost", "::1") and not (settings.ingest_token and settings.admin_token):
        log.warning("!!! binding %s WITHOUT %s: anyone who can reach this port can post trades or run admin "
                    "actions; set TVFLUX_INGEST_TOKEN and TVFLUX_ADMIN_TOKEN", settings.host,
                    " and ".join(n for n, v in (("TVFLUX_INGEST_TOKEN", settings.ingest_token),
                                                ("TVFLUX_ADMIN_TOKEN", settings.admin_token)) if not v))
    # Bind first: on a busy port, fail at once, not after the store, the spool replay and
    # the synthetic backfill (uvicorn binds only after the app's startup).
    sock = _listen_socket(settings.host, settings.port)
    if sock is None:
        return 1
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, loop="uvloop", ws=FrameLimitProtocol, http="httptools"
        if _has("httptools") else "h11", log_config=None, ws_max_size=settings.max_frame_bytes,
        lifespan="on", timeout_graceful_shutdown=10, access_log=False,
        # Bar frames are ~150 bytes: per-message deflate would cost CPU per frame per client
        # (the fan-out hot path) and hide a stalled reader for a minute behind compression.
        ws_per_message_deflate=False,
    )
    server = uvicorn.Server(config)
    _tune_gc()
    print(f"tvflux serving on http://{settings.host}:{settings.port}/ (store: {settings.store}, "
          f"data: {os.path.abspath(settings.data_dir)})", file=sys.stderr, flush=True)
    from service.ops.discovery import remove_service_file, url_for, write_service_file

    # commands on this data dir find the service here, whatever port it listens on
    write_service_file(settings.data_dir, url_for(settings.host, sock.getsockname()[1]), settings.store)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        remove_service_file(settings.data_dir)
    return 0 if server.started else 1


def _listen_socket(host: str, port: int) -> socket.socket | None:
    """A socket bound to ``host:port`` (not yet listening), or ``None`` after saying why
    it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        print(f"tvflux: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        why = ("the port is already in use (another tvflux serve?); stop it, or pick another port with "
               "TVFLUX_PORT or --port") if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        print(f"tvflux: cannot listen on {host}:{port}: {why}", file=sys.stderr)
        return None
    sock.set_inheritable(True)
    return sock


def _tune_gc() -> None:
    """Fewer, cheaper cyclic-GC passes for a server holding ~200 objects per WebSocket
    connection. With CPython's defaults (700, 10, 10) and thousands of subscribers, the
    short-lived objects of each push (futures, timer handles, frames) kept promoting into
    the old generation and forcing full collections over a million objects: 0.5–0.8 s
    stalls every few seconds, a third of the event loop's time. Startup objects are frozen
    (never scanned again), the young generation is larger so most push garbage dies before
    a collection, and the middle one is collected often so it stays small. Reference
    counting, which frees nearly everything, is unaffected. Measured in
    ``docs/performance.md`` (optimisation log)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 3, 50)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# --- generate -----------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from service.storage.factory import build_store, store_file

    # Generated history goes straight into the store file, in bulk: only a local store has one.
    if store_file(settings) is None:
        raise ConfigError(["generate writes into the embedded store; unset TVFLUX_STORE or use duckdb"])
    symbols = tuple(s.strip() for s in args.symbols.split(",") if s.strip()) if args.symbols else settings.symbols
    store = build_store(settings)
    return asyncio.run(_generate(store, symbols, args.days, args.trades, args.seed, args.end_ms))


async def _generate(store: Store, symbols: tuple[str, ...], days: float, trades: int, seed: int,
                    end_ms: int | None) -> int:
    await store.start()
    try:
        end = end_ms if end_ms is not None else now_ms()
        span_ms = int(days * DAY_MS)
        start = end - span_ms
        existing = await store.last_ts_ns(symbols[0], start * 1_000_000, end * 1_000_000)
        if existing is not None:
            print(f"the store already has {symbols[0]} trades in that range; refusing to write them twice "
                  "(use a fresh TVFLUX_DATA_DIR)", file=sys.stderr)
            return 2
        progress = Progress("generate", trades, "trades")
        written = await backfill_synthetic(store, SyntheticMarket(symbols, seed=seed), trades / (span_ms / 1000),
                                           span_ms, end, on_written=progress.update)
        progress.finish(written)
        print(f"wrote {written:,} trades for {','.join(symbols)} over {days:g} days", file=sys.stderr)
    finally:
        await store.close()
    return 0


# --- downsample ---------------------------------------------------------------------------


def cmd_downsample(args: argparse.Namespace, settings: Settings) -> int:
    from service.storage.factory import build_store

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
    serve.set_defaults(func=cmd_serve)

    gen = sub.add_parser("generate", help="write a synthetic dataset straight into the embedded store")
    gen.add_argument("--symbols", help="comma-separated (default: TVFLUX_SYMBOLS)")
    gen.add_argument("--days", type=float, default=365.0, help="span ending now (default 365)")
    gen.add_argument("--trades", type=int, default=50_000_000, help="total trades (default 50M)")
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--end-ms", type=int, help="end of the span in epoch ms (default: now)")
    gen.set_defaults(func=cmd_generate)

    down = sub.add_parser("downsample", help="run the downsampling plan up to the live edge")
    down.set_defaults(func=cmd_downsample)

    influx_cli.register(sub)
    commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = {k: getattr(args, k, None) for k in ("host", "port", "data_dir")}
    try:
        settings = load_settings(os.environ, **overrides)
    except ConfigError as exc:
        print(f"tvflux: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        return int(args.func(args, settings) or 0)
    except ConfigError as exc:
        print(f"tvflux: {exc.message}", file=sys.stderr)
        return 2
    except TvfluxError as exc:
        print(f"tvflux: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
