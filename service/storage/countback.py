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
