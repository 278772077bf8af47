"""Trade sources that run inside the service (the synthetic market), and a rate meter."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from service.core.errors import Overloaded, TvfluxError
from service.core.models import TradeColumns
from service.core.resolution import parse_resolution
from service.core.synthetic import SyntheticMarket
from service.core.timestamps import NS_PER_MS, TimestampAllocator
from service.runtime.clock import now_ms
from service.runtime.ingest import Ingestor
from service.storage.base import Store, TradeSink

log = logging.getLogger(__name__)
TICK_MS = 50  # generate every 50 ms: small enough for smooth live bars
APPEND_ROWS = 1_000_000  # backfill: rows per store append (one transaction each)


async def backfill_synthetic(
    store: TradeSink,
    market: SyntheticMarket,
    rate_per_s: float,
    span_ms: int,
    end_ms: int,
    *,
    on_written: Callable[[int], None] | None = None,
) -> int:
    """Write ``span_ms`` of synthetic history ending at ``end_ms`` straight into the
    store: at the service's first start, so a first ``make run`` shows a chart with
    history at once (the same market the live feed continues, so prices join up), and
    for ``tvflux generate``. Returns the trades written; ``on_written(total)`` follows
    progress."""
    start_ms = end_ms - span_ms
    clock = TimestampAllocator()
    for symbol in market.symbols:  # unique timestamps continue after what is stored
        clock.start_symbol(symbol, await store.last_ts_ns(symbol, 0, start_ms * NS_PER_MS))
    written = 0
    group: list[TradeColumns] = []
    group_rows = 0
    # One hour per chunk: a few hundred thousand trades at the POC's density, so memory
    # stays flat whatever the total; appends are grouped to ~1M rows per transaction.
    chunk_ms = 3_600_000
    for lo in range(start_ms, end_ms, chunk_ms):
        hi = min(end_ms, lo + chunk_ms)
        for b in market.trades(lo, hi, rate_per_s):
            group.append(TradeColumns(b.symbol, clock.allocate(b.symbol, b.ts_ns // NS_PER_MS), b.price, b.size))
            group_rows += len(b)
        if group_rows >= APPEND_ROWS or hi >= end_ms:
            await store.append(group)
            written += group_rows
            group, group_rows = [], 0
            if on_written is not None:
                on_written(written)
    return written


async def resume_prices(store: Store, market: SyntheticMarket, now_ms: int) -> dict[str, float]:
    """Set each symbol of ``market`` to its last stored price (the close of its latest
    minute), so a restarted service continues the chart where it left off instead of
    jumping back to the seed's level. Returns the prices it continued from."""
    minute = parse_resolution("1")
    resumed = {}
    for symbol in market.symbols:
        t = await store.previous_bar_time(symbol, minute, now_ms + minute.nominal_ms)
        if t is None:
            continue
        bars = await store.bars(symbol, minute, t, t + minute.nominal_ms)
        if bars:
            market.continue_from(symbol, bars[-1].close)
            resumed[symbol] = bars[-1].close
    return resumed


async def run_synthetic(
    ingestor: Ingestor,
    market: SyntheticMarket,
    rate_per_s: float,
    start_ms: int,
    on_accepted: Callable[[str, int], None] | None = None,
) -> None:
    """Feed synthetic trades from ``market`` at ``rate_per_s`` (total) until cancelled.
    Trades carry the wall-clock time of their window, so live bars fill as they would
    from an exchange feed. Prices continue from the last stored ones (:func:`resume_prices`).
    ``on_accepted(symbol, n)`` follows what was fed."""
    try:
        resumed = await resume_prices(ingestor.store, market, now_ms())
        if resumed:
            log.info(
                "synthetic source continues from the stored prices: %s",
                ", ".join(f"{s} {p:g}" for s, p in resumed.items()),
            )
    except TvfluxError as exc:  # the store is down: start from the seed's levels
        log.warning("synthetic source: cannot read the last prices (%s); starting from the seed's", exc.message)
    last_ms = start_ms
    while True:
        await asyncio.sleep(TICK_MS / 1000)
        now = now_ms()
        if now <= last_ms:
            continue
        batches = market.trades(last_ms, now, rate_per_s)
        try:
            await ingestor.accept_columns(batches)
            if on_accepted is not None:
                for b in batches:
                    on_accepted(b.symbol, len(b))
        except Overloaded:
            log.warning("synthetic source: writer full, skipping %d ms of trades", now - last_ms)
        last_ms = now


class RateMeter:
    """Trades per second over the last few seconds (for /api/stats and /admin)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_ms = window_s * 1000
        self._events: deque[tuple[int, int]] = deque()
        self.total = 0

    def add(self, count: int) -> None:
        now = now_ms()
        self.total += count
        self._events.append((now, count))
        self._trim(now)

    def _trim(self, now: int) -> None:
        while self._events and self._events[0][0] < now - self.window_ms:
            self._events.popleft()

    def per_second(self) -> float:
        now = now_ms()
        self._trim(now)
        return sum(c for _, c in self._events) * 1000 / self.window_ms
