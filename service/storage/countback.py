"""``bars_before`` for a store whose :meth:`~service.storage.base.Store.previous_bar_time`
is an indexed lookup (InfluxDB answers ``last()`` per series from its index): read the
window of exactly ``count`` buckets; when it falls short, read on below it as wide as its
density says the rest needs, and when a window is empty jump straight to the older data
that :meth:`previous_bar_time` finds, so an empty gap costs one lookup, not a doubling per
gap length. The embedded store answers with bounded statements of its own
instead (:mod:`service.storage.embedded.countback`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from service.core.models import Bar
from service.core.resolution import Resolution

if TYPE_CHECKING:
    from service.storage.base import Store

HINT_MARGIN = 1.25  # a hinted read spans this much more than the series' last page needed
MAX_HINT = 64.0  # a hinted read spans at most this many times ``count`` buckets


class SeriesHints:
    """Per (symbol, resolution) of a sparse series, the buckets per bar its last countback
    saw: the pages of a scroll-back follow each other, so the next page's first read can
    span what it will need. Hints only size reads; answers are exact whatever they say.
    Bounded by symbols × resolutions (a purge forgets a symbol's). Plain dict operations,
    atomic in CPython: readers in worker threads need no lock."""

    def __init__(self) -> None:
        self._hints: dict[tuple[str, str], float] = {}

    def get(self, symbol: str, resolution: Resolution, count: int) -> float:
        """1.0 (no hint: dense, or never seen) unless a sparse series' last page said more."""
        return self._hints.get((symbol, resolution.text), 1.0) if count > 1 else 1.0

    def learn(self, symbol: str, resolution: Resolution, count: int, learnt: float | None) -> None:
        if count <= 1 or learnt is None:  # a countback of one, or a quiet stretch, says little
            return
        if learnt > 1 and math.isfinite(learnt):
            self._hints[(symbol, resolution.text)] = learnt
        else:
            self._hints.pop((symbol, resolution.text), None)

    def forget(self, symbol: str) -> None:
        for series in list(self._hints):  # a copy: readers add hints meanwhile
            if series[0] == symbol:
                self._hints.pop(series, None)


async def bars_before_by_jumps(store: Store, symbol: str, resolution: Resolution, to_ms: int, count: int) -> list[Bar]:
    if to_ms <= 0 or count <= 0:
        return []
    bars: list[Bar] = []
    hi = to_ms
    span = count
    while True:
        lo = resolution.bucket_start_ms(max(0, hi - span * resolution.nominal_ms))
        window = await store.bars(symbol, resolution, lo, hi)
        bars = [*window, *bars]
        if len(bars) >= count or lo == 0:
            return bars[-count:]
        missing = count - len(bars)
        if window:
            # Sparse data, not a gap: read on from ``lo``, as wide as this window's density
            # says the missing bars need (half again). No lookup: on InfluxDB a last()
            # before a time 90 days back costs as much as the read (13-27 ms measured).
            buckets_per_bar = (hi - lo) / resolution.nominal_ms / len(window)
            hi = lo
            span = max(span * 2, math.ceil(missing * buckets_per_bar * 1.5))
            continue
        older = await store.previous_bar_time(symbol, resolution, lo)
        if older is None:
            return bars
        # Nothing lies between the older bar and ``lo``: the next window ends just after it,
        # so a gap (an outage, or a chart opened long after the data ended) is never read,
        # and grows while the data stays sparse.
        hi = resolution.next_start_ms(older)
        span = max(span * 2, missing)
