"""Live bars and their fan-out to subscribers.

One :class:`~service.core.bars.LiveSeries` per subscribed (symbol, resolution), started from
history so its first push is already right. Trades reach it from the ingest path in the
same event-loop step that queues them for the store; a series being initialised buffers
them and, once history arrives, applies exactly those the history snapshot did not
include (by the writer's sequence number) — no gap, no double count.

Delivery is coalesced per subscription: the open bar is a single slot (latest wins),
closed bars queue (never dropped) up to ``queue_max``; a subscriber whose queue
overflows or whose socket stops draining is cut off, and nobody else waits for it.
There is no backpressure towards ingest by design: slow readers lose their connection,
not other clients' data.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

import msgspec

from service.core.bars import LiveSeries, PartialBar, fold
from service.core.errors import StoreUnavailable
from service.core.models import Bar, BarMessage, ResetMessage, TradeColumns
from service.core.resolution import Resolution

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode


class Subscription:
    __slots__ = ("id", "key", "client", "current", "closed", "reset", "last_time")

    def __init__(self, sub_id: str, key: tuple[str, Resolution], client: Client) -> None:
        self.id = sub_id
        self.key = key
        self.client = client
        self.current: Bar | None = None
        self.closed: deque[Bar] = deque()
        self.reset = False
        self.last_time = -1  # start of the newest bar sent: never send an older one


class Client:
    """One connection's outbox (WebSocket or SSE)."""

    def __init__(self, queue_max: int, name: str = "") -> None:
        self.queue_max = queue_max
        self.name = name
        self.subs: dict[str, Subscription] = {}
        self._dirty: dict[Subscription, None] = {}
        self.wake = asyncio.Event()
        self.cut_reason: str | None = None
        self.coalesced = 0  # open-bar updates replaced by a newer one before being sent
        self.dropped = 0  # updates never sent: stale, or offered after the cut-off
        self._control: deque[bytes] = deque()  # pongs and errors, sent before bars

    def offer_control(self, frame: bytes) -> None:
        self._control.append(frame)
        if len(self._control) > self.queue_max:
            self.cut(f"more than {self.queue_max} replies waiting")
        self.wake.set()

    def offer_bar(self, sub: Subscription, bar: Bar, closed: bool) -> None:
        if self.cut_reason is not None:
            self.dropped += 1
            return
        if closed:
            if sub.current is not None and sub.current.time <= bar.time:
                sub.current = None
            sub.closed.append(bar)
            if len(sub.closed) > self.queue_max:
                self.cut(f"subscriber too slow: more than {self.queue_max} closed bars waiting")
                return
        else:
            if sub.current is not None:
                self.coalesced += 1
            sub.current = bar
        self._dirty[sub] = None
        self.wake.set()

    def offer_reset(self, sub: Subscription) -> None:
        sub.reset = True
        self._dirty[sub] = None
        self.wake.set()

    def cut(self, reason: str) -> None:
        if self.cut_reason is None:
            self.cut_reason = reason
            self.wake.set()

    def take(self) -> list[bytes]:
        """Encoded messages ready to send, oldest first per subscription."""
        frames: list[bytes] = list(self._control)
        self._control.clear()
        dirty, self._dirty = self._dirty, {}
        for sub in dirty:
            if sub.id not in self.subs:
                continue
            if sub.reset:
                sub.reset = False
                frames.append(_encode(ResetMessage(sub.id)))
            while sub.closed:
                bar = sub.closed.popleft()
                if bar.time >= sub.last_time:
                    sub.last_time = bar.time
                    frames.append(_encode(BarMessage(sub.id, bar, True)))
                else:
                    self.dropped += 1
            if sub.current is not None:
                bar, sub.current = sub.current, None
                if bar.time >= sub.last_time:
                    sub.last_time = bar.time
                    frames.append(_encode(BarMessage(sub.id, bar, False)))
                else:
                    self.dropped += 1
        return frames


class _Series:
    __slots__ = ("live", "subs", "buffer", "ready")

    def __init__(self) -> None:
        self.live: LiveSeries | None = None
        self.subs: set[Subscription] = set()
        self.buffer: list[tuple[int, TradeColumns]] | None = []  # trades seen while initialising
        self.ready = asyncio.Event()


# (symbol, resolution, from_ms, to_ms) -> (bars, writer seq of the snapshot)
HistoryFn = Callable[[str, Resolution, int, int], Awaitable[tuple[list[Bar], int]]]


