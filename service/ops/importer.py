"""``tvflux import``: Binance aggTrades files (CSV, or zips of them) into the store.

Parsing is :mod:`service.ops.binance_csv` (pure); this module opens files, gives trades
their unique nanosecond timestamps, skips trades already stored, and appends one chunk
(~200k trades) per store call, so memory stays flat whatever the file size.

Idempotent: the ``agg_trade_id`` becomes the trade's ``id``, and a chunk whose time span
already holds trades of the symbol is checked against the store's ids first, so
importing a file twice stores it once. (Only then: a first import never pays for the
lookup. Consecutive chunks never share a millisecond — the last one is carried over —
so a fresh import never finds its own previous chunk in the way.)

Trades older than the first tier's watermark are late data like any other: the store
marks their windows dirty and the next downsampling run rebuilds them, which the
importer runs at the end (unless told not to).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import zipfile
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import IO, TYPE_CHECKING

import msgspec
import numpy as np

from service.core.models import TradeColumns
from service.core.timestamps import NS_PER_MS, TimestampAllocator
from service.ops import binance_csv as bcsv
from service.storage.base import TradeSink

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

HEAD_BYTES = 64 * 1024  # enough lines to recognise the layout


class FileSummary(msgspec.Struct):
    name: str
    symbol: str | None
    rows_read: int = 0
    accepted: int = 0
    already_stored: int = 0
    rejects: bcsv.Rejects = msgspec.field(default_factory=bcsv.Rejects)
    microsecond_rows: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    error: str | None = None

    @property
    def time_unit(self) -> str:
        if self.accepted + self.already_stored == 0:
            return "-"
        if self.microsecond_rows == 0:
            return "ms"
        return "µs" if self.microsecond_rows >= self.accepted + self.already_stored else "ms and µs"


class Source(msgspec.Struct, frozen=True):
    """One CSV to read: a plain file or a member of a zip."""

    name: str
    size_bytes: int
    open: Callable[[], IO[bytes]]


def sources(path: str) -> Iterator[Source]:
    """The CSVs in ``path`` (a zip yields each ``.csv`` member)."""
    if zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        members = [i for i in archive.infolist() if i.filename.lower().endswith(".csv") and not i.is_dir()]
        if not members:
            raise bcsv.ImportFormatError(f"{os.path.basename(path)} holds no .csv file")
        for info in members:
            yield Source(info.filename, info.file_size, functools.partial(archive.open, info))
    else:
        yield Source(os.path.basename(path), os.path.getsize(path), lambda: open(path, "rb"))


def check_published_checksum(path: str) -> str | None:
    """Binance publishes ``<file>.CHECKSUM`` (``sha256  name``) next to each file; when it
    is there, the file must match it. Returns a problem, or ``None``."""
    checksum_path = path + ".CHECKSUM"
    if not os.path.exists(checksum_path):
        return None
    with open(checksum_path, encoding="utf-8", errors="replace") as f:
        expected = f.read().split()[:1]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    if not expected or expected[0].lower() != digest.hexdigest():
        return f"sha256 does not match {os.path.basename(checksum_path)} (a damaged or partial download?)"
    return None


class _Counting(io.RawIOBase):
    """Counts bytes read, for the progress bar."""

    def __init__(self, inner: IO[bytes], on_bytes: Callable[[int], None] | None) -> None:
        self._inner = inner
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer)
        data = self._inner.read(len(view))
        view[: len(data)] = data
        if self._on_bytes is not None and data:
            self._on_bytes(len(data))
        return len(data)

    def close(self) -> None:
        self._inner.close()
        super().close()


class Importer:
    """Writes parsed chunks into ``store``: a :class:`~service.storage.base.Store`, or a
    running service (:class:`service.ops.remote.ServiceSink`), which drops the ids it holds
    itself; ``take_duplicates`` then says how many trades the last append dropped so."""

    def __init__(
        self,
        store: TradeSink,
        *,
        max_time_ms: int,
        block_bytes: int = bcsv.DEFAULT_BLOCK_BYTES,
        take_duplicates: Callable[[], int] | None = None,
    ) -> None:
        self.store = store
        self.take_duplicates = take_duplicates or (lambda: 0)  # a store drops none: known_ids came first
        self.max_time_ms = max_time_ms
        self.block_bytes = block_bytes
        self._clock = TimestampAllocator()

    async def import_source(
        self, source: Source, symbol: str | None, on_bytes: Callable[[int], None] | None = None
    ) -> FileSummary:
        symbol = symbol or bcsv.symbol_from_name(source.name)
        summary = FileSummary(source.name, symbol)
        if symbol is None:
            summary.error = (
                "cannot tell the symbol from the file name (like BTCUSDT-aggTrades-2024-01.csv); use --symbol"
            )
            return summary
        try:
            with closing(source.open()) as f:
                layout = bcsv.sniff(f.read(HEAD_BYTES))
            carry: bcsv.Chunk | None = None
            with closing(io.BufferedReader(_Counting(source.open(), on_bytes), 1 << 20)) as f:
                for parsed in bcsv.read_chunks(f, layout, max_time_ms=self.max_time_ms, block_bytes=self.block_bytes):
                    chunk, carry = bcsv.split_last_millisecond(bcsv.drop_duplicate_ids(bcsv.concat(carry, parsed)))
                    await self._store(symbol, chunk, summary)
            if carry is not None:
                await self._store(symbol, carry, summary)
        except (bcsv.ImportFormatError, zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:
            summary.error = str(exc)
        except Exception as exc:  # pyarrow's own parse errors (e.g. a binary file)
            if type(exc).__module__.startswith("pyarrow"):
                summary.error = f"unreadable as CSV: {exc}"
            else:
                raise
        return summary

    async def _store(self, symbol: str, chunk: bcsv.Chunk, summary: FileSummary) -> None:
        summary.rows_read += chunk.rows_read
        summary.rejects.merge(chunk.rejects)
        summary.microsecond_rows += chunk.microsecond_rows
        if len(chunk) == 0:
            return
        ts_ms = chunk.ts_ms
        ids = [str(i) for i in chunk.agg_ids.tolist()]
        # The file's span of valid trades, stored now or before (a re-import stores none).
        first, last = int(ts_ms.min()), int(ts_ms.max())
        summary.first_ms = first if summary.first_ms is None else min(summary.first_ms, first)
        summary.last_ms = last if summary.last_ms is None else max(summary.last_ms, last)
        price, quantity = chunk.price, chunk.quantity
        lo_ns, hi_ns = int(ts_ms.min()) * NS_PER_MS, (int(ts_ms.max()) + 1) * NS_PER_MS
        if not self._clock.is_started(symbol):
            self._clock.start_symbol(symbol, None)
        existing = await self.store.last_ts_ns(symbol, lo_ns, hi_ns)
        if existing is not None:
            # The span already holds trades: skip those stored before (a re-import), and
            # number the rest after what each of their milliseconds holds.
            known = await self.store.known_ids(symbol, ids, lo_ns, hi_ns)  # a re-import has the same times
            if known:
                fresh = np.fromiter((i not in known for i in ids), dtype=bool, count=len(ids))
                summary.already_stored += len(ids) - int(fresh.sum())
                ts_ms, price, quantity = ts_ms[fresh], price[fresh], quantity[fresh]
                ids = [i for i, f in zip(ids, fresh.tolist()) if f]
            if not ids:
                return
            self._clock.start_symbol(symbol, existing)
            for ms in self._clock.missing(symbol, ts_ms):
                self._clock.seed(symbol, ms, await self.store.last_ts_ns(symbol, ms * NS_PER_MS, (ms + 1) * NS_PER_MS))
        ts_ns = self._clock.allocate(symbol, ts_ms)
        await self.store.append([TradeColumns(symbol, ts_ns, price, quantity, list[str | None](ids))])
        duplicates = self.take_duplicates()
        summary.already_stored += duplicates
        summary.accepted += len(ids) - duplicates
