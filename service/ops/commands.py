"""``tvflux backup|restore|import|export``.

``service/ops/cli.py`` calls :func:`register` with its sub-parsers; each command is a
``func(args, settings) -> int``. ``python -m service.ops.commands …`` runs them on their own.

DuckDB allows one process to open the store file for writing, and ``tvflux serve`` keeps
it open. So ``backup`` and ``export`` look at the file's lock: free → they read the file
themselves; held → they ask the running service over HTTP (``--url``, default: the
service's ``service.json``). ``import`` sends the trades through the running service
(:mod:`service.ops.remote`); ``restore`` replaces the file and refuses while it is held:
stop the service, restore, start it again.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import msgspec

from service.core.answers import Deleted
from service.core.errors import ConfigError, StoreUnavailable, TvfluxError, UsageError
from service.core.resolution import Resolution
from service.core.settings import Settings
from service.core.timearg import FORMS, parse_time_ms
from service.ops.console import Progress, configure_logging
from service.ops.downsample import run_to_edge
from service.storage.base import Manifest, Store, TradeSink
from service.storage.embedded import backup as bk

if TYPE_CHECKING:  # imported where used, so a command loads only what it needs
    from service.ops.exporter import BarSink, BarSource
    from service.ops.importer import FileSummary

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = subparsers.add_parser("backup", help="consistent snapshot of the embedded store (also while serving)")
    backup.add_argument("dir", help="new or empty directory to write the backup into")
    backup.add_argument("--url", help="the running service (default: http://TVFLUX_HOST:TVFLUX_PORT)")
    backup.set_defaults(func=cmd_backup)

    restore = subparsers.add_parser("restore", help="replace the embedded store with a backup (service stopped)")
    restore.add_argument("dir", help="a directory written by 'tvflux backup'")
    restore.add_argument(
        "--force", action="store_true", help="replace an existing store (it is kept, renamed *.pre-restore-<time>)"
    )
    restore.set_defaults(func=cmd_restore)

    imp = subparsers.add_parser(
        "import",
        help="load Binance aggTrades CSV/zip files into the store (through the running service, if one holds it)",
    )
    imp.add_argument("files", nargs="+", metavar="FILE", help="e.g. BTCUSDT-aggTrades-2024-01.zip")
    imp.add_argument("--symbol", help="symbol for every file (default: from each file name)")
    imp.add_argument("--no-downsample", action="store_true", help="skip the downsampling run at the end")
    imp.add_argument("--block-bytes", type=int, default=None, help=argparse.SUPPRESS)  # tests: small chunks
    imp.set_defaults(func=cmd_import)

    exp = subparsers.add_parser("export", help="bars of one symbol and resolution as CSV or Parquet")
    exp.add_argument("--symbol", required=True)
    exp.add_argument("--resolution", required=True, help="TradingView resolution: 1S, 1, 60, 1D, 1W, 1M, …")
    exp.add_argument("--from", dest="from_", required=True, metavar="TIME", help=f"inclusive: {FORMS} (UTC)")
    exp.add_argument("--to", metavar="TIME", help="exclusive (default: now), in the same forms")
    exp.add_argument("--format", choices=("csv", "parquet"), default="csv")
    exp.add_argument("--out", help="output file (default for csv: standard output)")
    exp.add_argument("--url", help="read from this running service instead of the store file")
    exp.set_defaults(func=cmd_export)

    trades = subparsers.add_parser("trades", help="trade corrections")
    trades_sub = trades.add_subparsers(dest="trades_command", required=True)
    delete = trades_sub.add_parser(
        "delete", help="delete trades of a symbol by id or time range (through the running service, if any)"
    )
    delete.add_argument("--symbol", required=True)
    delete.add_argument("--id", action="append", metavar="ID", help="a trade id (repeat for more)")
    delete.add_argument("--from", dest="from_", metavar="TIME", help=f"inclusive: {FORMS} (UTC)")
    delete.add_argument("--to", metavar="TIME", help="exclusive, in the same forms")
    delete.add_argument("--url", help="the running service (default: the one serving this data dir)")
    delete.set_defaults(func=cmd_trades_delete)


# --- helpers ------------------------------------------------------------------------------


def _service_url(settings: Settings, url: str | None) -> str:
    """``--url``, else the service that holds this data dir (its ``service.json``), else
    ``TVFLUX_HOST:TVFLUX_PORT``."""
    from service.ops.discovery import running_service_url, url_for

    if url:
        return url.rstrip("/")
    return running_service_url(settings.data_dir) or url_for(settings.host, settings.port)


def _require_store_file(settings: Settings, what: str) -> None:
    """File-level operations need a store kept in one local file (the embedded store)."""
    from service.storage.factory import store_file

    if store_file(settings) is None:
        raise ConfigError(
            [
                f"'{what}' works on the embedded store; for InfluxDB see docs/backup.md "
                "(scripts/influx-backup.sh, scripts/influx-restore.sh)"
            ]
        )


def _utc(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _err(message: str) -> None:
    print(f"tvflux: {message}", file=sys.stderr)


# --- backup / restore -----------------------------------------------------------------------


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    _require_store_file(settings, "backup")
    path = bk.db_path(settings.data_dir)
    target = os.path.abspath(args.dir)
    bk.require_empty(target)  # before a running service builds a full-size snapshot for nothing
    created = not os.path.exists(target)
    try:  # and where it can be written: not after the snapshot was streamed
        os.makedirs(target, exist_ok=True)
    except OSError as exc:
        raise bk.BackupError(f"cannot create the backup directory {target}: {exc.strerror or exc}") from None
    holder = None if args.url else bk.lock_holder(path)
    started = time.perf_counter()
    try:
        if args.url or holder is not None:
            url = _service_url(settings, args.url)
            print(f"backup: the store is open in a running service; asking {url}", file=sys.stderr)
            _backup_online(url, target, settings, None if args.url else path, holder)
        else:
            bk.snapshot_file(path, target)
        manifest = bk.verify(target)
    except BaseException:
        if created:
            bk.remove_tree(target)
        raise
    tables = ", ".join(f"{t.name} {t.rows:,}" for t in manifest.tables)
    print(
        f"backup of {manifest.source} written to {target}: {len(manifest.files)} files, "
        f"{manifest.total_bytes:,} bytes, verified, in {time.perf_counter() - started:.1f}s\n  rows: {tables}",
        file=sys.stderr,
    )
    return EXIT_OK


def _backup_online(url: str, target: str, settings: Settings, expected_source: str | None, holder: str | None) -> None:
    request = urllib.request.Request(url + "/api/admin/backup", data=b"", method="POST")
    if settings.admin_token:
        request.add_header("Authorization", f"Bearer {settings.admin_token}")
    progress: Progress | None = None  # once the manifest tells the size
    received = 0

    def on_manifest(manifest: Manifest) -> None:
        nonlocal progress
        if expected_source is not None and os.path.realpath(manifest.source) != os.path.realpath(expected_source):
            raise bk.BackupError(
                f"the service at {url} serves {manifest.source}, not {expected_source}; "
                "pass --url of the service that holds it"
            )
        progress = Progress("backup", manifest.total_bytes, "bytes")

    def on_bytes(n: int) -> None:
        nonlocal received
        if progress is not None:
            received += n
            progress.update(received)

    try:
        with urllib.request.urlopen(request, timeout=600) as resp:
            bk.extract_tar(resp, target, on_manifest=on_manifest, on_bytes=on_bytes)
    except urllib.error.HTTPError as exc:
        from service.ops.exporter import http_error

        raise bk.BackupError(f"the service refused the backup: {http_error(exc).message}") from None
    except (urllib.error.URLError, ConnectionError) as exc:
        why = f"another process holds the store ({holder}), but " if holder else ""
        raise bk.BackupError(f"{why}no tvflux answers at {url} ({exc}); pass --url") from None
    if progress is not None:
        progress.finish(received)


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    _require_store_file(settings, "restore")
    path = bk.db_path(settings.data_dir)
    if os.path.exists(path) and not args.force:
        _err(f"{path} exists; restoring replaces it (it is kept, renamed *.pre-restore-<time>): pass --force")
        return EXIT_USAGE
    result = bk.restore(args.dir, settings.data_dir, now=dt.datetime.now(tz=dt.UTC))
    print(f"restored {args.dir} into {path}", file=sys.stderr)
    for table, rows in sorted(result.tables.items()):
        print(f"  {table:<14} {rows:>14,} rows", file=sys.stderr)
    for aside in result.previous:
        print(f"  kept the previous {os.path.basename(aside).split('.pre-restore-')[0]} as {aside}", file=sys.stderr)
    return EXIT_OK


# --- import -----------------------------------------------------------------------------------


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from service.core.models import SYMBOL_PATTERN
    from service.storage.factory import build_store, store_file

    if args.symbol is not None:
        import re

        if not re.match(SYMBOL_PATTERN, args.symbol):
            raise UsageError(f"--symbol {args.symbol!r} is not a valid symbol")
    from service.ops.remote import ServiceSink, run_downsampling, serving_url

    url = serving_url(settings) if store_file(settings) is not None else None
    if url is not None:
        # The service holds the store file: the trades go through it (POST /api/admin/trades).
        print(f"import: the store is open in the running service; sending the trades to {url}", file=sys.stderr)
        sink = ServiceSink(url, settings.admin_token, batch_trades=settings.max_batch_trades)

        async def downsample_in_service() -> None:
            run_downsampling(url, settings.admin_token)

        return asyncio.run(_import(sink, settings, args, downsample_in_service, take_duplicates=sink.take_duplicates))
    return asyncio.run(_import_into_store(build_store(settings), settings, args))


async def _import_into_store(store: Store, settings: Settings, args: argparse.Namespace) -> int:
    await store.start()
    try:
        return await _import(store, settings, args, lambda: run_to_edge(store))
    finally:
        await store.close()


async def _import(
    sink: TradeSink,
    settings: Settings,
    args: argparse.Namespace,
    downsample: Callable[[], Awaitable[object]],
    *,
    take_duplicates: Callable[[], int] | None = None,
) -> int:
    from service.ops import binance_csv as bcsv
    from service.ops.importer import FileSummary, Importer, check_published_checksum, sources
    from service.runtime.clock import now_ms

    importer = Importer(
        sink,
        max_time_ms=now_ms() + settings.max_future_ms,
        block_bytes=args.block_bytes or bcsv.DEFAULT_BLOCK_BYTES,
        take_duplicates=take_duplicates,
    )
    summaries: list[FileSummary] = []
    for path in args.files:
        problem = check_published_checksum(path) if os.path.isfile(path) else "no such file"
        if problem is not None:
            summaries.append(FileSummary(os.path.basename(path), args.symbol, error=problem))
            _print_summary(summaries[-1])
            continue
        try:
            found = list(sources(path))
        except (bcsv.ImportFormatError, OSError) as exc:
            summaries.append(FileSummary(os.path.basename(path), args.symbol, error=str(exc)))
            _print_summary(summaries[-1])
            continue
        for source in found:
            progress = Progress(f"import {os.path.basename(source.name)}", source.size_bytes, "bytes")
            done = [0]

            def on_bytes(n: int, done: list[int] = done, progress: Progress = progress) -> None:
                done[0] += n
                progress.update(done[0])

            summary = await importer.import_source(source, args.symbol, on_bytes)
            progress.finish(done[0])
            summaries.append(summary)
            _print_summary(summary)
    failed = sum(1 for s in summaries if s.error)
    accepted = sum(s.accepted for s in summaries)
    print(
        f"total: {accepted:,} trades stored, {sum(s.already_stored for s in summaries):,} already stored, "
        f"{sum(s.rejects.total for s in summaries):,} rejected; {failed} file(s) failed",
        file=sys.stderr,
    )
    if accepted and not args.no_downsample:
        await downsample()
    return EXIT_FAILED if failed else EXIT_OK


def _print_summary(s: FileSummary) -> None:
    if s.error:
        print(f"{s.name}: FAILED: {s.error}", file=sys.stderr)
        return
    span = (
        "no valid trades"
        if s.first_ms is None or s.last_ms is None
        else f"trades from {_utc(s.first_ms)} to {_utc(s.last_ms)} UTC, timestamps in {s.time_unit}"
    )
    print(
        f"{s.name}: {s.symbol}, {s.rows_read:,} rows: {s.accepted:,} stored, {s.already_stored:,} already stored, "
        f"{s.rejects.total:,} rejected; {span}",
        file=sys.stderr,
    )
    for reason, count in sorted(s.rejects.counts.items(), key=lambda kv: -kv[1]):
        examples = ", ".join(s.rejects.examples.get(reason, []))
        print(f"  rejected, {reason}: {count:,} (e.g. {examples})", file=sys.stderr)


# --- export -----------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from service.core.resolution import parse_resolution
    from service.ops.exporter import parse_time_arg

    resolution = parse_resolution(args.resolution)
    from_ms = parse_time_arg(args.from_, "from")
    to_ms = parse_time_arg(args.to, "to") if args.to else int(time.time()) * 1000
    if args.format == "parquet" and not args.out:
        raise UsageError("--format parquet needs --out FILE")
    from service.storage.factory import store_file

    path = store_file(settings)
    online = bool(args.url) or (path is not None and bk.lock_holder(path) is not None)
    return asyncio.run(_export(settings, args, resolution, from_ms, to_ms, online))


async def _export(
    settings: Settings, args: argparse.Namespace, resolution: Resolution, from_ms: int, to_ms: int, online: bool
) -> int:
    from service.ops.exporter import CsvBars, HttpSource, LocalSource, ParquetBars, export
    from service.runtime.history import History, SymbolSet
    from service.runtime.writer import TradeWriter
    from service.storage.factory import build_store

    store = None
    if online:
        source: BarSource = HttpSource(_service_url(settings, args.url), token=str(settings.admin_token))
    else:
        store = build_store(settings)
        await store.start()
        if args.symbol not in await store.symbols():
            await store.close()
            _err(f"no trades of {args.symbol!r} in the store")
            return EXIT_FAILED
        # The service's own history code, with a writer that never runs (nothing pending).
        history = History(store, TradeWriter(store), SymbolSet((args.symbol,)), max_bars=settings.max_bars)
        source = LocalSource(history, settings.max_bars)
    out_file = None
    try:
        if args.format == "parquet":
            sink: BarSink = ParquetBars(args.out, {"symbol": args.symbol, "resolution": resolution.text})
        else:
            out_file = open(args.out, "w", newline="", encoding="utf-8") if args.out else None
            sink = CsvBars(out_file or sys.stdout)
        start = resolution.bucket_start_ms(from_ms)
        day_ms = 86_400_000
        progress = Progress("export", (to_ms - start) / day_ms, "days of range")
        written = await export(
            source,
            sink,
            args.symbol,
            resolution,
            from_ms,
            to_ms,
            on_page=lambda hi, n: progress.update((min(hi, to_ms) - start) / day_ms),
        )
        sink.close()
        progress.finish((to_ms - start) / day_ms)
    finally:
        if out_file is not None:
            out_file.close()
        if store is not None:
            await store.close()
    print(
        f"exported {written:,} bars of {args.symbol} at resolution {resolution.text} from {_utc(from_ms)} to "
        f"{_utc(to_ms)} UTC"
        f"{' to ' + args.out if args.out else ''}",
        file=sys.stderr,
    )
    return EXIT_OK


# --- trades delete ------------------------------------------------------------------------------


def cmd_trades_delete(args: argparse.Namespace, settings: Settings) -> int:
    """Through the service that holds the data dir (it rebuilds live bars, resets charts and
    keeps the audit log), else on the store directly (recorded in the same audit log)."""
    import getpass
    import socket
    import urllib.parse

    from service.ops.discovery import running_service_url
    from service.storage.factory import store_file

    if (args.from_ is None) != (args.to is None) or (not args.id and args.from_ is None):
        raise UsageError("give --from TIME and --to TIME, or one or more --id ID (or both)")
    if args.from_ is not None:
        args.from_, args.to = parse_time_ms(args.from_, "from"), parse_time_ms(args.to, "to")
    actor = f"tvflux trades delete ({getpass.getuser()}@{socket.gethostname()})"
    path = store_file(settings)
    url = args.url or running_service_url(settings.data_dir)
    if url is None and path is not None and bk.lock_holder(path) is not None:
        url = _service_url(settings, None)  # held by a service that wrote no service.json
    if url is not None:
        query: list[tuple[str, str]] = [("symbol", args.symbol)]
        if args.from_ is not None:
            query += [("from", str(args.from_)), ("to", str(args.to))]
        query += [("id", i) for i in args.id or ()]
        request = urllib.request.Request(
            f"{url.rstrip('/')}/api/trades?{urllib.parse.urlencode(query)}",
            method="DELETE",
            headers={"X-Tvflux-Actor": actor},
        )
        if settings.admin_token:
            request.add_header("Authorization", f"Bearer {settings.admin_token}")
        try:
            with urllib.request.urlopen(request, timeout=120) as resp:
                deleted = msgspec.json.decode(resp.read(), type=Deleted).deleted
        except urllib.error.HTTPError as exc:
            from service.ops.exporter import http_error

            raise StoreUnavailable(f"the service at {url} refused the correction: {http_error(exc).message}") from None
        except (urllib.error.URLError, ConnectionError) as exc:
            raise StoreUnavailable(f"no tvflux answers at {url} ({exc}); pass --url") from None
        except msgspec.DecodeError as exc:  # a ValidationError too
            raise StoreUnavailable(f"the service at {url} answered what this tvflux cannot read: {exc}") from None
        print(f"deleted {deleted} trades of {args.symbol} through the service at {url}", file=sys.stderr)
        return EXIT_OK
    return asyncio.run(_delete_locally(settings, args, actor))


async def _delete_locally(settings: Settings, args: argparse.Namespace, actor: str) -> int:
    from service.runtime.audit import audit_log
    from service.runtime.corrections import Correction, delete_trades
    from service.storage.factory import build_store

    correction = Correction(
        args.symbol,
        "tvflux CLI, store opened directly",
        ids=sorted(set(args.id)) if args.id else None,
        from_ms=args.from_,
        to_ms=args.to,
        actor=actor,
    )
    store = build_store(settings)
    await store.start()
    try:
        deletion = await delete_trades(store, audit_log(settings.data_dir), correction)
    finally:
        await store.close()
    print(
        f"deleted {deletion.deleted} trades of {args.symbol} from the store; the tiers are rebuilt by the next "
        "downsampling run (`tvflux downsample`, or the service when it starts)",
        file=sys.stderr,
    )
    return EXIT_OK


# --- standalone entry point ----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m service.ops.commands``: these commands without the rest of ``tvflux``."""
    from service.core.settings import load_settings

    parser = argparse.ArgumentParser(prog="tvflux", description="tvflux operations")
    parser.add_argument("--data-dir", help="overrides TVFLUX_DATA_DIR")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        settings = load_settings(os.environ, data_dir=args.data_dir)
        configure_logging(settings.log_level)
        return int(args.func(args, settings) or 0)
    except (ConfigError, UsageError) as exc:
        _err(exc.message)
        return EXIT_USAGE
    except (TvfluxError, StoreUnavailable) as exc:
        _err(exc.message)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
