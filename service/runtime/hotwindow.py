"""The hot window: the newest bars of every (symbol, tier) that charts ask for, in memory,
equal to what the store would answer.

Per symbol it keeps, for each tier a chart has asked for, a ring of that tier's newest
bars (at most ``max_bars``) holding exactly the stored trades before a cut ``cut_ms``,
plus a *tail*: the stored trades from ``cut_ms`` on, pre-aggregated into one partial bar
per second (so the tail is a handful of objects however fast trades arrive). A request
``[from, to)`` (or ``countback`` before ``to``) at the live edge is then answered from
memory: ring bars re-aggregated to the requested resolution, merged with the tail's
seconds before ``to`` (``to`` is whole epoch seconds on the wire, so a tail second is
either wholly in or wholly out) — and :class:`~service.runtime.history.History` merges
the writer's pending trades on top, as it does for store answers.

Kept current without reading the store:

* the writer calls :meth:`HotWindow.stored` with every batch it appended, under its
  visibility lock, so no reader sees the store ahead of the window. Trades at or after
  the cut go into the tail; the cut then advances to ``keep_ms`` before the newest trade
  and the tail seconds it passes are folded into every ring of the symbol;
* a trade before the cut (late: its bar may be inside a ring), a downsampling run that
  rebuilt closed windows (:meth:`changed`), a deleted trade, or a store write the window
  did not see (the writer's committed sequence moved without it) drops the symbol's
  state (or all of it); the next request reloads it from the store, under the visibility
  lock: per tier, the whole bars before the cut's bar boundary, and the bar straddling the
  cut built from finer whole bars ending exactly at the cut (see :meth:`HotWindow._ring`).

Downsampling runs need no update, whoever schedules them (the service's downsampler or
InfluxDB's tasks): history composes tiers exactly whatever the watermarks
(:mod:`service.storage.base`), and a load never reads a stored row that straddles the
cut, so a run changes no answer — except the late-data recomputations, which arrive as
``changed`` windows (and the late trade that caused them already dropped the symbol).

Second resolutions, which no stored tier serves, get a ring of 1-second bars of their own
(:data:`SECONDS_RING`, read from raw trades like the tail). What it does not serve (the store
answers): a second resolution whose ``countback`` spans more than ``max_bars`` seconds, requests whose
range starts before a ring's first bar, and ``to`` before the cut (scroll-back pages).

Memory: ``max_bars`` bars per (symbol, tier) asked for (~220 bytes each as Python
objects; 2,500 bars × 6 tiers ≈ 3.3 MB per symbol), plus ``keep_ms / 1000`` tail seconds
per symbol.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence

from service.core.bars import PartialBar, fold
from service.core.models import Bar, TradeColumns
from service.core.plan import Plan, Tier
from service.core.resolution import DAY_MS, MINUTE_MS, SECOND_MS, Resolution, Unit, parse_resolution
from service.core.timestamps import NS_PER_MS
from service.storage.base import Store

FAR_FUTURE_MS = 7_258_118_400_000  # 2200-01-01: past any trade, and still int64 nanoseconds (InfluxDB)
FAR_FUTURE_NS = FAR_FUTURE_MS * NS_PER_MS
_SECOND = parse_resolution("1S")
# not a stored tier: the ring of 1-second bars that answers second resolutions
SECONDS_RING = Tier(name="1s (memory)", size_ms=SECOND_MS, source="trades", chunk_ms=SECOND_MS)
log = logging.getLogger(__name__)


def tier_resolution(tier: Tier) -> Resolution:
    """The resolution whose bars are exactly ``tier``'s."""
    if tier.size_ms % DAY_MS == 0:
        return Resolution(Unit.DAY, tier.size_ms // DAY_MS)
    if tier.size_ms % MINUTE_MS == 0:
        return Resolution(Unit.MINUTE, tier.size_ms // MINUTE_MS)
    return Resolution(Unit.SECOND, tier.size_ms // SECOND_MS)


class _Ring:
    """Bars of one tier, ascending; every bar starting at or after ``lo_ms`` is here
    (``lo_ms == 0``: the whole history)."""

    __slots__ = ("bars", "lo_ms", "res", "times")

    def __init__(self, res: Resolution, bars: list[Bar], lo_ms: int) -> None:
        self.res = res
        self.bars = bars
        self.times = [b.time for b in bars]
        self.lo_ms = lo_ms

    def add(self, p: PartialBar, max_bars: int) -> None:
        """Fold a partial bar of trades all later than the ring's (a tail second)."""
        start = self.res.bucket_start_ms(p.start_ms)
        if self.bars and self.times[-1] == start:
            b = self.bars[-1]
            self.bars[-1] = Bar(start, b.open, max(b.high, p.high), min(b.low, p.low), p.close, b.volume + p.volume)
        else:
            self.bars.append(Bar(start, p.open, p.high, p.low, p.close, p.volume))
            self.times.append(start)
            if len(self.bars) > max_bars + max_bars // 4:  # trim in steps, not per bar
                drop = len(self.bars) - max_bars
                del self.bars[:drop], self.times[:drop]
                self.lo_ms = self.times[0]


class _SymbolState:
    __slots__ = ("cut_ms", "loaded_ns", "rings", "tail")

    def __init__(self, cut_ms: int, loaded_ns: int) -> None:
        self.cut_ms = cut_ms  # rings hold exactly the stored trades with ts < cut_ms
        # the newest stored trade when loaded: the tail's seconds from the store do not know
        # their trades' order, so a trade before this one must reload
        self.loaded_ns = loaded_ns
        self.rings: dict[str, _Ring] = {}
        self.tail: dict[int, PartialBar] = {}  # second start → stored trades ≥ cut_ms in it


class HotWindow:
    def __init__(self, plan: Plan, *, max_bars: int, keep_ms: int = 10_000) -> None:
        self.plan = plan
        self.max_bars = max_bars
        self.keep_ms = keep_ms // 1000 * 1000
        self._symbols: dict[str, _SymbolState] = {}
        self.seen_seq: int | None = None  # the writer's committed sequence the window has seen
        self.hits = 0
        self.misses = 0
        self.loads = 0
        self.invalidations = 0

    # --- what it serves -------------------------------------------------------------

    def tier_for(self, resolution: Resolution) -> Tier | None:
        """The tier whose ring answers ``resolution``: the plan's serving tier, or for second
        resolutions (which no stored tier serves) a ring of 1-second bars read from raw trades,
        so second charts open from memory too (a read of the newest raw trades is the slowest
        read of all on InfluxDB: they are still in its write cache)."""
        tier = self.plan.serving_tier(resolution)
        if tier is None and resolution.is_multiple_of(SECOND_MS):
            return SECONDS_RING
        return tier

    def loaded(self, symbol: str, tier: Tier) -> bool:
        state = self._symbols.get(symbol)
        return state is not None and tier.name in state.rings

    def answer(
        self, symbol: str, resolution: Resolution, from_ms: int, to_ms: int, countback: int | None
    ) -> tuple[list[Bar], list[PartialBar]] | None:
        """Stored bars of ``resolution`` (unrounded) and partial bars of stored trades not
        yet in them, together exactly the store's answer; ``None`` when the window cannot
        say (the caller asks the store). ``countback``: the newest ``countback`` bars
        before ``to_ms`` (``from_ms`` ignored), possibly more, never fewer unless that is
        all there is."""
        tier = self.tier_for(resolution)
        state = self._symbols.get(symbol)
        ring = None if tier is None or state is None else state.rings.get(tier.name)
        if ring is None or state is None or to_ms < state.cut_ms:
            self.misses += 1
            return None
        tail: list[PartialBar] = []
        to_ns = to_ms * NS_PER_MS
        for start, p in state.tail.items():
            if start + 1000 <= to_ms or (p.last_ns is not None and p.last_ns < to_ns):
                tail.append(p)
            elif start < to_ms:  # a second straddling an unaligned ``to``
                self.misses += 1
                return None
        # first bucket of ``resolution`` wholly inside the ring
        lo = resolution.bucket_start_ms(ring.lo_ms)
        if lo < ring.lo_ms:
            lo = resolution.next_start_ms(lo)
        bars: list[Bar] | None
        if countback is None:
            if from_ms < lo:
                self.misses += 1
                return None
            bars = _regroup(ring, resolution, bisect.bisect_left(ring.times, from_ms))
        else:
            bars = _last_buckets(ring, resolution, countback, lo)
            if bars is None:
                self.misses += 1
                return None
            from_ms = bars[0].time if len(bars) >= countback else 0
        partials = []
        for p in tail:
            if p.start_ms >= from_ms:
                q = p.copy()
                q.start_ms = resolution.bucket_start_ms(p.start_ms)
                partials.append(q)
        self.hits += 1
        return bars, partials

    # --- keeping it current ---------------------------------------------------------

    async def load(self, store: Store, symbol: str, tier: Tier) -> None:
        """Read ``tier``'s newest bars of ``symbol`` from the store. Call under the writer's
        visibility lock (read side), so no append lands between the reads.

        No watermark matters here (see :meth:`_ring`): the reads are exact whatever the
        downsampling has done, on whichever schedule."""
        state = self._symbols.get(symbol)
        if state is None:
            state = await self._new_state(store, symbol)
            self._symbols[symbol] = state
        state.rings[tier.name] = await self._ring(store, symbol, tier_resolution(tier), state.cut_ms)
        self.loads += 1

    async def _ring(self, store: Store, symbol: str, res: Resolution, cut_ms: int) -> _Ring:
        """The ring of ``res`` holding exactly the stored trades before ``cut_ms``.

        A store answers a bar as the whole stored row (or the rows below it), so a read up to
        ``cut_ms`` would return the bar straddling the cut with trades after the cut in it,
        which the tail holds too. The read therefore stops at the bar boundary before the cut
        and the straddling bar is built from finer bars that end exactly at the cut: first-tier
        bars up to the cut's first-tier boundary, then 1-second bars. Every one of those reads
        is a whole-bar read of exact history, so neither the tasks' schedule nor a run that
        commits meanwhile can change it (watermarks only decide which rows the store reads)."""
        aligned_ms = res.bucket_start_ms(cut_ms)
        bars = await store.bars_before(symbol, res, aligned_ms, self.max_bars)
        lo_ms = bars[0].time if len(bars) >= self.max_bars else 0
        if aligned_ms < cut_ms:
            first = tier_resolution(self.plan.tiers[0])
            mid_ms = max(aligned_ms, first.bucket_start_ms(cut_ms))
            finer = [
                *await store.bars(symbol, first, aligned_ms, mid_ms),
                *await store.bars(symbol, _SECOND, mid_ms, cut_ms),
            ]
            if finer:
                bars.append(_fold_bars(aligned_ms, finer))
        return _Ring(res, bars, lo_ms)

    async def _new_state(self, store: Store, symbol: str) -> _SymbolState:
        first = tier_resolution(self.plan.tiers[0])
        newest = await store.bars_before(symbol, first, FAR_FUTURE_MS, 1)
        last_ns = None if not newest else await store.last_ts_ns(symbol, newest[-1].time * NS_PER_MS, FAR_FUTURE_NS)
        if last_ns is None:  # no raw trade behind the newest bar (none at all, or removed)
            return _SymbolState(first.next_start_ms(newest[-1].time) if newest else 0, -1)
        # cut at the newest trade's first-tier bar: the trades from there become the tail
        # (1-second bars read from raw trades), so the rings start from whole first-tier bars
        # and a trade arriving later in the same second is not taken for a late one
        state = _SymbolState(first.bucket_start_ms(last_ns // NS_PER_MS), last_ns)
        for b in await store.bars(symbol, _SECOND, state.cut_ms, FAR_FUTURE_MS):
            # bounds of its trades' times, enough to order it against any later trade
            # (older ones reload the symbol, see ``loaded_ns``)
            state.tail[b.time] = PartialBar(
                b.time,
                b.open,
                b.high,
                b.low,
                b.close,
                b.volume,
                1,
                b.time * NS_PER_MS,
                min(last_ns, (b.time + 1000) * NS_PER_MS - 1),
            )
        return state

    def stored(self, batches: Sequence[TradeColumns], committed_seq: int) -> None:
        """The writer appended ``batches`` (its submissions up to ``committed_seq``). Never
        raises into the writer: on any surprise the window is dropped and reloads."""
        try:
            self._stored(batches)
        except Exception:  # noqa: BLE001 - a cache must not break the writer
            log.exception("hot window: dropped after an error while adding stored trades")
            self._symbols.clear()
        self.seen_seq = committed_seq

    def _stored(self, batches: Sequence[TradeColumns]) -> None:
        for batch in batches:
            state = self._symbols.get(batch.symbol)
            if state is None or not len(batch):
                continue
            ts = batch.ts_ns
            if int(ts.min()) < state.cut_ms * NS_PER_MS or int(ts.min()) <= state.loaded_ns:
                self.invalidate(batch.symbol)  # late: a ring bar (or a loaded tail second) may change
                continue
            for p in fold(_SECOND, ts, batch.price, batch.size):
                have = state.tail.get(p.start_ms)
                if have is None:
                    state.tail[p.start_ms] = p
                else:
                    have.merge(p)
            self._advance(state, int(ts.max()) // NS_PER_MS // 1000 * 1000 - self.keep_ms)

    def _advance(self, state: _SymbolState, cut_ms: int) -> None:
        if cut_ms <= state.cut_ms:
            return
        done = sorted(s for s in state.tail if s + 1000 <= cut_ms)
        for start in done:
            p = state.tail.pop(start)
            for ring in state.rings.values():
                ring.add(p, self.max_bars)
        state.cut_ms = cut_ms

    def check_seq(self, committed_seq: int) -> None:
        """Drop everything if the store took writes the window did not see."""
        if self.seen_seq != committed_seq:
            if self._symbols:
                self.invalidations += 1
            self._symbols.clear()
            self.seen_seq = committed_seq

    def invalidate(self, symbol: str) -> None:
        if self._symbols.pop(symbol, None) is not None:
            self.invalidations += 1

    def clear(self) -> None:
        if self._symbols:
            self.invalidations += 1
        self._symbols.clear()

    def size(self) -> int:
        """Bars held, all rings together (for /metrics and the memory bound)."""
        return sum(len(r.bars) for s in self._symbols.values() for r in s.rings.values())


def _fold_bars(start_ms: int, bars: Sequence[Bar]) -> Bar:
    """One bar starting at ``start_ms`` of ``bars`` (ascending, all inside it)."""
    volume = 0.0
    for b in bars:
        volume += b.volume
    return Bar(start_ms, bars[0].open, max(b.high for b in bars), min(b.low for b in bars), bars[-1].close, volume)


def _regroup(ring: _Ring, resolution: Resolution, first: int) -> list[Bar]:
    """Ring bars from index ``first`` on, aggregated to ``resolution``."""
    bars = ring.bars
    if resolution == ring.res:
        return bars[first:]
    out: list[Bar] = []
    cur: list[float] | None = None
    cur_start = -1
    for b in bars[first:]:
        start = resolution.bucket_start_ms(b.time)
        if start != cur_start:
            if cur is not None:
                out.append(Bar(cur_start, cur[0], cur[1], cur[2], cur[3], cur[4]))
            cur, cur_start = [b.open, b.high, b.low, b.close, b.volume], start
        else:
            assert cur is not None
            if b.high > cur[1]:
                cur[1] = b.high
            if b.low < cur[2]:
                cur[2] = b.low
            cur[3] = b.close
            cur[4] += b.volume
    if cur is not None:
        out.append(Bar(cur_start, cur[0], cur[1], cur[2], cur[3], cur[4]))
    return out


def _last_buckets(ring: _Ring, resolution: Resolution, count: int, lo: int) -> list[Bar] | None:
    """The newest ``count`` buckets of ``resolution`` from the ring (all of them when the
    ring is the whole history), or ``None`` when the ring holds too few."""
    times = ring.times
    if resolution == ring.res:
        first = max(0, len(times) - count)
    else:
        # walk back over bucket starts until ``count`` buckets are found
        seen = 0
        first = len(times)
        last_start = None
        while first > 0:
            start = resolution.bucket_start_ms(times[first - 1])
            if start != last_start:
                if seen == count:
                    break
                seen += 1
                last_start = start
            first -= 1
    bars = _regroup(ring, resolution, first)
    bars = [b for b in bars if b.time >= lo] if ring.lo_ms else bars
    if len(bars) < count and ring.lo_ms:
        return None
    return bars
