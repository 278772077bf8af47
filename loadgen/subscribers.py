"""WebSocket subscribers: many connections, many subscriptions, one event loop.

Subscriptions are spread round-robin over symbols × resolutions and packed
``subs_per_conn`` to a connection (1 = one chart per connection, as browsers do).
Connections are opened ``connect_concurrency`` at a time. Each bar message is decoded
into a two-field struct (bucket start and high: all the marker logic needs), counted, and
checked against the markers of its symbol. A connection the server closes while the run
is on counts as *cut off*, with its close code.
"""

from __future__ import annotations

import asyncio
import collections
import time
from array import array
from itertools import cycle

import msgspec
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from loadgen.markers import MarkerBook, MarkerCursor
from service.core.resolution import Resolution, parse_resolution


class _BarLite(msgspec.Struct):
    time: int
    high: float


class _BarMsg(msgspec.Struct, tag_field="type", tag="bar"):
    id: str
    bar: _BarLite
    closed: bool


class _Reset(msgspec.Struct, tag_field="type", tag="reset"):
    id: str


class _TopicBarMsg(msgspec.Struct, tag_field="type", tag="bar"):
    topic: str
    bar: _BarLite
    closed: bool


class _TopicReset(msgspec.Struct, tag_field="type", tag="reset"):
    topic: str


class _Subscribed(msgspec.Struct, tag_field="type", tag="subscribed"):
    id: str
    topic: str


class _Status(msgspec.Struct, tag_field="type", tag="status"):
    live: bool
    reason: str | None = None


class _ErrBody(msgspec.Struct):
    code: str
    message: str = ""


class _Err(msgspec.Struct, tag_field="type", tag="error"):
    error: _ErrBody
    id: str | None = None


class _Pong(msgspec.Struct, tag_field="type", tag="pong"):
    pass


_decode = msgspec.json.Decoder(_BarMsg | _Reset | _Err | _Pong).decode
_decode_v2 = msgspec.json.Decoder(_TopicBarMsg | _TopicReset | _Subscribed | _Status | _Err | _Pong).decode
_encode = msgspec.json.Encoder().encode


class Sub:
    __slots__ = ("id", "symbol", "resolution", "cursor", "frames", "last", "max_gap", "window_frames")

    def __init__(self, sub_id: str, symbol: str, resolution: Resolution, book: MarkerBook | None) -> None:
        self.id = sub_id
        self.symbol = symbol
        self.resolution = resolution
        self.cursor = MarkerCursor(book, resolution) if book is not None else None
        self.frames = 0
        self.window_frames = 0
        self.last = 0.0
        self.max_gap = 0.0


class SubscribeStats:
    def __init__(self) -> None:
        self.connections_wanted = 0
        self.connections_open = 0
        self.connect_failures = 0
        self.frames = 0  # bar frames, whole run
        self.window_frames = 0  # bar frames while measuring
        self.resets = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.cut_off = 0
        self.close_codes: collections.Counter[str] = collections.Counter()
        self.latency_ms = array("d")
        self.markers_missed = 0


def spread(symbols: tuple[str, ...], resolutions: tuple[str, ...], n: int) -> list[tuple[str, str]]:
    """``n`` (symbol, resolution) pairs, cycling through all combinations."""
    combos = [(s, r) for r in resolutions for s in symbols]
    it = cycle(combos)
    return [next(it) for _ in range(n)]


