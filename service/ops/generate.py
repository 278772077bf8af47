"""Where ``tvflux generate`` writes, and the prices it starts and ends at.

Generated history never overlaps stored trades: an explicit ``--end-ms`` whose span holds a
stored trade of any of the symbols is refused (the span is checked exactly, so a deleted
range can be regenerated); without it the span ends now, or — when that span holds stored
trades — right before the first stored trade of the symbols that have some in it, and again
until the span is free (at most once per symbol: the span then ends before all of its
trades).

It joins the neighbouring prices: each symbol's walk starts at its last stored price before
the span and is steered (a Brownian bridge, :meth:`SyntheticMarket.steer`) to arrive at its
first stored price after it, so no seam shows a cliff. The walk mixes ``--seed`` with the
span, so two spans of one seed are different walks.

The same questions are asked of the store file (:class:`StoreView`) or of the running
service that holds it (:class:`ServiceView`, over its HTTP API).
"""

from __future__ import annotations

import sys
import time
from typing import Protocol

from service.core.resolution import parse_resolution
from service.core.symbols import SymbolRecord
from service.core.synthetic import SyntheticMarket
from service.core.timestamps import NS_PER_MS
from service.ops import remote
from service.storage.base import Store

SECOND = parse_resolution("1S")


class Neighbours(Protocol):
    async def first_in(self, symbol: str, from_ms: int, to_ms: int) -> int | None:
        """The time (ms) of the first stored trade of ``symbol`` in ``[from_ms, to_ms)``."""

    async def first_ms(self, symbol: str) -> int | None:
        """The time (ms) of the first stored trade of ``symbol`` at all."""

    async def price_before(self, symbol: str, at_ms: int) -> float | None:
        """The price of the last stored trade of ``symbol`` before ``at_ms``."""

    async def price_from(self, symbol: str, at_ms: int) -> tuple[int, float] | None:
        """Time and price of the first stored trade of ``symbol`` at or after ``at_ms``."""


class StoreView:
    """The questions, asked of the store file directly (each a bounded read)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def first_in(self, symbol: str, from_ms: int, to_ms: int) -> int | None:
        store = self.store
        if await store.last_ts_ns(symbol, from_ms * NS_PER_MS, to_ms * NS_PER_MS) is None:
            return None
        lo, hi = from_ms, to_ms  # invariant: none in [from_ms, lo), some in [from_ms, hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if await store.last_ts_ns(symbol, from_ms * NS_PER_MS, mid * NS_PER_MS) is None:
                lo = mid
            else:
                hi = mid
        return hi - 1

    async def first_ms(self, symbol: str) -> int | None:
        span = await self.store.trade_span(symbol)
        return None if span is None else span[0] // NS_PER_MS

    async def price_before(self, symbol: str, at_ms: int) -> float | None:
        bars = await self.store.bars_before(symbol, SECOND, -(-at_ms // 1000) * 1000, 1)
        return bars[-1].close if bars else None

    async def price_from(self, symbol: str, at_ms: int) -> tuple[int, float] | None:
        span = await self.store.trade_span(symbol)
        if span is None or span[1] // NS_PER_MS < at_ms:
            return None
        first = span[0] // NS_PER_MS
        t = first if first >= at_ms else await self.first_in(symbol, at_ms, span[1] // NS_PER_MS + 1)
        if t is None:
            return None
        second = t // 1000 * 1000
        bars = await self.store.bars(symbol, SECOND, second, second + 1000)
        return (t, bars[0].open) if bars else None


class ServiceView:
    """The questions, asked of the running service: its history (memory included) and its
    admin symbol list (where each symbol's stored trades begin)."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.token = token
        self._firsts: dict[str, int | None] | None = None

    async def first_in(self, symbol: str, from_ms: int, to_ms: int) -> int | None:
        return remote.earliest_bar_ms(self.url, symbol, from_ms, to_ms)

    async def first_ms(self, symbol: str) -> int | None:
        if self._firsts is None:
            answer = remote.call(self.url, "GET", "/api/admin/symbols", self.token, dict[str, list[SymbolRecord]])
            self._firsts = {r.spec.symbol: r.first_trade_ms for r in answer.get("symbols", [])}
        return self._firsts.get(symbol)

    async def price_before(self, symbol: str, at_ms: int) -> float | None:
        bars = remote.bars(self.url, symbol, "1S", to_s=-(-at_ms // 1000), countback=1)
        return bars[-1].close if bars else None

    async def price_from(self, symbol: str, at_ms: int) -> tuple[int, float] | None:
        t = remote.earliest_bar_ms(self.url, symbol, at_ms, int(time.time() * 1000) + 86_400_000)
        if t is None:
            return None
        bars = remote.bars(self.url, symbol, "1S", from_s=t // 1000, to_s=t // 1000 + 1)
        return (max(t, at_ms), bars[0].open) if bars else None


class Overlap(Exception):
    def __init__(self, symbol: str, first_ms: int) -> None:
        super().__init__(symbol, first_ms)
        self.symbol = symbol
        self.first_ms = first_ms


async def place(view: Neighbours, symbols: tuple[str, ...], span_ms: int, end_ms: int, *, fixed: bool) -> int:
    """The end of the span to write: ``end_ms`` when ``[end_ms - span_ms, end_ms)`` holds no
    stored trade of ``symbols``; else, with ``fixed``, :class:`Overlap`; else earlier (see the
    module doc)."""
    end = end_ms
    for _ in range(len(symbols) + 1):
        found = {s: t for s in symbols if (t := await view.first_in(s, end - span_ms, end)) is not None}
        if not found:
            return end
        if fixed:
            symbol, first = min(found.items(), key=lambda kv: kv[1])
            raise Overlap(symbol, first)
        # before all trades of each symbol found: none of them can be in the next span
        for s, t in found.items():
            stored_from = await view.first_ms(s)
            end = min(end, t, t if stored_from is None else stored_from)
    raise AssertionError("a span before every symbol's first trade holds none of them")


async def join(view: Neighbours, market: SyntheticMarket, start_ms: int, end_ms: int) -> dict[str, str]:
    """Start each symbol's walk at its last stored price before the span and steer it to its
    first stored price after it. Returns what each symbol was joined to (for the summary)."""
    joined = {}
    for symbol in market.symbols:
        before = await view.price_before(symbol, start_ms)
        after = await view.price_from(symbol, end_ms)
        if before is not None:
            market.continue_from(symbol, before)
        elif after is not None:
            market.start_near(symbol, after[1], end_ms - start_ms)
        if after is not None:
            market.steer(symbol, after[1], end_ms)
        sides = [f"from {before:g}" if before is not None else "", f"to {after[1]:g}" if after is not None else ""]
        if any(sides):
            joined[symbol] = " ".join(s for s in sides if s)
    return joined


def utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def say(text: str) -> None:
    print(text, file=sys.stderr)
