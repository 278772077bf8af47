"""Trade sources that run inside the service (the synthetic market), and a rate meter."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from service.clock import now_ms
from service.errors import Overloaded
from service.ingest import Ingestor
from service.synthetic import SyntheticMarket

log = logging.getLogger(__name__)
TICK_MS = 50  # generate every 50 ms: small enough for smooth live bars


async def run_synthetic(ingestor: Ingestor, symbols: tuple[str, ...], rate_per_s: float, seed: int) -> None:
    """Feed synthetic trades for ``symbols`` at ``rate_per_s`` (total) until cancelled.
    Trades carry the wall-clock time of their window, so live bars fill as they would
    from an exchange feed."""
    market = SyntheticMarket(symbols, seed=seed)
    last_ms = now_ms()
    while True:
        await asyncio.sleep(TICK_MS / 1000)
        now = now_ms()
        if now <= last_ms:
            continue
        batches = market.trades(last_ms, now, rate_per_s)
        try:
            await ingestor.accept_columns(batches)
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