class Hub:
    def __init__(self, history: HistoryFn, clock_ms: Callable[[], int]) -> None:
        self._history = history
        self._clock_ms = clock_ms
        self._series: dict[tuple[str, Resolution], _Series] = {}
        self._by_symbol: dict[str, set[tuple[str, Resolution]]] = {}
        self.clients: set[Client] = set()
        self.frames_sent = 0
        self.clients_cut = 0
        # totals of clients already gone; the live ones are added at scrape time
        self._coalesced_gone = 0
        self._dropped_gone = 0

    @property
    def updates_coalesced(self) -> int:
        return self._coalesced_gone + sum(c.coalesced for c in self.clients)

    @property
    def updates_dropped(self) -> int:
        return self._dropped_gone + sum(c.dropped for c in self.clients)

    @property
    def subscription_count(self) -> int:
        return sum(len(s.subs) for s in self._series.values())

    async def subscribe(self, client: Client, sub_id: str, symbol: str, resolution: Resolution) -> Subscription:
        key = (symbol, resolution)
        if sub_id in client.subs:
            self.unsubscribe(client, sub_id)
        sub = Subscription(sub_id, key, client)
        client.subs[sub_id] = sub
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
            self._by_symbol.setdefault(symbol, set()).add(key)
            try:
                await self._initialise(key, series)
            except BaseException:
                self._drop_series(key)
                client.subs.pop(sub_id, None)
                series.ready.set()  # wake other subscribers waiting on this series
                raise
        else:
            await series.ready.wait()
            if series.live is None:
                client.subs.pop(sub_id, None)
                raise StoreUnavailable(f"could not load the current {resolution.text} bar of {symbol}")
        if client.subs.get(sub_id) is not sub:  # unsubscribed while we waited
            return sub
        series.subs.add(sub)
        if series.live is not None and series.live.current is not None:
            client.offer_bar(sub, series.live.current.to_bar(), False)
        return sub

    async def _initialise(self, key: tuple[str, Resolution], series: _Series) -> None:
        symbol, resolution = key
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

    def unsubscribe(self, client: Client, sub_id: str) -> bool:
        sub = client.subs.pop(sub_id, None)
        if sub is None:
            return False
        series = self._series.get(sub.key)
        if series is not None:
            series.subs.discard(sub)
            if not series.subs and series.ready.is_set():
                self._drop_series(sub.key)
        return True

    def _drop_series(self, key: tuple[str, Resolution]) -> None:
        self._series.pop(key, None)
        keys = self._by_symbol.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_symbol[key[0]]

    def register(self, client: Client) -> None:
        self.clients.add(client)

    def unregister(self, client: Client) -> None:
        if client.cut_reason is not None:
            # what was still queued for a cut-off client is never sent
            client.dropped += sum(len(s.closed) + (s.current is not None) for s in client.subs.values())
        for sub_id in list(client.subs):
            self.unsubscribe(client, sub_id)
        if client in self.clients:
            self.clients.discard(client)
            self._coalesced_gone += client.coalesced
            self._dropped_gone += client.dropped
        if client.cut_reason is not None:
            self.clients_cut += 1

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
                if not update.closed and not update.late and update.current is not None:
                    # The hot path: a new open bar. A subscription still holding an unsent
                    # open bar is already dirty and its client awake, so replacing the bar
                    # is all offer_bar would do (and cut-off clients take the full path).
                    current = update.current
                    for sub in series.subs:
                        client = sub.client
                        if sub.current is not None and client.cut_reason is None:
                            sub.current = current
                            client.coalesced += 1
                        else:
                            client.offer_bar(sub, current, False)
                    continue
                for sub in list(series.subs):
                    for bar in update.closed:
                        sub.client.offer_bar(sub, bar, True)
                    if update.current is not None:
                        sub.client.offer_bar(sub, update.current, False)
                    if update.late:
                        sub.client.offer_reset(sub)

    def tick(self, now_ms: int) -> None:
        """Close bars whose time is over, whether or not a trade came."""
        for series in self._series.values():
            if series.live is None:
                continue
            closed = series.live.advance(now_ms)
            if closed is not None:
                for sub in list(series.subs):
                    sub.client.offer_bar(sub, closed, True)

    async def rebuild_symbol(self, symbol: str) -> None:
        """Stored trades of ``symbol`` were deleted (a correction): rebuild each live series
        of it from history (trades arriving meanwhile are buffered and applied after, as at
        subscribe time), then send every subscriber a ``reset`` and the corrected bar."""
        for key in list(self._by_symbol.get(symbol, ())):
            series = self._series.get(key)
            if series is None or series.live is None:
                continue  # still initialising: it reads the corrected history anyway
            series.buffer = []
            try:
                await self._initialise(key, series)
            except BaseException:
                buffered, series.buffer = series.buffer or [], None  # keep the old bar, and what came
                for _, batch in buffered:
                    series.live.apply(fold(key[1], batch.ts_ns, batch.price, batch.size))
                raise
            for sub in list(series.subs):
                sub.client.offer_reset(sub)
                if series.live is not None and series.live.current is not None:
                    sub.client.offer_bar(sub, series.live.current.to_bar(), False)

    def reset_symbol(self, symbol: str) -> None:
        """Closed history of ``symbol`` changed: every subscriber refetches."""
        for key in self._by_symbol.get(symbol, ()):
            for sub in list(self._series[key].subs):
                sub.client.offer_reset(sub)
