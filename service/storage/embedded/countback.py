"""Countback on the embedded store: the newest ``count`` bars of a resolution before ``to``.

Steps 1-3 read bounded time ranges only, which DuckDB's zone maps narrow to the row groups
they need; step 4, a top-N over every older row of the symbol in one tier table (2-4 ms on a
120-day 1-minute table, and growing with it), is left for what follows a quiet stretch:

1. nothing when ``to`` is at or before the symbol's first stored trade (no statement: the
   store keeps the first trade, see :class:`CountbackMemory`);
2. the window of ``count`` buckets before ``to`` (dense data: done); for a sparse series,
   ``count × hint`` buckets, newest ``count``, where the hint is the buckets per bar its
   previous countback saw: the pages of a scroll-back follow each other, so the next one
   is one read too;
3. else the span before it that the first read's density says holds the missing bars,
   read twice as wide (done unless a quiet stretch begins in it);
4. a quiet stretch: the start of the ``k``-th newest row of the serving tier before what was
   read (:func:`nth_row_before`, an ORDER BY … LIMIT on one tier table, never the raw trades,
   but over every older row of the symbol), then the bars from there.

A read never goes before the first trade. Each step reads only what the ones before did
not, on bucket boundaries, so the pieces join without overlap. The hint only sizes reads:
the answer is exact whatever it says. Functions of one DuckDB cursor, called in the store's
worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

import duckdb

from service.core.models import Bar, TradeColumns
from service.core.plan import Plan
from service.core.resolution import Resolution
from service.core.timestamps import NS_PER_MS
from service.storage.countback import HINT_MARGIN, MAX_HINT, SeriesHints
from service.storage.embedded.sql import bars_table

# bars of ``resolution`` in ``[from_ms, to_ms)``, ascending; only the newest ``last`` when given
ReadBars = Callable[[int, int, "int | None"], list[Bar]]
# (start, kind) of the rows before ``before_ms`` holding ``missing`` bars, see nth_row_before
NthRowBefore = Callable[[int, int], "tuple[int | None, str]"]

WIDEN = 2  # step 3 reads this many times the span the first read's density predicts


def newest_bars(
    resolution: Resolution,
    to_ms: int,
    count: int,
    first_ms: int | None,
    read: ReadBars,
    nth_row: NthRowBefore,
    hint: float = 1.0,
) -> tuple[list[Bar], float | None]:
    """The bars, and the buckets per bar the first read saw (the next page's ``hint``;
    ``None``: nothing learnt). ``first_ms``: the symbol's first stored trade (``None``: it
    has none)."""
    if first_ms is None or count <= 0:
        return [], None
    first = resolution.bucket_start_ms(first_ms)
    if to_ms <= first:
        return [], None
    width = count if hint <= 1 else int(count * min(MAX_HINT, hint * HINT_MARGIN))
    lo = max(first, resolution.bucket_start_ms(max(0, to_ms - width * resolution.nominal_ms)))
    bars = read(lo, to_ms, None if width == count else count)
    if len(bars) >= count:
        return bars[-count:], (to_ms - bars[-count].time) / resolution.nominal_ms / count
    # buckets read per bar (not ``width``: the read stops at the first trade); a quiet
    # stretch says nothing of the density
    learnt = (to_ms - lo) / resolution.nominal_ms / len(bars) if bars else None
    if lo <= first:
        return bars, learnt
    if bars:
        # as many buckets per bar before the first read as in it, twice over for safety
        span = WIDEN * (to_ms - lo) * (count - len(bars)) // len(bars)
        start = max(first, resolution.bucket_start_ms(max(0, lo - span)))
        bars = read(start, lo, count - len(bars)) + bars
        if len(bars) >= count or start <= first:
            return bars, learnt
        lo = start
    missing = count - len(bars)
    row, kind = nth_row(lo, missing)
    if kind == "none":
        return bars, learnt  # everything there is was read
    older = read(first if row is None else max(first, resolution.bucket_start_ms(row)), lo, missing)
    if len(older) < missing and kind == "enough":
        # tier rows of a dirty window whose trades were deleted counted, but no longer hold
        # a bar (until the next run rebuilds them): only the first trade is a safe start then
        older = read(first, lo, missing)
    return older + bars, learnt


def nth_row_before(
    cursor: duckdb.DuckDBPyConnection,
    plan: Plan,
    watermarks: Mapping[str, int | None],
    dirty: tuple[int, int] | None,
    symbol: str,
    resolution: Resolution,
    before_ms: int,
    missing: int,
) -> tuple[int | None, str]:
    """Where to read from so that ``[start, before_ms)`` spans at least ``missing``
    buckets of ``resolution``, found with one ORDER BY … LIMIT on the serving tier (the
    first tier for second resolutions): ``(row, "enough")``; ``(oldest, "all")`` when
    less exists and that is all of it; ``(None, "none")`` when nothing precedes
    ``before_ms``; ``(None, "unknown")`` when only the first trade is a safe start.
    ``dirty``: the symbol's span read from raw trades (see ``history_segments``)."""
    tier = plan.serving_tier(resolution)
    if tier is None:
        tier = plan.tiers[0]
        size = resolution.size_ms
        if size is None or tier.size_ms % size:
            return None, "unknown"
        per_bucket = 1  # every non-empty tier bar holds at least one bucket
    else:
        per_bucket = -(-resolution.nominal_ms // tier.size_ms)  # tier rows one bucket may hold
    wm = watermarks.get(tier.name)
    if wm is None:
        return None, "unknown"
    k = missing * per_bucket
    n, oldest = cursor.execute(
        f"SELECT count(*), min(time_ms) FROM (SELECT time_ms FROM {bars_table(tier)} WHERE symbol = ? "
        f"AND time_ms < ? ORDER BY time_ms DESC LIMIT {int(k)})",
        [symbol, min(before_ms, wm)],
    ).fetchall()[0]
    if n >= k:
        return int(oldest), "enough"
    # Fewer rows: they are all the data before ``before_ms`` only if the tier alone
    # composes it there (no finer tier or raw segment, no dirty span read from raw).
    if before_ms <= wm and (dirty is None or dirty[0] >= before_ms):
        return (int(oldest), "all") if n else (None, "none")
    return None, "unknown"


class CountbackMemory:
    """What the store keeps between countbacks.

    * Per symbol, its first stored trade (ms; ``None``: it has none), read once a countback
      needs it (a scan of the symbol's trades, under the store's write lock so no write
      commits between the read and keeping it), then kept by the writes, which call
      :meth:`appended`, :meth:`deleted` and :meth:`purged` after they commit, under that lock:
      an append lowers it, a delete that reaches it or a purge forgets it.
    * Per series of a sparse symbol, the buckets per bar its last countback saw
      (:class:`~service.storage.countback.SeriesHints`).

    Both are plain dicts read without a lock (one lookup each, atomic in CPython)."""

    def __init__(self, write_lock: threading.RLock) -> None:
        self._write_lock = write_lock
        self._first_ms: dict[str, int | None] = {}
        self.hints = SeriesHints()

    def before_first_trade(self, symbol: str, resolution: Resolution, to_ms: int) -> bool:
        """Whether no bar of ``resolution`` starts before ``to_ms``, known without a query
        (``False`` while the first trade is not known)."""
        try:
            first = self._first_ms[symbol]
        except KeyError:
            return False
        return first is None or to_ms <= resolution.bucket_start_ms(first)

    def first_trade_ms(self, cursor: duckdb.DuckDBPyConnection, symbol: str) -> int | None:
        try:
            return self._first_ms[symbol]
        except KeyError:
            pass
        with self._write_lock:
            if symbol not in self._first_ms:
                (first,) = cursor.execute("SELECT min(ts_ns) FROM trades WHERE symbol = ?", [symbol]).fetchall()[0]
                self._first_ms[symbol] = None if first is None else int(first) // NS_PER_MS
            return self._first_ms[symbol]

    def appended(self, batches: Sequence[TradeColumns]) -> None:
        for b in batches:
            if b.symbol in self._first_ms:
                known, oldest_ms = self._first_ms[b.symbol], int(b.ts_ns.min()) // NS_PER_MS
                self._first_ms[b.symbol] = oldest_ms if known is None else min(known, oldest_ms)

    def deleted(self, symbol: str, oldest_ms: int | None) -> None:
        """``oldest_ms``: the oldest trade deleted (``None``: none was)."""
        known = self._first_ms.get(symbol)
        if oldest_ms is not None and (known is None or oldest_ms <= known):
            self._first_ms.pop(symbol, None)  # read again when next needed

    def purged(self, symbol: str) -> None:
        self._first_ms.pop(symbol, None)
        self.hints.forget(symbol)
