"""``tvflux export``: bars of one symbol and resolution over a time range, as CSV or
Parquet — the same bars ``/api/bars`` answers.

Both ways of reading them go through the code ``/api/bars`` runs: with the service
stopped (or on InfluxDB), :class:`LocalSource` opens the store and asks
:meth:`History.bars <service.runtime.history.History.bars>`; while the service runs (DuckDB's
file is then locked), :class:`HttpSource` pages through ``GET /api/bars``. A long range
is cut into pages at bucket boundaries, so every bar is computed whole in one page and
paging cannot change a value.

Columns: ``time`` (bar start, epoch ms, as in ``/api/bars``), ``open``, ``high``,
``low``, ``close``, ``volume``. CSV floats are written in the shortest form that reads
back to the same float64.
"""

from __future__ import annotations

import csv
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Protocol, TypeVar

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from service.core.errors import BadRequest, InvalidRange, StoreUnavailable, TvfluxError
from service.core.models import Bar, BarsResponse
from service.core.resolution import Resolution
from service.core.timearg import parse_time_ms

if TYPE_CHECKING:  # the CLI's history, read only by an offline export
    from service.runtime.history import History

COLUMNS = ("time", "open", "high", "low", "close", "volume")
HTTP_PAGE_BUCKETS = 5_000  # below the server's default TVFLUX_MAX_BARS (it may say less)
T = TypeVar("T")
_SCHEMA = pa.schema([("time", pa.int64())] + [(c, pa.float64()) for c in COLUMNS[1:]])


def parse_time_arg(text: str, name: str) -> int:
    """``--from``/``--to`` in the CLI's one time form (:mod:`service.core.timearg`), in whole
    seconds like ``/api/bars``' ``from``/``to`` → epoch ms."""
    return parse_time_ms(text, name) // 1000 * 1000


def pages(resolution: Resolution, from_ms: int, to_ms: int, max_buckets: int) -> Iterator[tuple[int, int]]:
    """``[lo, hi)`` pieces of ``[from_ms, to_ms)`` of at most ``max_buckets`` buckets each,
    cut at bucket starts (``from_ms`` is aligned down first, as ``/api/bars`` does)."""
    lo = resolution.bucket_start_ms(from_ms)
    while lo < to_ms:
        hi = lo
        for _ in range(max_buckets):
            hi = resolution.next_start_ms(hi)
            if hi >= to_ms:
                break
        hi = min(hi, to_ms)
        yield lo, hi
        lo = hi


# --- sources ----------------------------------------------------------------------------


class BarSource(Protocol):
    page_buckets: int

    async def bars(self, symbol: str, resolution: Resolution, from_ms: int, to_ms: int) -> list[Bar]: ...


class LocalSource:
    """The store opened by this process, read with the service's own history code."""

    def __init__(self, history: History, page_buckets: int) -> None:
        self.history = history
        self.page_buckets = page_buckets

    async def bars(self, symbol: str, resolution: Resolution, from_ms: int, to_ms: int) -> list[Bar]:
        return (await self.history.bars(symbol, resolution, from_ms, to_ms)).bars


class HttpSource:
    """A running service's ``GET /api/bars``."""

    def __init__(
        self, base_url: str, *, token: str = "", page_buckets: int = HTTP_PAGE_BUCKETS, timeout_s: float = 60.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.page_buckets = page_buckets
        self.timeout_s = timeout_s

    async def bars(self, symbol: str, resolution: Resolution, from_ms: int, to_ms: int) -> list[Bar]:
        # Page bounds are bucket starts or --from/--to: whole seconds, as /api/bars takes them.
        query = urllib.parse.urlencode(
            {"symbol": symbol, "resolution": resolution.text, "from": from_ms // 1000, "to": to_ms // 1000}
        )
        return self._get(f"/api/bars?{query}", BarsResponse).bars

    def _get(self, path: str, answer: type[T]) -> T:
        request = urllib.request.Request(self.base_url + path)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            error = http_error(exc)
            max_bars = (error.details or {}).get("maxBars") if isinstance(error.details, dict) else None
            if exc.code == 400 and isinstance(max_bars, int) and 0 < max_bars < self.page_buckets:
                raise PageTooLarge(max_bars) from None  # the server's TVFLUX_MAX_BARS is lower
            raise error from None
        except (urllib.error.URLError, OSError) as exc:
            raise StoreUnavailable(f"no tvflux answers at {self.base_url}: {exc}") from None
        try:
            return msgspec.json.decode(body, type=answer)
        except msgspec.DecodeError as exc:  # a ValidationError too
            raise TvfluxError(f"{self.base_url} answered {path} with what this tvflux cannot read: {exc}") from None


class PageTooLarge(BadRequest):
    """The service answers at most ``max_buckets`` bars per request (its
    ``TVFLUX_MAX_BARS`` is lower than our page): :func:`export` retries with smaller pages."""

    code = "page_too_large"

    def __init__(self, max_buckets: int) -> None:
        super().__init__(
            f"the service answers at most {max_buckets} bars per request", details={"maxBars": max_buckets}
        )
        self.max_buckets = max_buckets


def http_error(exc: urllib.error.HTTPError) -> TvfluxError:
    """tvflux's error body (``{"error": {"code", "message", "details"?}}``) as an exception."""
    try:
        error = json.loads(exc.read())["error"]
        return TvfluxError(f"{exc.code} {error['code']}: {error['message']}", details=error.get("details"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return TvfluxError(f"HTTP {exc.code} {exc.reason}")


# --- writers ----------------------------------------------------------------------------


class CsvBars:
    def __init__(self, out: IO[str]) -> None:
        self._writer = csv.writer(out, lineterminator="\n")
        self._writer.writerow(COLUMNS)

    def write(self, bars: list[Bar]) -> None:
        # repr(): the shortest text that reads back to the same float
        self._writer.writerows(
            (b.time, repr(b.open), repr(b.high), repr(b.low), repr(b.close), repr(b.volume)) for b in bars
        )

    def close(self) -> None:
        pass


class ParquetBars:
    def __init__(self, path: str, metadata: dict[str, str]) -> None:
        self._writer = pq.ParquetWriter(path, _SCHEMA.with_metadata(metadata), compression="zstd")

    def write(self, bars: list[Bar]) -> None:
        if bars:
            columns = [[getattr(b, c) for b in bars] for c in COLUMNS]
            self._writer.write_table(pa.table(columns, schema=self._writer.schema))

    def close(self) -> None:
        self._writer.close()


class BarSink(Protocol):
    def write(self, bars: list[Bar]) -> None: ...

    def close(self) -> None: ...


async def export(
    source: BarSource,
    sink: BarSink,
    symbol: str,
    resolution: Resolution,
    from_ms: int,
    to_ms: int,
    on_page: Callable[[int, int], object] | None = None,
) -> int:
    """Write every bar with start in ``[from_ms, to_ms)``; returns how many.
    ``on_page(hi_ms, written)`` after each page."""
    if to_ms <= from_ms:
        raise InvalidRange("--to must be after --from")
    written = 0
    start = from_ms
    while start < to_ms:
        try:
            for lo, hi in pages(resolution, start, to_ms, source.page_buckets):
                bars = await source.bars(symbol, resolution, lo, hi)
                sink.write(bars)
                written += len(bars)
                start = hi
                if on_page is not None:
                    on_page(hi, written)
        except PageTooLarge as exc:
            source.page_buckets = exc.max_buckets  # and go on from the first unwritten page
    return written
