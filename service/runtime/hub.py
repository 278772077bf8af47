"""Live bars: one :class:`~service.core.bars.LiveSeries` per subscribed (symbol, resolution),
and their pushes to subscribers.

A series starts from history so its first push is already right. Trades reach it from the
ingest path in the same event-loop step that queues them for the store; a series being
initialised buffers them and, once history arrives, applies exactly those the history
snapshot did not include (by the writer's sequence number) — no gap, no double count.

Coalescing is per series, not per client: the open bar is a single slot (latest wins) and
closed bars queue (never dropped); a series pushes within one push interval of a change
and at most once an interval, on a grid of its own (a random phase of the interval, so
that series do not push in step), and each push is encoded once and
written to every subscriber (:mod:`service.runtime.fanout`). A subscriber that cannot keep
up is cut off there, and nobody else waits for it. There is no backpressure towards
ingest by design: slow readers lose their connection, not other clients' data.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable

import msgspec

from service.core.bars import LiveSeries, PartialBar, fold
from service.core.errors import StoreUnavailable, UnknownSymbol
from service.core.models import Bar, ErrorBody, ErrorMessage, TradeColumns
from service.core.resolution import Resolution
from service.core.ws import FrameKind
from service.runtime.fanout import PROTOCOL_V2, Client, ClientBook, Frames, Subscription, TopicKey, v1_message

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode

__all__ = ["Client", "Hub", "Subscription"]


class _Series:
    __slots__ = (
        "key",
        "live",
        "subs",
        "buffer",
        "ready",
        "closed",
        "current",
        "reset",
        "last_sent_ms",
        "last_push_s",
        "phase_s",
        "scheduled",
        "joining",
        "gone",
    )

    def __init__(self, key: TopicKey) -> None:
        self.key = key
        self.live: LiveSeries | None = None
        self.subs: list[Subscription] = []
        self.buffer: list[tuple[int, TradeColumns]] | None = []  # trades seen while initialising
        self.ready = asyncio.Event()
        # what the next push carries
        self.closed: list[Bar] = []
        self.current: Bar | None = None
        self.reset = False
        self.last_sent_ms = -1  # start of the newest bar pushed: never push an older one
        self.last_push_s = -1e18
        self.phase_s = 0.0  # the series pushes at phase_s + k × interval (monotonic clock)
        self.scheduled = False
        # subscribers that got the open bar at subscribe time: they must not get anything
        # older from the push under way
        self.joining: dict[Subscription, int] = {}
        self.gone: ErrorBody | None = None  # its symbol was removed (see Hub.drop_symbol)


# (symbol, resolution, from_ms, to_ms) -> (bars, writer seq of the snapshot)
HistoryFn = Callable[[str, Resolution, int, int], Awaitable[tuple[list[Bar], int]]]


class Hub(ClientBook):
    def __init__(
        self,
        history: HistoryFn,
        clock_ms: Callable[[], int],
        *,
        push_interval_ms: int = 0,
        clock_s: Callable[[], float] = time.monotonic,
        stagger: Callable[[], float] = random.random,
    ) -> None:
        super().__init__()
        self._history = history
        self._clock_ms = clock_ms
        self._clock_s = clock_s
        self._stagger = stagger
        self.push_interval_s = push_interval_ms / 1000
        self._series: dict[TopicKey, _Series] = {}
        self._by_symbol: dict[str, set[TopicKey]] = {}
        self.updates_coalesced = 0  # open-bar updates replaced by a newer one before a push
        self.pushes = 0  # series pushes (each encoded once)

    @property
    def subscription_count(self) -> int:
        return sum(len(s.subs) for s in self._series.values())

    # --- subscribers ---------------------------------------------------------------------

    async def subscribe(self, client: Client, sub_id: str, symbol: str, resolution: Resolution) -> Subscription:
        """Subscribe, then send the series' open bar to this subscriber alone (after v2's
        ``subscribed``, which the caller sends first)."""
        key = (symbol, resolution)
        if sub_id in client.subs:
            self.unsubscribe(client, sub_id)
        sub = Subscription(sub_id, key, client)
        first_on_topic = client.attach(sub)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(key)
            # Each series pushes on a grid of its own, at a random phase of the interval:
            # series that change together (every resolution of a symbol, every symbol of a
            # feed's batch) would otherwise push together — thousands of writes in one loop
            # step, every client's frames at the same instant, and everything that shares
            # the loop (ingest acks, history) waiting behind them.
            series.phase_s = self._stagger() * self.push_interval_s
            self._by_symbol.setdefault(symbol, set()).add(key)
            try:
                await self._initialise(series)
            except BaseException:
                self._drop_series(key)
                client.detach(sub_id)
                series.ready.set()  # wake other subscribers waiting on this series
                raise
        else:
            await series.ready.wait()
            if series.live is None and series.gone is None:
                client.detach(sub_id)
                raise StoreUnavailable(f"could not load the current {resolution.text} bar of {symbol}")
        if series.gone is not None:  # removed while it was being loaded
            client.detach(sub_id)
            raise UnknownSymbol(series.gone.message)
        if client.subs.get(sub_id) is not sub:  # unsubscribed while we waited
            return sub
        series.subs.append(sub)
        current = series.live.current if series.live is not None else None
        if current is not None and (client.version != PROTOCOL_V2 or first_on_topic):
            bar = current.to_bar()
            frames = Frames(key)
            frames.bar(bar, False)
            if client.version == PROTOCOL_V2:
                client.send(frames.items[0][0])
            else:
                client.send(v1_message(sub, FrameKind.OPEN, frames.items[0][2]))
            if series.scheduled:
                series.joining[sub] = bar.time
        return sub

    def unsubscribe(self, client: Client, sub_id: str) -> bool:
        sub = client.detach(sub_id)
        if sub is None:
            return False
        series = self._series.get(sub.key)
        if series is not None:
            if sub in series.subs:
                series.subs.remove(sub)
            series.joining.pop(sub, None)
            if not series.subs and series.ready.is_set():
                self._drop_series(sub.key)
        return True

    def open_bar(self, key: TopicKey) -> Bar | None:
        """The series' open bar now, if it is live (for a broker that answers a new edge)."""
        series = self._series.get(key)
        current = series.live.current if series is not None and series.live is not None else None
        return current.to_bar() if current is not None else None

    # --- series ----------------------------------------------------------------------------

    async def _initialise(self, series: _Series) -> None:
        symbol, resolution = series.key
        now_ms = self._clock_ms()
        start = resolution.bucket_start_ms(now_ms)
        bars, seq = await self._history(symbol, resolution, start, resolution.next_start_ms(start))
        initial = PartialBar.from_bar(bars[-1]) if bars else None
        live = LiveSeries(resolution, now_ms, initial)
        buffered, series.buffer = series.buffer or [], None
        series.live = live
        for batch_seq, batch in buffered:
            if batch_seq > seq:
                live.apply(fold(resolution, batch.ts_ns, batch.price, batch.size))
        series.ready.set()

    def _drop_series(self, key: TopicKey) -> None:
        self._series.pop(key, None)
        keys = self._by_symbol.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_symbol[key[0]]

    def publish(self, batches: list[TradeColumns], seq: int) -> None:
        """New accepted trades (``seq`` from the writer). Synchronous on purpose: it runs
        in the same event-loop step as the writer's submit."""
        for batch in batches:
            for key in self._by_symbol.get(batch.symbol, ()):
                series = self._series[key]
                if series.buffer is not None:
                    series.buffer.append((seq, batch))
                    continue
                assert series.live is not None
                update = series.live.apply(fold(key[1], batch.ts_ns, batch.price, batch.size))
                if update.closed:
                    series.closed.extend(update.closed)
                    series.current = None
                if update.current is not None:
                    if series.current is not None:
                        self.updates_coalesced += 1
                    series.current = update.current
                if update.late:
                    series.reset = True
                self._schedule(series)

    def tick(self, now_ms: int) -> None:
        """Close bars whose time is over, whether or not a trade came."""
        for series in self._series.values():
            if series.live is None:
                continue
            closed = series.live.advance(now_ms)
            if closed is not None:
                series.closed.append(closed)
                if series.current is not None and series.current.time <= closed.time:
                    series.current = None
                self._schedule(series)

    def _schedule(self, series: _Series) -> None:
        """Push at the series' next grid point at least one interval after its last push
        (so within one interval of any change, at most once an interval)."""
        if series.scheduled:
            return
        series.scheduled = True
        loop = asyncio.get_running_loop()
        interval = self.push_interval_s
        if interval <= 0:
            loop.call_soon(self._push, series)  # after the rest of this step's trades
            return
        now = self._clock_s()
        earliest = max(now, series.last_push_s + interval)
        slots = math.ceil((earliest - series.phase_s) / interval - 1e-6)  # float noise on the grid itself
        at = series.phase_s + slots * interval
        loop.call_later(max(0.0, at - now), self._push, series, at)

    def _push(self, series: _Series, slot_s: float | None = None) -> None:
        series.scheduled = False
        if self._series.get(series.key) is not series:
            return  # dropped meanwhile
        # the grid point, not the (later) time the timer fired: else the next push would
        # miss the next grid point by that lateness and wait a whole interval more
        series.last_push_s = slot_s if slot_s is not None else self._clock_s()
        frames = Frames(series.key)
        for bar in series.closed:
            if bar.time >= series.last_sent_ms:
                series.last_sent_ms = bar.time
                frames.bar(bar, True)
            else:
                self._stale += 1
        series.closed = []
        if series.current is not None:
            bar, series.current = series.current, None
            if bar.time >= series.last_sent_ms:
                series.last_sent_ms = bar.time
                frames.bar(bar, False)
            else:
                self._stale += 1
        if series.reset:
            # Last: a bar of this push may lack the late trades the reset announces (they
            # came after its bucket closed), and the client must refetch after applying it.
            series.reset = False
            frames.reset()
        if not frames.items or not series.subs:
            series.joining.clear()
            return
        self.pushes += 1
        if not series.joining:
            frames.deliver(series.subs)
            return
        # who got the open bar at subscribe time gets nothing older than it from this push
        joining, series.joining = series.joining, {}
        fresh = {sub.client for sub in joining if sub.client.version == PROTOCOL_V2}
        settled = [sub for sub in series.subs if sub not in joining and sub.client not in fresh]
        frames.deliver(settled)
        for sub, since_ms in joining.items():
            frames.since(since_ms).deliver([sub])

    async def rebuild_symbol(self, symbol: str) -> None:
        """Stored trades of ``symbol`` were deleted (a correction): rebuild each live series
        of it from history (trades arriving meanwhile are buffered and applied after, as at
        subscribe time), then send every subscriber the corrected bar and a ``reset``."""
        for key in list(self._by_symbol.get(symbol, ())):
            series = self._series.get(key)
            if series is None or series.live is None:
                continue  # still initialising: it reads the corrected history anyway
            series.buffer = []
            try:
                await self._initialise(series)
            except BaseException:
                buffered, series.buffer = series.buffer or [], None  # keep the old bar, and what came
                for _, batch in buffered:
                    series.live.apply(fold(key[1], batch.ts_ns, batch.price, batch.size))
                raise
            series.reset = True
            series.closed = []
            series.last_sent_ms = -1  # the corrected bar replaces whatever was pushed
            series.current = series.live.current.to_bar() if series.live.current is not None else None
            self._schedule(series)

    def drop_symbol(self, symbol: str, error: ErrorBody) -> int:
        """``symbol`` was removed: every subscription of its series gets ``error`` (with its
        id) and ends; returns how many did."""
        ended = 0
        for key in list(self._by_symbol.get(symbol, ())):
            series = self._series.get(key)
            if series is not None:
                series.gone = error  # a subscriber still waiting for it to load gets the error too
            for sub in list(series.subs if series is not None else ()):
                sub.client.send(_encode(ErrorMessage(error, id=sub.id)))
                self.unsubscribe(sub.client, sub.id)
                ended += 1
            self._drop_series(key)
        return ended

    def reset_symbol(self, symbol: str) -> None:
        """Closed history of ``symbol`` changed: every subscriber refetches."""
        for key in self._by_symbol.get(symbol, ()):
            series = self._series[key]
            series.reset = True
            self._schedule(series)
