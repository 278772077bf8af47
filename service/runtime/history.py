"""Chart history: the store's composed bars plus trades still waiting in the writer.

``bars(symbol, R, [from, to))`` = store.bars(...) merged with the writer's pending trades,
read under the writer's visibility lock so each accepted trade counts exactly once. The
live bar the hub pushes is built from the same trades, so history and ``/ws`` agree.

Paging bounds the work: a request may span at most ``max_bars`` buckets; ``countback``
asks for the last N bars before ``to`` and wins over ``from``: one bounded store read
(:meth:`Store.bars_before`), never a loop widening its window. A countback beyond
``max_bars`` (up to ``max_countback``: TradingView's volume profile asks for 200,000) is
read in pages of ``max_bars``, each page before the previous one's oldest bar.

The newest bars of every (symbol, tier) charts ask for are answered from memory by the
:class:`~service.runtime.hotwindow.HotWindow` (kept current by the writer, equal to the
store's answer); everything else from the store.

A slow or hung store does not hang the caller: each store query gets ``timeout_s``, then
:class:`~service.core.errors.StoreUnavailable` (503 with Retry-After). The wait is given up,
which releases the visibility lock, so the writer is not held behind it either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterator
from typing import TypeVar

import msgspec

from service.core.bars import PartialBar, fold, merge_into
from service.core.errors import InvalidRange, StoreUnavailable, UnknownSymbol
from service.core.instruments import REQUEST_SECONDS_BOUNDS, LabeledHistograms
from service.core.models import Bar, BarsResponse, TradeColumns, round_volume
from service.core.resolution import Resolution, parse_resolution
from service.core.symbols import SymbolSpec
from service.core.timestamps import NS_PER_MS
from service.runtime.hotwindow import HotWindow
from service.runtime.writer import TradeWriter
from service.storage.base import Store

log = logging.getLogger(__name__)

T = TypeVar("T")
TIMEOUT_LOG_EVERY_S = 60.0  # the operator hears of timed-out history queries at most this often
MAX_TIME_S = 253_402_300_799  # 9999-12-31
# finer than the generic request bounds below 5 ms, where answers from memory land, so a
# benchmark can read a sub-millisecond median off /metrics
HISTORY_SECONDS_BOUNDS = (
    0.0001,
    0.0002,
    0.0003,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.004,
    *(b for b in REQUEST_SECONDS_BOUNDS if b >= 0.005),
)


class HistoryRequest(msgspec.Struct, frozen=True):
    symbol: str
    resolution: Resolution
    from_ms: int  # aligned to the resolution
    to_ms: int  # exclusive
    countback: int | None


class Snapshot(msgspec.Struct, frozen=True):
    bars: list[Bar]
    seq: int  # the writer's last accepted submission included


class History:
    def __init__(
        self,
        store: Store,
        writer: TradeWriter,
        symbols: SymbolSet,
        *,
        max_bars: int,
        max_countback: int | None = None,
        timeout_s: float | None = None,
        hot: HotWindow | None = None,
    ) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self.timeouts = 0  # history queries given up on (503): /metrics, and a warning in the log
        self._timeouts_logged = 0
        self._timeout_logged_at = -TIMEOUT_LOG_EVERY_S
        self.writer = writer
        self.symbols = symbols
        self.max_bars = max_bars
        self.max_countback = max_bars if max_countback is None else max_countback
        self.latency_s = LabeledHistograms(HISTORY_SECONDS_BOUNDS)  # per resolution, read by /metrics
        self.hot = hot  # the newest bars in memory (see service.runtime.hotwindow); None: always the store
        if hot is not None:
            writer.on_stored.append(hot.stored)

    def parse(
        self,
        symbol: str | None,
        resolution: str | None,
        from_s: str | None,
        to_s: str | None,
        countback: str | None,
        *,
        now_ms: int,
    ) -> HistoryRequest:
        """Validate query parameters (strings as they came) into a request."""
        if not symbol:
            raise UnknownSymbol("missing query parameter 'symbol'")
        self.symbols.require(symbol)
        if not resolution:
            raise InvalidRange("missing query parameter 'resolution'")
        res = parse_resolution(resolution)
        to_ms = _seconds(to_s, "to") * 1000 if to_s not in (None, "") else now_ms + 1
        count = None
        if countback not in (None, ""):
            count = _integer(countback, "countback")
            if count < 1 or count > self.max_countback:
                raise InvalidRange(
                    f"countback must be between 1 and {self.max_countback}", details={"countback": count}
                )
        if count is None:
            if from_s in (None, ""):
                raise InvalidRange("give 'from' or 'countback'")
            from_ms = _seconds(from_s, "from") * 1000
            if from_ms > to_ms:
                raise InvalidRange("'from' is after 'to'", details={"from": from_s, "to": to_s})
            if res.bucket_count(from_ms, to_ms) > self.max_bars:
                raise InvalidRange(
                    f"the range spans more than {self.max_bars} bars of {res.text}; page with 'countback' or a "
                    "smaller range",
                    details={"maxBars": self.max_bars},
                )
        else:
            from_ms = 0
        return HistoryRequest(symbol, res, res.bucket_start_ms(from_ms), to_ms, count)

    async def bars(self, symbol: str, resolution: Resolution, from_ms: int, to_ms: int) -> Snapshot:
        """Bars with start in ``[from_ms, to_ms)``, including trades not yet stored."""
        return await self._snapshot(symbol, resolution, from_ms, to_ms, None)

    async def bars_before(self, symbol: str, resolution: Resolution, to_ms: int, count: int) -> Snapshot:
        """The newest ``count`` bars starting before ``to_ms`` (``countback``), including
        trades not yet stored: one bounded store read (or the hot window), never a loop."""
        return await self._snapshot(symbol, resolution, 0, to_ms, count)

    async def _snapshot(
        self, symbol: str, resolution: Resolution, from_ms: int, to_ms: int, count: int | None
    ) -> Snapshot:
        if to_ms > 0:
            # A bar is named by its start: one starting before ``to`` is answered whole, even
            # when ``to`` falls inside it (the stores and the hot window then read the same
            # whole buckets; a store left to itself may cut it at ``to`` or not, depending
            # on its tiers).
            to_ms = resolution.next_start_ms(resolution.bucket_start_ms(to_ms - 1))
        stored, partials, pending, seq = await self._bounded(
            self._stored_bars(symbol, resolution, from_ms, to_ms, count)
        )
        if count is not None:
            # pending trades older than the oldest of ``count`` stored bars cannot be among
            # the newest ``count`` of the union (every stored bar is newer)
            from_ms = stored[0].time if len(stored) >= count else 0
        lo_ns, hi_ns = from_ms * NS_PER_MS, to_ms * NS_PER_MS
        for batch in pending:
            keep = (batch.ts_ns >= lo_ns) & (batch.ts_ns < hi_ns)
            if keep.any():
                partials.extend(fold(resolution, batch.ts_ns[keep], batch.price[keep], batch.size[keep]))
        partials.sort(key=lambda p: p.start_ms)
        bars = merge_into(stored, partials)
        if count is not None and len(bars) > count:
            bars = bars[-count:]
        return Snapshot(_rounded(bars), seq)

    async def _stored_bars(
        self, symbol: str, resolution: Resolution, from_ms: int, to_ms: int, count: int | None
    ) -> tuple[list[Bar], list[PartialBar], list[TradeColumns], int]:
        """Stored bars (from the hot window when it can say, else the store) and partial
        bars of stored trades the former lack, with the writer's pending trades, all read
        under the visibility lock so each trade counts exactly once."""
        async with self.writer.visibility.read():
            hot = self.hot
            answer = None
            if hot is not None:
                hot.check_seq(self.writer.committed_seq)
                answer = hot.answer(symbol, resolution, from_ms, to_ms, count)
                tier = hot.tier_for(resolution)
                if answer is None and tier is not None and not hot.loaded(symbol, tier):
                    await hot.load(self.store, symbol, tier)
                    answer = hot.answer(symbol, resolution, from_ms, to_ms, count)
            if answer is not None:
                stored, partials = answer
            elif count is None:
                stored, partials = await self.store.bars(symbol, resolution, from_ms, to_ms), []
            else:
                stored, partials = await self.store.bars_before(symbol, resolution, to_ms, count), []
            return stored, partials, self.writer.pending_for(symbol), self.writer.visible_seq

    async def _stored_previous(
        self, symbol: str, resolution: Resolution, before_ms: int
    ) -> tuple[int | None, list[TradeColumns]]:
        async with self.writer.visibility.read():
            stored = await self.store.previous_bar_time(symbol, resolution, before_ms)
            return stored, self.writer.pending_for(symbol)

    async def _bounded(self, query: Awaitable[T]) -> T:
        """``query`` (the visibility lock included: a flush hung on the store holds it) within
        ``timeout_s``, else :class:`StoreUnavailable`."""
        if self.timeout_s is None:
            return await query
        try:
            return await asyncio.wait_for(query, self.timeout_s)
        except TimeoutError:
            self._timed_out()
            raise StoreUnavailable(
                f"the store did not answer a history query within {self.timeout_s:g}s "
                "(slow or not answering); retry later"
            ) from None

    def _timed_out(self) -> None:
        """Counted, and said in the log once a minute at most (a slow store times out
        every request: one line per request would flood the log when it is least useful)."""
        self.timeouts += 1
        now = time.monotonic()
        if now - self._timeout_logged_at >= TIMEOUT_LOG_EVERY_S:
            log.warning(
                "history: %d queries timed out after %gs (TVFLUX_HISTORY_TIMEOUT_S) since the last such line; "
                "the store is slow or not answering, clients get 503 with Retry-After",
                self.timeouts - self._timeouts_logged,
                self.timeout_s,
            )
            self._timeouts_logged, self._timeout_logged_at = self.timeouts, now

    async def previous_bar_time(self, symbol: str, resolution: Resolution, before_ms: int) -> int | None:
        """Start of the latest bar before ``before_ms``, counting trades not yet stored."""
        stored, pending = await self._bounded(self._stored_previous(symbol, resolution, before_ms))
        limit_ns = before_ms * NS_PER_MS
        latest = max(
            (int(b.ts_ns[b.ts_ns < limit_ns].max()) for b in pending if (b.ts_ns < limit_ns).any()), default=None
        )
        if latest is None:
            return stored
        pending_bar = resolution.bucket_start_ms(latest // NS_PER_MS)
        return pending_bar if stored is None else max(stored, pending_bar)

    async def query(self, request: HistoryRequest) -> BarsResponse:
        started = time.perf_counter()
        try:
            return await self._query(request)
        finally:
            self.latency_s.observe(request.resolution.text, time.perf_counter() - started)

    async def _query(self, request: HistoryRequest) -> BarsResponse:
        res = request.resolution
        if request.countback is None:
            bars = (await self.bars(request.symbol, res, request.from_ms, request.to_ms)).bars
        elif request.countback > self.max_bars:
            bars = await self._paged_countback(request.symbol, res, request.to_ms, request.countback)
        else:
            bars = (await self.bars_before(request.symbol, res, request.to_ms, request.countback)).bars
        if bars:
            return BarsResponse(bars=bars, no_data=False, next_time=None)
        next_time = None
        if request.countback is None:
            next_time = await self.previous_bar_time(request.symbol, res, request.from_ms)
        # else: a countback holds the newest bars before ``to`` when any exist, so an empty
        # one already says there is nothing older: asking the store again would find nothing
        return BarsResponse(bars=[], no_data=True, next_time=next_time)

    async def _paged_countback(self, symbol: str, res: Resolution, to_ms: int, count: int) -> list[Bar]:
        """The newest ``count`` bars before ``to_ms``, read newest page first in pages of
        ``max_bars`` (each a bounded store read, each before the previous page's oldest bar),
        until ``count`` or the start of the data."""
        pages: list[list[Bar]] = []
        left = count
        while left > 0:
            page = (await self.bars_before(symbol, res, to_ms, min(left, self.max_bars))).bars
            if not page:
                break
            pages.append(page)
            left -= len(page)
            to_ms = page[0].time
            if len(page) < min(left + len(page), self.max_bars):
                break  # fewer than asked: nothing older
        return [bar for page in reversed(pages) for bar in page]


class SymbolSet:
    """The listed symbols (see :mod:`service.core.symbols`), with their specs: what ingest,
    history and live bars accept. :class:`~service.runtime.symbols.SymbolRegistry` keeps it
    in step with the store's registry; a set built from names alone gets default specs."""

    def __init__(self, configured: tuple[str, ...] | list[str] = ()) -> None:
        self._specs: dict[str, SymbolSpec] = {s: SymbolSpec(symbol=s) for s in configured}

    def add(self, symbols: list[str]) -> None:
        for s in symbols:
            self._specs.setdefault(s, SymbolSpec(symbol=s))

    def put(self, spec: SymbolSpec) -> None:
        self._specs[spec.symbol] = spec

    def remove(self, symbol: str) -> bool:
        return self._specs.pop(symbol, None) is not None

    def replace(self, specs: list[SymbolSpec]) -> list[str]:
        """Exactly ``specs`` from now on; returns the symbols that are gone."""
        gone = [s for s in self._specs if s not in {spec.symbol for spec in specs}]
        self._specs = {spec.symbol: spec for spec in specs}
        return gone

    def spec(self, symbol: str) -> SymbolSpec | None:
        return self._specs.get(symbol)

    def specs(self) -> list[SymbolSpec]:
        return list(self._specs.values())

    def __contains__(self, symbol: str) -> bool:
        return symbol in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._specs))

    def __len__(self) -> int:
        return len(self._specs)

    def require(self, symbol: str) -> SymbolSpec:
        spec = self._specs.get(symbol)
        if spec is None:
            known = list(self._specs)
            raise UnknownSymbol(
                f"unknown symbol {symbol!r}",
                details={"known": known[:100], **({"more": len(known) - 100} if len(known) > 100 else {})},
            )
        return spec


def _rounded(bars: list[Bar]) -> list[Bar]:
    """Volumes as outputs show them (:func:`round_volume`); bars already so are kept."""
    out = bars
    for i, b in enumerate(bars):
        v = round_volume(b.volume)
        if v != b.volume:
            if out is bars:
                out = list(bars)
            out[i] = Bar(b.time, b.open, b.high, b.low, b.close, v)
    return out


def _integer(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidRange(f"'{name}' must be an integer, got {text!r}") from None


def _seconds(text: str | None, name: str) -> int:
    value = _integer(text or "", name)
    if value < 0 or value > MAX_TIME_S:
        raise InvalidRange(f"'{name}' must be epoch seconds between 0 and {MAX_TIME_S}", details={name: value})
    return value
