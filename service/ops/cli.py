"""``tvflux``: serve, generate a dataset, run downsampling.

``main(argv) -> int``; logging is configured here once, settings are built once from
``TVFLUX_*`` variables (flags override them).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Sequence

from service.core.errors import ConfigError, TvfluxError
from service.core.settings import Settings, load_settings

log = logging.getLogger("tvflux")
DAY_MS = 86_400_000


class RedactSecrets(logging.Filter):
    """Blanks bearer tokens and ``token=`` query values in every record the handler emits
    (uvicorn logs WebSocket request lines, and headers at DEBUG)."""

    _pattern = re.compile(r"(?i)(bearer\s+|token=)[^\s&\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._pattern.sub(r"\1***", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _configure_logging(level: str) -> None:
    # uvicorn's legacy websockets implementation is deprecated, but it is the one whose
    # send waits for the socket to drain, which is how slow subscribers are detected.
    warnings.filterwarnings("ignore", message=r".*`websockets` implementation is deprecated")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets())


class Progress:
    """One self-overwriting line on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, label: str, total: float, unit: str) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.started = time.perf_counter()
        self._last_print = 0.0
        self._tty = sys.stderr.isatty()

    def update(self, done: float, *, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_print < (0.2 if self._tty else 5.0):
            return
        self._last_print = now
        elapsed = now - self.started
        pct = 100.0 * done / self.total if self.total else 100.0
        rate = done / elapsed if elapsed > 0 else 0.0
        width = 30
        filled = int(width * min(pct, 100) / 100)
        line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {pct:5.1f}% "
                f"{done:,.0f}/{self.total:,.0f} {self.unit} {rate:,.0f} {self.unit}/s {elapsed:6.1f}s")
        sys.stderr.write(("\r" + line) if self._tty else (line + "\n"))
        sys.stderr.flush()

    def finish(self, done: float) -> None:
        self.update(done, force=True)
        if self._tty:
            sys.stderr.write("\n")


# --- serve --------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from service.api.app import create_app

    if settings.host not in ("127.0.0.1", "localhost", "::1") and not (settings.ingest_token and settings.admin_token):
        log.warning("!!! binding %s WITHOUT %s: anyone who can reach this port can post trades or run admin "
                    "actions; set TVFLUX_INGEST_TOKEN and TVFLUX_ADMIN_TOKEN", settings.host,
                    " and ".join(n for n, v in (("TVFLUX_INGEST_TOKEN", settings.ingest_token),
                                                ("TVFLUX_ADMIN_TOKEN", settings.admin_token)) if not v))
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, loop="uvloop", ws="websockets", http="httptools"
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
    server.run()
    return 0 if server.started else 1


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
    from service.storage.embedded.store import EmbeddedStore

    if settings.store != "duckdb":
        raise ConfigError(["generate writes into the embedded store; unset TVFLUX_STORE or use duckdb"])
    symbols = tuple(s.strip() for s in args.symbols.split(",") if s.strip()) if args.symbols else settings.symbols
    store = EmbeddedStore(os.path.join(settings.data_dir, "tvflux.duckdb"), settings.plan)
    return asyncio.run(_generate(store, symbols, args.days, args.trades, args.seed, args.end_ms))


async def _generate(store, symbols: tuple[str, ...], days: float, trades: int, seed: int, end_ms: int | None) -> int:  # type: ignore[no-untyped-def]
    from service.runtime.clock import now_ms
    from service.core.models import TradeColumns
    from service.core.synthetic import SyntheticMarket
    from service.core.timestamps import TimestampAllocator

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
        rate_per_s = trades / (span_ms / 1000)
        market = SyntheticMarket(symbols, seed=seed)
        clock = TimestampAllocator()
        for symbol in symbols:
            clock.start_symbol(symbol, await store.last_ts_ns(symbol, 0, start * 1_000_000))
        # One hour per chunk: a few hundred thousand trades at the POC's density, so memory
        # stays flat whatever the total; appends are grouped to ~1M rows per transaction.
        chunk_ms = 3_600_000
        progress = Progress("generate", trades, "trades")
        written = 0
        group: list[TradeColumns] = []
        group_rows = 0
        t = start
        while t < end:
            hi = min(end, t + chunk_ms)
            for b in market.trades(t, hi, rate_per_s):
                group.append(TradeColumns(b.symbol, clock.allocate(b.symbol, b.ts_ns // 1_000_000), b.price, b.size))
                group_rows += len(b)
            if group_rows >= 1_000_000 or hi >= end:
                await store.append(group)
                written += group_rows
                group, group_rows = [], 0
                progress.update(written)
            t = hi
        progress.finish(written)
        print(f"wrote {written:,} trades for {','.join(symbols)} over {days:g} days", file=sys.stderr)
    finally:
        await store.close()
    return 0


# --- downsample ---------------------------------------------------------------------------


def cmd_downsample(args: argparse.Namespace, settings: Settings) -> int:
    from service.api.app import build_store

    return asyncio.run(_downsample(build_store(settings), settings))


async def _downsample(store, settings: Settings) -> int:  # type: ignore[no-untyped-def]
    from service.runtime.clock import now_ms

    await store.start()
    try:
        progress = None
        total_windows = 0
        started = time.perf_counter()
        while True:
            report = await store.run_downsampling(now_ms(), max_windows=20)
            if not report.ran:
                break
            total_windows += len(report.ran)
            status = await store.downsampling_status(now_ms())
            behind = sum(1 for s in status if s.lagMs is None or s.lagMs > 3_600_000)
            if progress is None:
                progress = Progress("downsample", len(status), "tiers at edge")
            progress.update(len(status) - behind)
        if progress is not None:
            progress.finish(len(settings.plan.tiers))
        for s in await store.downsampling_status(now_ms()):
            wm = "-" if s.watermark is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.watermark / 1000))
            print(f"{s.tier:>4} watermark {wm} UTC  rows {s.rows:,}", file=sys.stderr)
        print(f"{total_windows} windows in {time.perf_counter() - started:.1f}s", file=sys.stderr)
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

    from service.ops.commands import register as register_ops
    from service.ops.influx_cli import register as register_influx

    register_influx(sub)
    register_ops(sub)
    try:  # the benchmarks live in the loadgen package, installed with tvflux
        from bench.cli import register as register_bench
    except ImportError:
        pass
    else:
        register_bench(sub)
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
    _configure_logging(settings.log_level)
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
