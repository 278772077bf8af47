"""Publishing trades at a target rate: ``/ws/ingest`` (pipelined frames, acks) or
``POST /api/trades``.

A shared :class:`Pacer` hands out frame slots at ``rate / frame_trades`` per second to all
connections; a connection sends a frame when it has a slot and fewer than ``window``
frames unacknowledged, so when the server falls behind, the achieved rate drops instead
of a queue growing in the generator. A debt of at most ``max_debt_s`` is caught up after
a stall; beyond that the schedule restarts from now (the report shows the shortfall).

Marker trades (see :mod:`loadgen.markers`) travel on a dedicated connection, a small
frame per tick with one marker per symbol, so the latency they measure is that of a trade
queued behind the bulk load, not of a frame that is itself 10,000 trades long.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import msgspec
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from loadgen.frames import FrameEncoder, TradePool
from loadgen.httpclient import HttpConnection, HttpError
from loadgen.markers import MarkerBook, wall_ms


class _Ack(msgspec.Struct, tag_field="type", tag="ack"):
    seq: int
    accepted: int
    duplicates: int


class _ErrorBody(msgspec.Struct):
    code: str
    message: str = ""


class _Error(msgspec.Struct, tag_field="type", tag="error"):
    error: _ErrorBody
    seq: int | None = None  # the frame it answers, as in acks


_reply = msgspec.json.Decoder(_Ack | _Error)
_accepted = msgspec.json.Decoder(dict[str, Any])


class PublishStats:
    """Counters shared by all publisher connections (one event loop: no locks)."""

    def __init__(self) -> None:
        self.frames_sent = 0
        self.trades_sent = 0
        self.frames_acked = 0
        self.trades_acked = 0
        self.duplicates = 0
        self.frames_refused = 0
        self.trades_refused = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.disconnects = 0
        self.ack_rtt_ms: list[float] = []
        self.rtt_window = (0.0, float("inf"))
        self.connections_open = 0

    def in_flight_trades(self) -> int:
        return self.trades_sent - self.trades_acked - self.trades_refused


class Pacer:
    def __init__(self, frames_per_s: float, *, max_debt_s: float = 1.0) -> None:
        self.interval = 1.0 / frames_per_s
        self.max_debt_s = max_debt_s
        self._next = time.perf_counter()

    async def slot(self) -> None:
        now = time.perf_counter()
        if self._next < now - self.max_debt_s:
            self._next = now
        due = self._next
        self._next += self.interval
        if due > now:
            await asyncio.sleep(due - now)


class Publisher:
    """``connections`` bulk connections plus one marker connection."""

    def __init__(
        self,
        base_ws: str,
        host: str,
        port: int,
        symbols: tuple[str, ...],
        *,
        rate: float,
        connections: int = 2,
        frame_trades: int = 5000,
        window: int = 4,
        fmt: str = "msgpack",
        transport: str = "ws",
        marker_hz: float = 20.0,
        marker_books: dict[str, MarkerBook] | None = None,
        token: str | None = None,
        seed: int = 11,
    ) -> None:
        self.base_ws = base_ws
        self.host, self.port = host, port
        self.symbols = symbols
        self.rate = rate
        self.connections = connections
        self.frame_trades = max(len(symbols), frame_trades)
        self.window = window
        self.transport = transport
        self.fmt = "json" if transport == "http" else fmt
        self.marker_hz = marker_hz
        self.books = marker_books or {}
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.stats = PublishStats()
        self.encoder = FrameEncoder(symbols, self.fmt)
        self.text = not self.encoder.binary  # JSON travels in text frames, msgpack in binary ones
        self.pool = TradePool(symbols, seed=seed)
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._drained = asyncio.Event()
        per_symbol = self.frame_trades // len(symbols)
        self._split = [per_symbol + (1 if i < self.frame_trades % len(symbols) else 0) for i in range(len(symbols))]

    # --- frames ---------------------------------------------------------------------

    def bulk_frame(self) -> tuple[bytes, int]:
        now = wall_ms()
        blocks = []
        for symbol, n in zip(self.symbols, self._split):
            price, size = self.pool.take(symbol, n)
            blocks.append((symbol, price, size, now))
        return self.encoder.encode(blocks), self.frame_trades

    def marker_frame(self, sent: float) -> tuple[bytes, list[tuple[MarkerBook, int]]]:
        now = wall_ms()
        blocks, marks = [], []
        for symbol in self.symbols:
            book = self.books[symbol]
            price = book.next_price(now)
            marks.append((book, book.add(price, now, sent)))
            blocks.append((symbol, np.array([price]), np.array([0.001]), now))
        return self.encoder.encode(blocks), marks

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        if self.rate > 0:
            pacer = Pacer(self.rate / self.frame_trades)
            for i in range(self.connections):
                run = self._ws_bulk if self.transport == "ws" else self._http_bulk
                self._tasks.append(asyncio.create_task(run(pacer), name=f"publish-{i}"))
        if self.marker_hz > 0 and self.books:
            markers = self._ws_markers if self.transport == "ws" else self._http_markers
            self._tasks.append(asyncio.create_task(markers(), name="markers"))

    async def finish(self, drain_timeout_s: float = 15.0) -> None:
        """Stop sending, wait for the outstanding acks (bounded), close."""
        self.stop.set()
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=drain_timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- WebSocket ------------------------------------------------------------------

    async def _open(self) -> ClientConnection:
        return await connect(
            self.base_ws + "/ws/ingest",
            compression=None,
            max_size=None,
            proxy=None,
            additional_headers=self.headers,
            ping_interval=None,
            open_timeout=30,
            write_limit=1 << 20,
        )

    async def _ws_bulk(self, pacer: Pacer) -> None:
        await self._ws_loop(lambda: self.bulk_frame() + (None,), pacer)

    async def _ws_markers(self) -> None:
        pacer = Pacer(self.marker_hz, max_debt_s=0.0)

        def make() -> tuple[bytes, int, list[tuple[MarkerBook, int]]]:
            frame, marks = self.marker_frame(time.perf_counter())
            return frame, len(marks), marks

        await self._ws_loop(make, pacer)

    async def _ws_loop(self, make: Any, pacer: Pacer) -> None:
        stats = self.stats
        while not self.stop.is_set():
            try:
                ws = await self._open()
            except (TimeoutError, OSError) as exc:
                stats.errors[f"connect: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)
                continue
            stats.connections_open += 1
            inflight: collections.deque[tuple[float, int, Any]] = collections.deque()
            slots = asyncio.Semaphore(self.window)
            reader = asyncio.create_task(self._read_acks(ws, inflight, slots))
            try:
                while not self.stop.is_set() and not reader.done():
                    await slots.acquire()
                    if self.stop.is_set():
                        break
                    await pacer.slot()
                    if self.stop.is_set():
                        break
                    frame, n, marks = make()  # a marker's "sent" time is taken in make(), just before the send
                    inflight.append((time.perf_counter(), n, marks))
                    stats.frames_sent += 1
                    stats.trades_sent += n
                    await ws.send(frame, text=self.text)
                # drain: wait for every outstanding ack (the caller bounds this)
                while inflight and not reader.done():  # noqa: ASYNC110 - acks arrive on the reader task; a 10 ms poll is plenty here
                    await asyncio.sleep(0.01)
            except ConnectionClosed:
                pass
            finally:
                stats.connections_open -= 1
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                if inflight:
                    stats.disconnects += 1
                    stats.errors["connection lost with frames unacknowledged"] += len(inflight)
                    for _, _, marks in inflight:
                        for book, idx in marks or ():
                            book.refuse(idx)
                await ws.close()
            if not self.stop.is_set():
                await asyncio.sleep(0.2)

    async def _read_acks(
        self, ws: ClientConnection, inflight: collections.deque[tuple[float, int, Any]], slots: asyncio.Semaphore
    ) -> None:
        stats = self.stats
        try:
            async for message in ws:
                now = time.perf_counter()
                reply = _reply.decode(message)
                sent, n, marks = inflight.popleft()
                slots.release()
                if isinstance(reply, _Ack):
                    stats.frames_acked += 1
                    stats.trades_acked += reply.accepted
                    stats.duplicates += reply.duplicates
                    lo, hi = stats.rtt_window
                    if lo <= sent <= hi:
                        stats.ack_rtt_ms.append((now - sent) * 1000.0)
                else:
                    stats.frames_refused += 1
                    stats.trades_refused += n
                    stats.errors[reply.error.code] += 1
                    for book, idx in marks or ():
                        book.refuse(idx)
        except ConnectionClosed as exc:
            if not self.stop.is_set():
                stats.errors[f"ingest connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"] += 1

    # --- HTTP -----------------------------------------------------------------------

    async def _http_bulk(self, pacer: Pacer) -> None:
        await self._http_loop(lambda: self.bulk_frame() + (None,), pacer)

    async def _http_markers(self) -> None:
        def make() -> tuple[bytes, int, list[tuple[MarkerBook, int]]]:
            frame, marks = self.marker_frame(time.perf_counter())
            return frame, len(marks), marks

        await self._http_loop(make, Pacer(self.marker_hz, max_debt_s=0.0))

    async def _http_loop(self, make: Any, pacer: Pacer) -> None:
        stats = self.stats
        conn = HttpConnection(self.host, self.port, headers=self.headers)
        stats.connections_open += 1
        try:
            while not self.stop.is_set():
                await pacer.slot()
                if self.stop.is_set():
                    break
                body, n, marks = make()
                sent = time.perf_counter()
                stats.frames_sent += 1
                stats.trades_sent += n
                try:
                    status, payload = await conn.request("POST", "/api/trades", body)
                except (TimeoutError, HttpError, OSError) as exc:
                    stats.errors[f"http: {type(exc).__name__}"] += 1
                    stats.frames_refused += 1
                    stats.trades_refused += n
                    for book, idx in marks or ():
                        book.refuse(idx)
                    await asyncio.sleep(0.2)
                    continue
                if status == 200:
                    body_json = _accepted.decode(payload)
                    stats.frames_acked += 1
                    stats.trades_acked += int(body_json.get("accepted", 0))
                    stats.duplicates += int(body_json.get("duplicates", 0))
                    lo, hi = stats.rtt_window
                    if lo <= sent <= hi:
                        stats.ack_rtt_ms.append((time.perf_counter() - sent) * 1000.0)
                else:
                    stats.frames_refused += 1
                    stats.trades_refused += n
                    stats.errors[f"http {status}"] += 1
                    for book, idx in marks or ():
                        book.refuse(idx)
        finally:
            stats.connections_open -= 1
            await conn.close()