class SubscriberPool:
    def __init__(
        self,
        base_ws: str,
        pairs: list[tuple[str, str]],
        *,
        subs_per_conn: int = 1,
        books: dict[str, MarkerBook] | None = None,
        connect_concurrency: int = 100,
        deflate: bool = False,
        protocol: int = 2,
    ) -> None:
        self.base_ws = base_ws
        self.protocol = protocol
        self.books = books or {}
        self.subs_per_conn = max(1, subs_per_conn)
        self.connect_concurrency = connect_concurrency
        self.deflate = deflate
        self.stats = SubscribeStats()
        self.window = (float("inf"), float("inf"))  # perf_counter bounds of the measurement
        self.measuring = False
        self.subs: list[Sub] = []
        for i, (symbol, res_text) in enumerate(pairs):
            res = parse_resolution(res_text)
            self.subs.append(Sub(f"s{i}", symbol, res, self.books.get(symbol)))
        self.groups = [self.subs[i : i + self.subs_per_conn] for i in range(0, len(self.subs), self.subs_per_conn)]
        self.stats.connections_wanted = len(self.groups)
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = 0
        self._all_ready = asyncio.Event()

    async def start(self, timeout_s: float = 120.0) -> None:
        """Open every connection and send its subscriptions (returns when all are done or
        failed, or after ``timeout_s``)."""
        if not self.groups:
            return
        gate = asyncio.Semaphore(self.connect_concurrency)
        self._tasks = [
            asyncio.create_task(self._run(group, gate), name=f"sub-{i}") for i, group in enumerate(self.groups)
        ]
        try:
            await asyncio.wait_for(self._all_ready.wait(), timeout_s)
        except TimeoutError:
            pass

    def _mark_ready(self) -> None:
        self._ready += 1
        if self._ready >= len(self.groups):
            self._all_ready.set()

    def begin_window(self, start: float) -> None:
        for sub in self.subs:
            sub.window_frames = 0
            sub.last = start
            sub.max_gap = 0.0
        self.window = (start, float("inf"))
        self.measuring = True

    def end_window(self, end: float) -> None:
        self.measuring = False
        self.window = (self.window[0], end)
        for sub in self.subs:  # a subscriber silent until the end has a gap up to the end
            sub.max_gap = max(sub.max_gap, end - sub.last)

    async def close(self) -> None:
        self.stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, group: list[Sub], gate: asyncio.Semaphore) -> None:
        stats = self.stats
        by_id = {sub.id: sub for sub in group}
        ws = None
        marked = False
        try:
            async with gate:
                try:
                    ws = await connect(
                        self.base_ws + ("/ws?v=2" if self.protocol == 2 else "/ws"),
                        compression="deflate" if self.deflate else None,
                        max_size=None,
                        proxy=None,
                        ping_interval=None,
                        open_timeout=60,
                        max_queue=None,
                    )
                except (TimeoutError, OSError, InvalidHandshake, InvalidStatus) as exc:
                    stats.connect_failures += 1
                    stats.errors[f"connect: {type(exc).__name__}"] += 1
                    return
                stats.connections_open += 1
                for sub in group:
                    await ws.send(
                        _encode(
                            {"op": "subscribe", "id": sub.id, "symbol": sub.symbol, "resolution": sub.resolution.text}
                        ).decode()
                    )
            self._mark_ready()
            marked = True
            if self.protocol == 2:
                await self._read_v2(ws, group)
            else:
                await self._read(ws, by_id)
        except ConnectionClosed as exc:
            if not self.stop.is_set():
                stats.cut_off += 1
                code = exc.rcvd.code if exc.rcvd else "none"
                stats.close_codes[str(code)] += 1
        finally:
            if not marked:
                self._mark_ready()
            if ws is not None:
                stats.connections_open -= 1
                await ws.close()

    async def _read(self, ws, by_id: dict[str, Sub]) -> None:  # type: ignore[no-untyped-def]
        stats = self.stats
        perf = time.perf_counter
        samples = stats.latency_ms
        async for message in ws:
            now = perf()
            msg = _decode(message)
            if type(msg) is _BarMsg:
                sub = by_id.get(msg.id)
                if sub is None:
                    continue
                stats.frames += 1
                sub.frames += 1
                if self.measuring:
                    stats.window_frames += 1
                    sub.window_frames += 1
                    gap = now - sub.last
                    if gap > sub.max_gap:
                        sub.max_gap = gap
                    sub.last = now
                if sub.cursor is not None:
                    stats.markers_missed += sub.cursor.observe(msg.bar.time, msg.bar.high, now, self.window, samples)
            elif type(msg) is _Reset:
                stats.resets += 1
            elif type(msg) is _Err:
                stats.errors[msg.error.code] += 1

    async def _read_v2(self, ws, group: list[Sub]) -> None:  # type: ignore[no-untyped-def]
        """Protocol v2: frames name the topic; each goes to every subscription of it."""
        stats = self.stats
        perf = time.perf_counter
        samples = stats.latency_ms
        by_topic: dict[str, list[Sub]] = {}
        for sub in group:
            by_topic.setdefault(f"{sub.symbol}@{sub.resolution.text}", []).append(sub)
        async for message in ws:
            now = perf()
            msg = _decode_v2(message)
            if type(msg) is _TopicBarMsg:
                for sub in by_topic.get(msg.topic, ()):
                    stats.frames += 1
                    sub.frames += 1
                    if self.measuring:
                        stats.window_frames += 1
                        sub.window_frames += 1
                        gap = now - sub.last
                        if gap > sub.max_gap:
                            sub.max_gap = gap
                        sub.last = now
                    if sub.cursor is not None:
                        stats.markers_missed += sub.cursor.observe(
                            msg.bar.time, msg.bar.high, now, self.window, samples
                        )
            elif type(msg) is _TopicReset:
                stats.resets += 1
            elif type(msg) is _Err:
                stats.errors[msg.error.code] += 1
