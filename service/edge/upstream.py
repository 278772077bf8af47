"""Where an edge's live bars come from.

An :class:`Upstream` delivers protocol-v2 frames (``bar`` and ``reset``, encoded by the
core, passed on byte for byte) of the topics the edge *wants*, and says when it loses or
regains its source. After :meth:`Upstream.want` the next frames of that topic include its
open bar. Two kinds: :class:`CoreUpstream` (one WebSocket to the core's ``/ws?v=2``, for
edges on the core's host: ``tvflux serve --workers N``) and
:class:`service.edge.nats.NatsUpstream` (edges on other hosts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Callable

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection

from service.core.models import EdgeStats, ErrorBody, ErrorMessage, Subscribe, Unsubscribe
from service.runtime.fanout import split_topic

log = logging.getLogger(__name__)
EDGE_STATS_INTERVAL_S = 2.0

# (topic, v2 frame) — a bar or reset of that topic, as the core encoded it
Deliver = Callable[[str, bytes], None]
# (live, reason): False when the source is lost; True once it is back and every wanted
# topic was asked for again (the edge then resets its subscribers)
OnState = Callable[[bool, "str | None"], None]
# (topic, error): the core refused the topic, or ended it (its symbol was removed)
OnRefused = Callable[[str, ErrorBody], None]

_encode = msgspec.json.Encoder().encode


class _Header(msgspec.Struct):
    type: str
    topic: str | None = None
    id: str | None = None


_header = msgspec.json.Decoder(_Header)
_error_of = msgspec.json.Decoder(ErrorMessage).decode


class Upstream(ABC):
    def __init__(self) -> None:
        self.live = False
        self.is_live = asyncio.Event()  # set while live (to wait for it)
        self.reason: str | None = "starting"
        self._deliver: Deliver = lambda topic, frame: None
        self._on_state: OnState = lambda live, reason: None
        self._refused: OnRefused = lambda topic, error: None
        self.source = "the upstream"  # for the log: the core's or the broker's address
        # the edge's (clients, subscriptions), reported to the core for its /api/stats
        self.stats: Callable[[], tuple[int, int]] | None = None

    def bind(self, deliver: Deliver, on_state: OnState, refused: OnRefused | None = None) -> None:
        self._deliver = deliver
        self._on_state = on_state
        if refused is not None:
            self._refused = refused

    def _set_live(self, live: bool, reason: str | None = None) -> None:
        # Said in the log once per change (an edge that never reached its source said nothing)
        if not live and reason != self.reason:
            log.warning("no live bars: %s; retrying (clients of /ws?v=2 get status live false)", reason)
        elif live and not self.live:
            log.info("live bars flowing from %s", self.source)
        if live:
            self.is_live.set()
        else:
            self.is_live.clear()
        if live != self.live:
            self.live, self.reason = live, reason
            self._on_state(live, reason)
        else:
            self.reason = reason

    @abstractmethod
    async def start(self) -> None:
        """Connect in the background; returns at once."""

    @abstractmethod
    def want(self, topic: str) -> None:
        """Start receiving ``topic``; its open bar comes next."""

    @abstractmethod
    def drop(self, topic: str) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...


class CoreUpstream(Upstream):
    """One WebSocket to the core's ``/ws?v=2``; each wanted topic is one subscription
    (id = topic). Reconnects with capped, jittered backoff and asks for every topic again."""

    def __init__(self, ws_url: str, *, max_delay_s: float = 5.0) -> None:
        super().__init__()
        self.ws_url = self.source = ws_url
        self.max_delay_s = max_delay_s
        self.topics: set[str] = set()
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="core-upstream")

    def want(self, topic: str) -> None:
        self.topics.add(topic)
        self._send(topic, subscribe=True)

    def drop(self, topic: str) -> None:
        self.topics.discard(topic)
        self._send(topic, subscribe=False)

    def _send(self, topic: str, *, subscribe: bool) -> None:
        ws = self._ws
        if ws is None:
            return  # asked for again at the next connect
        if subscribe:
            symbol, resolution = split_topic(topic)
            message = _encode(Subscribe(topic, symbol, resolution))
        else:
            message = _encode(Unsubscribe(topic))
        task = asyncio.ensure_future(ws.send(message.decode()))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a lost socket reconnects

    async def _run(self) -> None:
        delay_s = 0.2
        while True:
            try:
                async with websockets.connect(self.ws_url, max_size=None, compression=None) as ws:
                    self._ws = ws
                    for topic in list(self.topics):
                        self._send(topic, subscribe=True)
                    self._set_live(True)
                    delay_s = 0.2
                    reporter = asyncio.create_task(self._report(ws), name="edge-stats")
                    try:
                        async for message in ws:
                            frame = message.encode() if isinstance(message, str) else message
                            self._route(frame)
                    finally:
                        reporter.cancel()
                reason = "the core closed the connection"
            except (OSError, websockets.exceptions.WebSocketException) as exc:
                reason = f"core unreachable: {exc}"
            self._ws = None
            self._set_live(False, reason)
            await asyncio.sleep(delay_s * (0.5 + random.random()))
            delay_s = min(delay_s * 2, self.max_delay_s)

    async def _report(self, ws: ClientConnection) -> None:
        """Tell the core how many clients this edge holds, every few seconds."""
        while self.stats is not None:
            clients, subscriptions = self.stats()
            with contextlib.suppress(websockets.exceptions.WebSocketException, OSError):
                await ws.send(_encode(EdgeStats(clients, subscriptions)).decode())
            await asyncio.sleep(EDGE_STATS_INTERVAL_S)

    def _route(self, frame: bytes) -> None:
        head = _header.decode(frame)
        if head.type in ("bar", "reset") and head.topic is not None:
            self._deliver(head.topic, frame)
        elif head.type == "error":
            if _error_of(frame).error.code == "unknown_subscription":
                return  # an unsubscribe of a topic the core had already ended (a removed symbol)
            log.warning("core refused a topic: %s", frame[:300].decode(errors="replace"))
            if head.id is not None and head.id in self.topics:  # the edge's id of a topic is its name
                self._refused(head.id, _error_of(frame).error)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
