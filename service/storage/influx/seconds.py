"""Countback at second resolutions on InfluxDB: the newest raw trades, folded here.

No tier stores second bars, so a page of them aggregates raw trades, and months back every
InfluxQL request costs InfluxDB milliseconds of its own. Measured on the 3M-trade, 120-day
dataset 90 days back: selecting 1,300 s of its trades 4.5-5 ms, ``GROUP BY time(1s)`` over
the same trades 12-13 ms, a ``last()`` lookup before them 13-27 ms; the general countback
(:func:`~service.storage.countback.bars_before_by_jumps`) took two to five of those per page.

So a page here is one request when it can be: the newest trades before ``to`` (at most
:data:`RAW_ROWS`), within a window sized by what this series' previous page needed (its
scroll-back pages follow each other), folded into bars exactly as InfluxDB's
first/max/min/last/sum fold them (volumes summed in time order from 0), so the bars equal
``InfluxStore.bars``'s bit for bit. What that read does not cover (the first page of a
series, a dense burst past :data:`RAW_ROWS`, a quiet stretch) is read the general way below
it. The hint only sizes reads; answers are exact whatever it says.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from service.core.models import Bar
from service.core.resolution import Resolution
from service.storage.countback import HINT_MARGIN, MAX_HINT

RAW_ROWS = 5_000  # trades one read may ship (~250 kB of JSON); a denser window is read aggregated

TradeRow = tuple[int, float, float]  # (time ms, price, size)
# the newest trades in [from_ms, to_ms), at most ``limit``, newest first
NewestTrades = Callable[[int, int, int], Awaitable[list[TradeRow]]]
# the general countback: the newest ``count`` bars before ``to_ms``
Countback = Callable[[int, int], Awaitable[list[Bar]]]


def fold_trades(rows: Sequence[TradeRow], size_ms: int) -> list[Bar]:
    """Bars of ``size_ms`` (epoch-aligned) from trades in time order, as InfluxDB's
    ``first()``, ``max()``, ``min()``, ``last()`` and ``sum()`` build them."""
    bars: list[Bar] = []
    key = -1
    o = h = low = c = v = 0.0
    for t_ms, price, size in rows:
        start = t_ms // size_ms * size_ms
        if start != key:
            if key >= 0:
                bars.append(Bar(key, o, h, low, c, v))
            key, o, h, low, c, v = start, price, price, price, price, 0.0 + size
        else:
            h = price if price > h else h
            low = price if price < low else low
            c = price
            v += size
    if key >= 0:
        bars.append(Bar(key, o, h, low, c, v))
    return bars


async def seconds_before(
    resolution: Resolution,
    to_ms: int,
    count: int,
    hint: float,
    newest_trades: NewestTrades,
    countback: Countback,
) -> tuple[list[Bar], float | None]:
    """The newest ``count`` bars of a second resolution starting before ``to_ms``, and the
    buckets per bar this page saw (the next page's ``hint``; ``None``: nothing learnt)."""
    size = resolution.size_ms
    assert size is not None  # second resolutions have a fixed size
    width = int(count * min(MAX_HINT, max(1.0, hint) * HINT_MARGIN))
    lo = max(0, (to_ms - width * size) // size * size)
    hi = (to_ms - 1) // size * size + size  # whole buckets: the last one starts before ``to_ms``
    rows = await newest_trades(lo, hi, RAW_ROWS)
    rows.reverse()  # oldest first
    covered = lo
    if len(rows) >= RAW_ROWS:  # cut by the limit: its oldest bucket may be partial
        covered = rows[0][0] // size * size + size
        rows = [r for r in rows if r[0] >= covered]
    bars = fold_trades(rows, size)
    if len(bars) >= count:
        bars = bars[-count:]
        return bars, (hi - bars[0].time) / size / count
    learnt = (hi - covered) / size / len(bars) if bars else None
    if covered <= 0:
        return bars, learnt
    return await countback(covered, count - len(bars)) + bars, learnt
