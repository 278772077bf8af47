"""Marker trades: how a subscriber recognises the first pushed bar that reflects a
specific trade, to measure end-to-end latency.

A marker is an ordinary trade whose price is far above any real one — the epoch
millisecond at which it was sent (≈1.7e12), strictly increasing per symbol, across runs
too. The ``high`` of a bar is the max of its prices, so a bar of bucket ``b`` with
``high >= price(m)`` reflects marker ``m`` if ``m`` fell in bucket ``b``. All markers go
over one dedicated ingest connection, which the server processes in order, so seeing
marker ``m`` in a bar also means every earlier marker of that bucket was applied.

A subscriber walks the markers of its symbol in order: a marker of an earlier bucket than
the bar it just received was never shown (it reached the server after its bar had
closed, a late trade) and counts as *missed*; a marker of the bar's bucket with a price
up to the bar's high is a latency sample. Markers distort the highs of the bars they land
in, so point the load generator at a scratch server, never at real data.
"""

from __future__ import annotations

import time
from array import array

from service.core.resolution import Resolution


class MarkerBook:
    """The markers sent so far for one symbol (append-only, shared by its subscribers)."""

    __slots__ = ("symbol", "prices", "sent", "ok", "buckets", "_resolutions", "last_price")

    def __init__(self, symbol: str, resolutions: list[Resolution]) -> None:
        self.symbol = symbol
        self.prices = array("d")
        self.sent = array("d")  # perf_counter() when the frame carrying it was handed to the socket
        self.ok = bytearray()  # 0 once the server refused the frame that carried it
        self._resolutions = list(dict.fromkeys(resolutions))
        self.buckets: dict[Resolution, array[int]] = {r: array("q") for r in self._resolutions}
        self.last_price = 0.0

    def next_price(self, now_ms: int) -> float:
        price = float(max(now_ms, int(self.last_price) + 1))
        self.last_price = price
        return price

    def add(self, price: float, time_ms: int, sent: float) -> int:
        """Record a marker about to be sent; returns its index."""
        self.prices.append(price)
        self.sent.append(sent)
        self.ok.append(1)
        for res, buckets in self.buckets.items():
            buckets.append(res.bucket_start_ms(time_ms))
        return len(self.prices) - 1

    def refuse(self, index: int) -> None:
        self.ok[index] = 0

    def __len__(self) -> int:
        return len(self.prices)


class MarkerCursor:
    """One subscription's position in a :class:`MarkerBook`."""

    __slots__ = ("book", "buckets", "pos")

    def __init__(self, book: MarkerBook, resolution: Resolution) -> None:
        self.book = book
        self.buckets = book.buckets[resolution]
        self.pos = len(book)  # markers sent before the subscription do not count

    def observe(
        self, bar_time: int, high: float, now: float, window: tuple[float, float], samples: array[float]
    ) -> int:
        """Resolve the markers this bar reflects; latencies (ms) of markers sent inside
        ``window`` (perf_counter bounds) go to ``samples``. Returns how many were missed."""
        book = self.book
        prices, sent, ok, buckets = book.prices, book.sent, book.ok, self.buckets
        pos, end, missed = self.pos, len(prices), 0
        lo, hi = window
        while pos < end:
            bucket = buckets[pos]
            if bucket > bar_time or (bucket == bar_time and prices[pos] > high):
                break
            t = sent[pos]
            if bucket < bar_time or not ok[pos]:
                if ok[pos] and lo <= t <= hi:
                    missed += 1
            elif lo <= t <= hi:
                samples.append((now - t) * 1000.0)
            pos += 1
        self.pos = pos
        return missed


def wall_ms() -> int:
    return time.time_ns() // 1_000_000
