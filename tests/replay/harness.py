"""What every replay server shares: the server-side truth (each symbol's trades with
consecutive ids), the faults a test injects, and an aiohttp app (WebSocket + REST on one
port of 127.0.0.1) running in a thread of its own, so tests drive it synchronously while
``tvflux serve`` runs as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import WSMsgType, web


@dataclass(frozen=True)
class Row:
    """One entry of a venue's trade sequence. ``placeholder``: holds an id, is no trade
    (Binance's price-0 rows)."""

    id: int
    time_ms: int
    price: str
    size: str
    placeholder: bool = False


@dataclass
class Book:
    """The trades of one symbol, as the venue's database holds them."""

    next_id: int = 1_000_000
    rows: list[Row] = field(default_factory=list)

    def make(
        self, n: int, *, time_ms: int | None = None, step_ms: int = 3, placeholders: Iterable[int] = ()
    ) -> list[Row]:
        """``n`` new rows from ``time_ms`` (default: now), ``step_ms`` apart; the ``placeholders``-th ones
        (0-based) are placeholder rows."""
        t0 = int(time.time() * 1000) if time_ms is None else time_ms
        if self.rows:  # a venue's ids follow its clock: a newer id is never older
            t0 = max(t0, self.rows[-1].time_ms + step_ms)
        holes = set(placeholders)
        out = []
        for k in range(n):
            i = self.next_id
            self.next_id += 1
            if k in holes:
                out.append(Row(i, t0 + k * step_ms, "0.00000000", "0.00000000", placeholder=True))
            else:  # prices on a 0.01 tick, sizes on a 0.00001 step, as strings (exact)
                out.append(
                    Row(i, t0 + k * step_ms, f"{30000 + (i * 7919) % 500 / 100:.2f}", f"0.{i % 9000 + 1000:05d}")
                )
        self.rows.extend(out)
        return out

    def trades(self) -> list[Row]:
        return [r for r in self.rows if not r.placeholder]

    def since_id(self, from_id: int, limit: int, min_id: int = 0) -> list[Row]:
        return [r for r in self.rows if r.id >= max(from_id, min_id)][:limit]

    def since_time(self, from_ms: int, limit: int, min_id: int = 0) -> list[Row]:
        return [r for r in self.rows if r.time_ms >= from_ms and r.id >= min_id][:limit]


class Connection:
    def __init__(self, ws: web.WebSocketResponse, request: web.Request, serial: int) -> None:
        self.ws = ws
        self.request = request
        self.serial = serial  # 1 for the first connection the server accepted
        self.frames: list[float] = []  # monotonic times of every client frame, pings and pongs included
        self.last_pong_s = time.monotonic()
        self.subscribed: set[str] = set()  # venue symbols whose trades this connection gets
        self.heartbeats = False  # the venue's heartbeats are on for this connection
        self.received: list[tuple[float, str]] = []  # (monotonic, text) from the client

    async def send(self, text: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(text)


class Venue(Protocol):
    ws_path: str
    heartbeat_s: float | None  # the venue's own heartbeat messages on a subscribed connection

    def accept(self, conn: Connection, server: ReplayServer) -> None:
        """A new connection (its request's query may name streams)."""

    def on_client_message(self, conn: Connection, text: str, server: ReplayServer) -> list[str]:
        """The answers to a client message (a subscribe)."""

    def trade_messages(self, symbol: str, rows: list[Row], server: ReplayServer) -> list[str]:
        """The stream messages carrying ``rows`` (one message each, unless the venue batches)."""

    def heartbeat(self) -> str: ...

    def routes(self, server: ReplayServer) -> list[web.RouteDef]: ...


@dataclass
class Faults:
    """What a test makes the server do wrong."""

    silent_upto: int = 0  # a stall: connections up to this serial stay open and get nothing
    rest_answers: deque[tuple[int, dict[str, str]]] = field(
        default_factory=deque
    )  # next REST answers: (status, headers)
    rest_min_id: int = 0  # retention: older ids are no longer served
    micro_s: bool = False  # times in µs (Binance with timeUnit=MICROSECOND)
    refuse_connects: bool = False  # the WebSocket endpoint answers 503 (a venue briefly unreachable)


class ReplayServer:
    def __init__(self, venue: Venue, symbols: Iterable[str], *, heartbeat_s: float | None = None) -> None:
        self.venue = venue
        self.books = {s: Book() for s in symbols}
        self.faults = Faults()
        self.heartbeat_s = heartbeat_s  # the server pings this often and drops a client that does not pong
        self.connections: list[Connection] = []  # open now
        self.all_connections: list[Connection] = []
        self.connects = 0
        self.pong_timeouts = 0
        self.rest_log: list[tuple[str, dict[str, str], int]] = []  # (path, params, status)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="replay", daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> ReplayServer:
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get(self.venue.ws_path, self._ws)
        app.add_routes(self.venue.routes(self))
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self._abort_all(), timeout_s=5)
            if self._runner is not None:
                self.call(self._runner.cleanup(), timeout_s=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def call(self, coro: Any, timeout_s: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    # --- WebSocket --------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if self.faults.refuse_connects:
            return web.Response(status=503, text="unavailable")
        ws = web.WebSocketResponse(autoping=False)  # pings and pongs are counted here
        await ws.prepare(request)
        self.connects += 1
        conn = Connection(ws, request, self.connects)
        self.venue.accept(conn, self)
        self.connections.append(conn)
        self.all_connections.append(conn)
        helpers = [asyncio.create_task(self._ping(conn))] if self.heartbeat_s else []
        if self.venue.heartbeat_s:
            helpers.append(asyncio.create_task(self._heartbeats(conn, self.venue.heartbeat_s)))
        try:
            async for msg in ws:
                conn.frames.append(time.monotonic())
                if msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    conn.last_pong_s = time.monotonic()
                elif msg.type == WSMsgType.TEXT:
                    conn.received.append((time.monotonic(), msg.data))
                    for answer in self.venue.on_client_message(conn, msg.data, self):
                        await conn.send(answer)
        finally:
            for task in helpers:
                task.cancel()
            with contextlib.suppress(ValueError):
                self.connections.remove(conn)
        return ws

    async def _ping(self, conn: Connection) -> None:
        """Ping every ``heartbeat_s``; a client whose pong is later than twice that is
        dropped, as the venues drop one that misses their pong deadline."""
        assert self.heartbeat_s is not None
        while not conn.ws.closed:
            await asyncio.sleep(self.heartbeat_s)
            if time.monotonic() - conn.last_pong_s > 2 * self.heartbeat_s:
                self.pong_timeouts += 1
                await conn.ws.close(code=1008, message=b"pong timeout")
                return
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.ping(b"replay")

    async def _heartbeats(self, conn: Connection, every_s: float) -> None:
        while not conn.ws.closed:
            await asyncio.sleep(every_s)
            if conn.heartbeats and conn.serial > self.faults.silent_upto:
                await conn.send(self.venue.heartbeat())

    def max_client_frames_per_s(self) -> int:
        """The most frames one connection sent within any one second (Binance allows 5)."""
        worst = 0
        for conn in self.all_connections:
            times = conn.frames
            lo = 0
            for hi, t in enumerate(times):
                while t - times[lo] >= 1.0:
                    lo += 1
                worst = max(worst, hi - lo + 1)
        return worst

    async def _abort_all(self) -> None:
        for conn in list(self.connections):
            transport = conn.request.transport
            if transport is not None:
                transport.abort()  # no close frame: a connection lost, not a close

    async def _publish(self, symbol: str, rows: list[Row], drop: set[int], duplicate: bool, swap: bool) -> None:
        sent = [r for r in rows if r.id not in drop]
        if swap:  # out-of-order delivery: neighbours change places
            for k in range(0, len(sent) - 1, 2):
                sent[k], sent[k + 1] = sent[k + 1], sent[k]
        if duplicate:
            sent = [r for r in sent for _ in (0, 1)]
        for conn in list(self.connections):
            if conn.serial <= self.faults.silent_upto:
                continue
            for text in self.venue.trade_messages(symbol, sent, self):
                if symbol in conn.subscribed:
                    await conn.send(text)

    async def _broadcast(self, text: str) -> None:
        for conn in list(self.connections):
            await conn.send(text)

    # --- what tests call (from their own thread) ---------------------------------------

    def trade(
        self,
        symbol: str,
        n: int,
        *,
        drop: Iterable[int] = (),
        duplicate: bool = False,
        swap: bool = False,
        placeholders: Iterable[int] = (),
        time_ms: int | None = None,
    ) -> list[Row]:
        """``n`` new trades of ``symbol``, sent to every connection (minus the ``drop``-th
        ones, 0-based: a dropped message)."""
        rows = self.books[symbol].make(n, time_ms=time_ms, placeholders=placeholders)
        lost = {rows[k].id for k in drop}
        self.call(self._publish(symbol, rows, lost, duplicate, swap))
        return rows

    def stall(self) -> None:
        """Every open connection goes silent (a venue stuck), staying open; new ones talk."""
        self.faults.silent_upto = self.connects

    def broadcast(self, text: str) -> None:
        self.call(self._broadcast(text))

    def abort_connections(self) -> None:
        self.call(self._abort_all())

    def wait_connects(self, n: int, timeout_s: float = 20.0) -> None:
        """Until ``n`` connections were opened in all and one is subscribed."""
        wait_until(lambda: self.connects >= n and any(c.subscribed for c in self.connections), timeout_s, "connect")

    def answer_rest(self, request: web.Request) -> tuple[int, dict[str, str]]:
        """The status and extra headers of the next REST answer (a queued fault, or 200)."""
        status, headers = self.faults.rest_answers.popleft() if self.faults.rest_answers else (200, {})
        self.rest_log.append((request.path, dict(request.query), status))
        return status, headers

    def trades(self, symbol: str) -> list[Row]:
        return self.books[symbol].trades()


def wait_until(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)
