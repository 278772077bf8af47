"""Unique nanosecond timestamps per symbol.

Trades arrive with millisecond times; InfluxDB silently overwrites points that share
measurement, tags and timestamp, so two trades of one symbol in the same millisecond must
get distinct ``ts_ns``. A trade gets ``ms * 1_000_000 + k`` where ``k`` counts the trades
of that symbol already stored in that millisecond (arrival order breaks ties, and it is
also the order open/close use).

Pure: the allocator keeps, per symbol, the next free offset of every millisecond at or
after ``known_from_ms`` (everything that passed through it). For an older millisecond the
caller must look the store up first (:meth:`missing`) and :meth:`seed` the answer, so
uniqueness holds after restarts and for late trades too. Memory is bounded: offsets
older than ``window_ms`` behind the newest trade are forgotten, which moves
``known_from_ms`` forward (those milliseconds are then looked up again if ever needed).
"""

from __future__ import annotations

import numpy as np

NS_PER_MS = 1_000_000


class _SymbolClock:
    __slots__ = ("known_from_ms", "next_offset", "newest_ms")

    def __init__(self, known_from_ms: int) -> None:
        self.known_from_ms = known_from_ms
        self.next_offset: dict[int, int] = {}
        self.newest_ms = known_from_ms


class TimestampAllocator:
    # A minute covers trades that arrive a little out of order; older milliseconds are rare
    # and looked up in the store. (Ten minutes held ~600k entries per busy symbol, ~40 MB
    # each: the soak benchmark's RSS drift.)
    def __init__(self, window_ms: int = 60_000, max_entries: int = 200_000) -> None:
        self.window_ms = window_ms
        self.max_entries = max_entries
        self._clocks: dict[str, _SymbolClock] = {}

    def start_symbol(self, symbol: str, last_stored_ts_ns: int | None) -> None:
        """Declare what the store holds: nothing at or after the millisecond following
        ``last_stored_ts_ns`` is stored yet."""
        known_from = 0 if last_stored_ts_ns is None else last_stored_ts_ns // NS_PER_MS
        clock = _SymbolClock(known_from)
        if last_stored_ts_ns is not None:
            clock.next_offset[known_from] = last_stored_ts_ns % NS_PER_MS + 1
        self._clocks[symbol] = clock

    def is_started(self, symbol: str) -> bool:
        return symbol in self._clocks

    def missing(self, symbol: str, ts_ms: np.ndarray) -> list[int]:
        """Milliseconds of ``ts_ms`` whose stored offsets are unknown (look them up)."""
        clock = self._clocks[symbol]
        old = ts_ms[ts_ms < clock.known_from_ms]
        if old.size == 0:
            return []
        return [int(ms) for ms in np.unique(old) if int(ms) not in clock.next_offset]

    def seed(self, symbol: str, ms: int, last_stored_ts_ns: int | None) -> None:
        """Record the store's answer for an old millisecond."""
        clock = self._clocks[symbol]
        clock.next_offset[ms] = 0 if last_stored_ts_ns is None else last_stored_ts_ns % NS_PER_MS + 1

    def allocate(self, symbol: str, ts_ms: np.ndarray) -> np.ndarray:
        """``ts_ns`` for each trade, in arrival order. Call :meth:`missing`/:meth:`seed` first."""
        clock = self._clocks[symbol]
        n = ts_ms.shape[0]
        if n == 0:
            return np.empty(0, dtype=np.int64)
        # Rank of each trade among the trades of the same millisecond in this batch.
        order = np.argsort(ts_ms, kind="stable")
        sorted_ms = ts_ms[order]
        heads = np.flatnonzero(np.r_[True, sorted_ms[1:] != sorted_ms[:-1]])
        group_sizes = np.diff(np.r_[heads, n])
        rank_sorted = np.arange(n) - np.repeat(heads, group_sizes)
        base = np.empty(heads.shape[0], dtype=np.int64)
        offsets = clock.next_offset
        for i, (ms, count) in enumerate(zip(sorted_ms[heads].tolist(), group_sizes.tolist())):
            first = offsets.get(ms, 0)
            if first + count > NS_PER_MS:
                raise OverflowError(f"more than {NS_PER_MS} trades of {symbol} in millisecond {ms}")
            base[i] = first
            offsets[ms] = first + count
        rank = np.empty(n, dtype=np.int64)
        rank[order] = rank_sorted + np.repeat(base, group_sizes)
        newest = int(sorted_ms[-1])
        if newest > clock.newest_ms:
            clock.newest_ms = newest
        self._forget_old(clock)
        return ts_ms.astype(np.int64) * NS_PER_MS + rank

    def _forget_old(self, clock: _SymbolClock) -> None:
        cutoff = clock.newest_ms - self.window_ms
        # Prune in steps of half a window, not every batch: pruning copies the dict.
        if len(clock.next_offset) <= self.max_entries and cutoff <= clock.known_from_ms + self.window_ms // 2:
            return
        if len(clock.next_offset) > self.max_entries:
            # Too many distinct milliseconds inside the window: keep the newest half.
            cutoff = max(cutoff, sorted(clock.next_offset)[len(clock.next_offset) // 2])
        clock.next_offset = {ms: k for ms, k in clock.next_offset.items() if ms >= cutoff}
        clock.known_from_ms = max(clock.known_from_ms, cutoff)
