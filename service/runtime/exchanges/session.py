"""One WebSocket connection to a venue: connect, subscribe within the venue's message
budget, read. The ``websockets`` library answers the server's pings at once (Binance
drops a connection that does not answer within a minute) and sends its own, so a dead
peer is noticed within ``keepalive_s`` twice over; silence at the application level is
the source's watchdog's business."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from websockets.asyncio.client import ClientConnection, connect

from service.core.venues.budget import TokenBucket

OPEN_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class Session:
    def __init__(self, url: str, subscribe: list[str], budget: TokenBucket, *, keepalive_s: float) -> None:
        self.url = url
        self.subscribe = subscribe
        self.budget = budget
        self.keepalive_s = keepalive_s
        self.opened_s: float | None = None
        self.last_message_s: float | None = None
        self.sent = 0
        self.received = 0
        self.first_message = asyncio.Event()
        self._ws: ClientConnection | None = None

    async def open(self) -> None:
        """Connect and send the subscriptions; raises what connecting raises (``OSError``,
        ``websockets`` errors, ``TimeoutError``)."""
        self._ws = await connect(
            self.url,
            open_timeout=OPEN_TIMEOUT_S,
            ping_interval=self.keepalive_s,
            ping_timeout=self.keepalive_s,
            close_timeout=2.0,
            max_size=MAX_MESSAGE_BYTES,
            user_agent_header="tvflux",
        )
        self.opened_s = self.last_message_s = time.monotonic()
        for message in self.subscribe:
            await self.send(message)

    async def send(self, text: str) -> None:
        """Send within the budget (a message too many gets a connection closed, and IPs
        that are often closed for it banned)."""
        assert self._ws is not None
        wait = self.budget.wait_s(time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)
        self.budget.spend(time.monotonic())
        await self._ws.send(text)
        self.sent += 1

    async def messages(self) -> AsyncIterator[str | bytes]:
        """Every message until the connection closes (then the iteration just ends, or
        raises the ``websockets`` error of an abnormal close)."""
        assert self._ws is not None
        async for message in self._ws:
            self.last_message_s = time.monotonic()
            self.received += 1
            self.first_message.set()
            yield message

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
