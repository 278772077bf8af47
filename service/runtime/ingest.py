"""Accepting trades: validate, drop duplicates, give each a unique ``ts_ns``, then hand
them to the writer and the hub in one event-loop step.

A batch is accepted or refused whole: one bad trade refuses the batch with every problem
listed (index and reason), so a client never has to guess which half got in.

Duplicates: a trade whose ``id`` was seen before for its symbol is counted in
``duplicates`` and not stored again. "Seen" means among the last ``id_cache_size`` ids
(kept in memory and warmed from the store at start) or stored at the same millisecond —
where a retry of the same trade lands.

Price band (:mod:`service.core.priceband`): a live trade from a client whose price is too
far from its symbol's last trade price is refused, with the band in the answer. Bulk
history (``history=True``) and the trusted sources (synthetic, exchanges) are not judged;
every accepted trade moves the reference.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Callable
from operator import attrgetter

import numpy as np

from service.core import priceband
from service.core.errors import InvalidTrade, OutsidePriceBand, PayloadTooLarge
from service.core.models import Trade, TradeColumns, TradesAccepted, time_unit_hint
from service.core.resolution import parse_resolution
from service.core.timestamps import NS_PER_MS, TimestampAllocator
from service.runtime.history import SymbolSet
from service.runtime.hub import Hub
from service.runtime.writer import TradeWriter
from service.storage.base import Store

SECOND = parse_resolution("1S")
_id_of, _symbol_of = attrgetter("id"), attrgetter("symbol")
_price_of, _size_of, _time_of = attrgetter("price"), attrgetter("size"), attrgetter("time")


def implausible_past(time_ms: int, now_ms: int, max_past_ms: int, latest_ms: int) -> str:
    """Why a live trade's ``time`` is refused as too old, saying so when it is epoch
    seconds (the commonest mistake: the value ×1000 would be a time of today)."""
    reason = (
        f"time {time_ms} is more than {max_past_ms} ms in the past (TVFLUX_MAX_PAST_MS); "
        "live ingest takes recent trades, history goes in with `tvflux import` or POST /api/admin/trades"
    )
    if now_ms - max_past_ms <= time_ms * 1000 <= latest_ms:
        reason = f"time {time_ms} looks like epoch seconds; `time` is epoch milliseconds ({time_ms * 1000}): {reason}"
    return reason


class Ingestor:
    def __init__(
        self,
        store: Store,
        writer: TradeWriter,
        hub: Hub,
        symbols: SymbolSet,
        *,
        max_batch_trades: int,
        max_future_ms: int,
        max_past_ms: int = 0,
        id_cache_size: int = 200_000,
        price_band_pct: float = 0.0,
        price_band_window_ms: int = 900_000,
        on_accepted: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.hub = hub
        self.symbols = symbols
        self.max_batch_trades = max_batch_trades
        self.max_future_ms = max_future_ms
        self.max_past_ms = max_past_ms  # 0: any past time (live ingest sets a horizon)
        self.id_cache_size = id_cache_size
        self.price_band_pct = price_band_pct  # the default; a symbol's spec may say otherwise
        self.price_band_window_ms = price_band_window_ms
        self._references: dict[str, priceband.Reference] = {}  # per symbol: its last trade
        self._ids: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._ids_evicted = False  # every id accepted since start is in ``_ids`` until one is dropped
        self._stored_until_ms: dict[str, int] = {}  # per symbol: the newest stored ms at start
        self._newest_ms: dict[str, int] = {}  # per symbol: the newest trade time accepted since
        self._clock = TimestampAllocator()
        self._lock = asyncio.Lock()
        self.accepted = 0
        self.duplicates = 0
        self.rejected = 0
        self._on_accepted = on_accepted

    async def start(self) -> None:
        """Learn from the store what it holds (last timestamps, recent ids)."""
        for symbol in self.symbols:
            await self._start_symbol(symbol)
        for key in reversed(await self.store.recent_ids(self.id_cache_size)):
            self._remember(key)

    async def _start_symbol(self, symbol: str) -> None:
        if not self._clock.is_started(symbol):
            last = await self.store.last_ts_ns(symbol, 0, 2**62)
            self._stored_until_ms[symbol] = -1 if last is None else last // NS_PER_MS
            self._clock.start_symbol(symbol, last)
            if last is not None and symbol not in self._references:  # the band's reference
                second = last // NS_PER_MS // 1000 * 1000
                bars = await self.store.bars(symbol, SECOND, second, second + 1000)
                if bars:
                    self._references[symbol] = priceband.Reference(bars[-1].close, last // NS_PER_MS)

    def last_trade_ms(self, symbol: str) -> int | None:
        """The newest trade time of ``symbol`` this process knows of (stored before it started,
        or accepted since), or ``None``: for ``/api/symbols`` (is the symbol trading?)."""
        newest = max(self._newest_ms.get(symbol, -1), self._stored_until_ms.get(symbol, -1))
        return newest if newest >= 0 else None

    def forget_symbol(self, symbol: str) -> None:
        """The symbol's data was deleted (removed with its data): its ids are no longer
        "seen" and it has no newest trade any more."""
        for key in [k for k in self._ids if k[0] == symbol]:
            del self._ids[key]
        self._newest_ms.pop(symbol, None)
        self._references.pop(symbol, None)
        self._stored_until_ms[symbol] = -1

    def price_band(self, symbol: str, now_ms: int) -> priceband.Band | None:
        """The band a live trade of ``symbol`` must fall in now (``None``: none)."""
        spec = self.symbols.spec(symbol)
        pct = self.price_band_pct if spec is None or spec.price_band_pct is None else spec.price_band_pct
        return priceband.band_for(self._references.get(symbol), pct, now_ms, self.price_band_window_ms)

    # --- the untrusted path: clients --------------------------------------------------

    async def accept(self, trades: list[Trade], now_ms: int, *, history: bool = False) -> TradesAccepted:
        """``history``: a bulk load of past trades (``tvflux import`` through the service):
        no horizon on how old a trade may be."""
        if len(trades) > self.max_batch_trades:
            self.rejected += len(trades)
            raise PayloadTooLarge(
                f"{len(trades)} trades in one batch; at most {self.max_batch_trades}",
                details={"maxBatchTrades": self.max_batch_trades},
            )
        earliest_ms = None if history or not self.max_past_ms else now_ms - self.max_past_ms
        columns = self._plain_columns(trades, now_ms, earliest_ms)
        if columns is not None:  # the common case, vectorised: valid, no ids
            async with self._lock:
                for symbol, _, price, _ in columns:
                    await self._start_symbol(symbol)
                    band = None if history else self.price_band(symbol, now_ms)
                    if band is not None and priceband.outside(band, price).any():
                        self._refuse_outside_band(trades, now_ms)
                fast_batches = []
                for symbol, ts_ms, price, size in columns:
                    fast_batches.append(TradeColumns(symbol, await self._allocate(symbol, ts_ms), price, size))
                self._commit(fast_batches)
            return TradesAccepted(accepted=len(trades), duplicates=0)
        self._validate(trades, now_ms, earliest_ms)
        async with self._lock:
            groups: dict[str, list[Trade]] = {}
            for t in trades:
                groups.setdefault(t.symbol, []).append(t)
            for symbol in groups:
                await self._start_symbol(symbol)  # the band's reference
            fresh_groups = {symbol: await self._drop_duplicates(symbol, group) for symbol, group in groups.items()}
            if not history:  # a retry of accepted trades is answered as duplicates, not judged again
                fresh_ids = {id(t) for fresh in fresh_groups.values() for t in fresh}
                self._refuse_outside_band(trades, now_ms, only=fresh_ids)
            batches: list[TradeColumns] = []
            duplicates = 0
            for symbol, group in groups.items():
                fresh = fresh_groups[symbol]
                duplicates += len(group) - len(fresh)
                if fresh:
                    batches.append(await self._columns(symbol, fresh))
            accepted = sum(len(b) for b in batches)
            if batches:
                self._commit(batches)
                for b in batches:
                    for trade_id in b.ids or ():
                        if trade_id is not None:
                            self._remember((b.symbol, trade_id))
        self.duplicates += duplicates
        return TradesAccepted(accepted=accepted, duplicates=duplicates)

    def _plain_columns(
        self, trades: list[Trade], now_ms: int, earliest_ms: int | None = None
    ) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] | None:
        """``(symbol, time_ms, price, size)`` per symbol (first-seen order, trades in
        arrival order) when every trade is valid and none has an id; ``None`` otherwise,
        and the general path then reports the problems or drops the duplicates."""
        n = len(trades)
        if n == 0 or list(map(_id_of, trades)).count(None) != n:
            return None
        symbols = list(map(_symbol_of, trades))
        distinct = dict.fromkeys(symbols)
        if not all(s in self.symbols for s in distinct):
            return None
        price = np.fromiter(map(_price_of, trades), dtype=np.float64, count=n)
        size = np.fromiter(map(_size_of, trades), dtype=np.float64, count=n)
        ts_ms = np.fromiter(map(_time_of, trades), dtype=np.int64, count=n)
        if not (np.isfinite(price).all() and np.isfinite(size).all()) or int(ts_ms.max()) > now_ms + self.max_future_ms:
            return None
        if earliest_ms is not None and int(ts_ms.min()) < earliest_ms:
            return None
        if len(distinct) == 1:
            return [(symbols[0], ts_ms, price, size)]
        index = {s: i for i, s in enumerate(distinct)}
        codes = np.fromiter(map(index.__getitem__, symbols), dtype=np.int32, count=n)
        out = []
        for symbol, i in index.items():
            mask = codes == i
            out.append((symbol, ts_ms[mask], price[mask], size[mask]))
        return out

    def _validate(self, trades: list[Trade], now_ms: int, earliest_ms: int | None = None) -> None:
        """Every problem of the batch, one ``{"index", "reason"}`` each (a batch is at most
        ``max_batch_trades``, so the list is bounded)."""
        problems = []
        latest_ms = now_ms + self.max_future_ms
        for i, t in enumerate(trades):
            reason = None
            if t.symbol not in self.symbols:
                reason = f"unknown symbol {t.symbol!r}"
            elif not math.isfinite(t.price) or not math.isfinite(t.size):
                reason = "price and size must be finite"
            elif t.time > latest_ms:
                reason = f"time {t.time} is more than {self.max_future_ms} ms in the future"
                reason += time_unit_hint(t.time)
            elif earliest_ms is not None and t.time < earliest_ms:
                reason = implausible_past(t.time, now_ms, self.max_past_ms, latest_ms)
            if reason is not None:
                problems.append({"index": i, "reason": reason})
        if problems:
            self.rejected += len(trades)
            raise InvalidTrade(
                f"{len(problems)} invalid trade(s); nothing from this batch was accepted", details=problems
            )

    def _refuse_outside_band(self, trades: list[Trade], now_ms: int, only: set[int] | None = None) -> None:
        """Refuse the batch if a trade's price is outside its symbol's band, naming the band
        (every such trade listed, as for other invalid trades). ``only``: the ``id()`` of the
        trades to judge (the others are duplicates)."""
        bands: dict[str, priceband.Band | None] = {}
        problems = []
        for i, t in enumerate(trades):
            if only is not None and id(t) not in only:
                continue
            if t.symbol not in bands:
                bands[t.symbol] = self.price_band(t.symbol, now_ms)
            band = bands[t.symbol]
            if band is not None and not band.low <= t.price <= band.high:
                reference = self._references[t.symbol]
                reason = band.reason(t.symbol, t.price, reference.time_ms)
                problems.append({"index": i, "reason": reason, "priceBand": band.details()})
        if problems:
            self.rejected += len(trades)
            first = problems[0]["reason"]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise OutsidePriceBand(
                f"trade {problems[0]['index']}: {first}{more}; nothing from this batch was accepted", details=problems
            )

    async def _drop_duplicates(self, symbol: str, group: list[Trade]) -> list[Trade]:
        with_ids = [t for t in group if t.id is not None]
        if not with_ids:
            return group
        unknown = {t.id for t in with_ids if t.id is not None and (symbol, t.id) not in self._ids}
        stored: set[str] = set()
        await self._start_symbol(symbol)
        # A stored duplicate has the same time as its retry. Trades newer than anything the
        # store held at start were all accepted by this process, so their ids are in ``_ids``
        # unless it dropped some: then no store lookup is needed (one query less per batch,
        # and ingest keeps acknowledging into the spool while the store is down).
        if unknown and (
            self._ids_evicted or min(t.time for t in with_ids if t.id in unknown) <= self._stored_until_ms[symbol]
        ):
            lo_ms = min(t.time for t in with_ids)
            hi_ms = max(t.time for t in with_ids) + 1
            stored = await self.store.known_ids(symbol, sorted(unknown), lo_ms * NS_PER_MS, hi_ms * NS_PER_MS)
        seen: set[str] = set()
        fresh = []
        for t in group:
            if t.id is not None:
                if t.id in seen or t.id in stored or (t.id not in unknown):
                    continue
                seen.add(t.id)
            fresh.append(t)
        return fresh

    def forget(self, symbol: str, ids: list[str]) -> None:
        """Deleted trades (a correction): their ids are no longer "seen", so posting them
        again stores them again."""
        for trade_id in ids:
            self._ids.pop((symbol, trade_id), None)

    def _remember(self, key: tuple[str, str]) -> None:
        self._ids[key] = None
        self._ids.move_to_end(key)
        while len(self._ids) > self.id_cache_size:
            self._ids.popitem(last=False)
            self._ids_evicted = True

    async def _columns(self, symbol: str, trades: list[Trade]) -> TradeColumns:
        await self._start_symbol(symbol)
        ts_ms = np.fromiter((t.time for t in trades), dtype=np.int64, count=len(trades))
        ids = [t.id for t in trades] if any(t.id is not None for t in trades) else None
        ts_ns = await self._allocate(symbol, ts_ms)
        return TradeColumns(
            symbol,
            ts_ns,
            np.fromiter((t.price for t in trades), dtype=np.float64, count=len(trades)),
            np.fromiter((t.size for t in trades), dtype=np.float64, count=len(trades)),
            ids,
        )

    async def _allocate(self, symbol: str, ts_ms: np.ndarray) -> np.ndarray:
        missing = list(self._clock.missing(symbol, ts_ms))
        if len(missing) > 1:
            # Bulk history (POST /api/admin/trades) misses one millisecond per trade: one
            # lookup per millisecond, under the ingest lock, held live trades back for seconds
            # per batch (measured as push latency during a bulk load). A span holding nothing
            # stored or pending is seeded empty in one lookup.
            lo, hi = min(missing) * NS_PER_MS, (max(missing) + 1) * NS_PER_MS
            if (
                await self.store.last_ts_ns(symbol, lo, hi) is None
                and self.writer.pending_last_ts_ns(symbol, lo, hi) is None
            ):
                for ms in missing:
                    self._clock.seed(symbol, ms, None)
                return self._clock.allocate(symbol, ts_ms)
        for ms in missing:
            lo, hi = ms * NS_PER_MS, (ms + 1) * NS_PER_MS
            stored = await self.store.last_ts_ns(symbol, lo, hi)
            pending = self.writer.pending_last_ts_ns(symbol, lo, hi)
            known = [v for v in (stored, pending) if v is not None]
            self._clock.seed(symbol, ms, max(known) if known else None)
        return self._clock.allocate(symbol, ts_ms)

    # --- the trusted path: the synthetic source ------------------------------------------

    async def accept_columns(self, batches: list[TradeColumns]) -> int:
        """Trades already columnar, valid and id-less (``ts_ns`` in whole ms)."""
        async with self._lock:
            out = []
            for b in batches:
                if len(b):
                    await self._start_symbol(b.symbol)
                    out.append(
                        TradeColumns(b.symbol, await self._allocate(b.symbol, b.ts_ns // NS_PER_MS), b.price, b.size)
                    )
            if out:
                self._commit(out)
        return sum(len(b) for b in out)

    def _commit(self, batches: list[TradeColumns]) -> None:
        rows = sum(len(b) for b in batches)
        seq = self.writer.submit(batches)  # raises Overloaded before anything is published
        self.hub.publish(batches, seq)
        for b in batches:
            if len(b):
                newest = int(b.ts_ns.max()) // NS_PER_MS
                if newest > self._newest_ms.get(b.symbol, -1):
                    self._newest_ms[b.symbol] = newest
                reference = priceband.newest(self._references.get(b.symbol), b.ts_ns // NS_PER_MS, b.price)
                if reference is not None:
                    self._references[b.symbol] = reference
        self.accepted += rows
        if self._on_accepted is not None:
            self._on_accepted(rows)
