"""Connections and the frames written to them: the part of live fan-out that knows nothing
about bars being built (the core's :class:`~service.runtime.hub.Hub` and an edge's
:class:`~service.edge.hub.EdgeHub` both deliver through it).

A *topic* is one (symbol, resolution) series, named ``<symbol>@<resolution>``. Protocol v2
clients get a topic's frames as shared bytes, encoded once for every subscriber of the
series (:func:`topic_frames`); a v2 connection with several subscription ids on one topic
gets each frame once and the datafeed maps it back to its listeners. Protocol v1 clients
get one message per subscription id, spliced from the same encoded bar (no re-encoding).

Writes go straight into the connection's transport where the server allows it
(``write``: the WebSocket path under ``tvflux serve``), so a push to N clients is N
non-blocking writes and no task wake-ups. A client that stops reading shows up as bytes
piling up in its transport: past ``buffer_max_bytes``, or unsent for ``send_timeout_s``,
it is cut off, and nobody else waits for it. Where there is no transport to write to
(SSE, the ASGI test client) frames queue in ``outbox`` for the connection's own loop, under
the same byte bound.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import msgspec

from service.core.models import Bar
from service.core.resolution import Resolution
from service.core.ws import FrameKind

PROTOCOL_V1 = 1
PROTOCOL_V2 = 2

TopicKey = tuple[str, Resolution]
# writes one whole frame to the transport; returns the bytes it still holds unsent
Writer = Callable[[bytes], int]

_encode = msgspec.json.Encoder().encode


def topic_name(key: TopicKey) -> str:
    return f"{key[0]}@{key[1].text}"


def split_topic(topic: str) -> tuple[str, str]:
    """``(symbol, resolution text)`` of a topic name (symbols never contain ``@``)."""
    symbol, _, resolution = topic.rpartition("@")
    return symbol, resolution


class Subscription:
    __slots__ = ("id", "key", "client", "id_json")

    def __init__(self, sub_id: str, key: TopicKey, client: Client) -> None:
        self.id = sub_id
        self.key = key
        self.client = client
        self.id_json = _encode(sub_id)  # spliced into v1 messages


class Client:
    """One connection (WebSocket or SSE): its subscriptions and where its frames go."""

    def __init__(
        self,
        name: str = "",
        *,
        version: int = PROTOCOL_V1,
        write: Writer | None = None,
        buffer_max_bytes: int = 1 << 20,
        send_timeout_s: float = 5.0,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.version = version
        self.edge_stats: tuple[int, int] | None = None  # an edge's (clients, subscriptions), as it reports them
        self.subs: dict[str, Subscription] = {}
        self.topics: dict[TopicKey, list[Subscription]] = {}
        self.buffer_max_bytes = buffer_max_bytes
        self.send_timeout_s = send_timeout_s
        self._write = write
        self._clock_s = clock_s
        self._backlog_since: float | None = None
        self.outbox: deque[bytes] = deque()
        self._outbox_bytes = 0
        self.wake = asyncio.Event()  # the outbox has frames, or the client was cut
        self.cut_reason: str | None = None
        self.frames_sent = 0
        self.dropped = 0  # frames never sent: offered after the cut-off

    @property
    def direct(self) -> bool:
        return self._write is not None

    def send(self, frame: bytes) -> None:
        if self.cut_reason is not None:
            self.dropped += 1
            return
        if self._write is None:
            self.outbox.append(frame)
            self._outbox_bytes += len(frame)
            if self._outbox_bytes > self.buffer_max_bytes:
                self.cut(f"subscriber too slow: more than {self.buffer_max_bytes} bytes waiting")
            self.wake.set()
            return
        try:
            unsent = self._write(frame)
        except Exception as exc:  # the transport is closing: the connection's handler ends it
            self.cut(f"connection closed ({type(exc).__name__})")
            return
        self.frames_sent += 1
        if unsent <= 0:
            self._backlog_since = None
        elif unsent > self.buffer_max_bytes:
            self.cut(f"subscriber too slow: more than {self.buffer_max_bytes} bytes unsent")
        elif self._backlog_since is None:
            self._backlog_since = self._clock_s()
        elif self._clock_s() - self._backlog_since > self.send_timeout_s:
            self.cut(f"subscriber too slow: bytes unsent for more than {self.send_timeout_s}s")

    def take(self) -> list[bytes]:
        """The queued frames, oldest first (outbox clients)."""
        frames = list(self.outbox)
        self.outbox.clear()
        self._outbox_bytes = 0
        self.frames_sent += len(frames)
        return frames

    def cut(self, reason: str) -> None:
        if self.cut_reason is None:
            self.cut_reason = reason
            self.dropped += len(self.outbox)
            self.outbox.clear()
            self._outbox_bytes = 0
            self.wake.set()

    def attach(self, sub: Subscription) -> bool:
        """Add ``sub``; True when it is the connection's first on its topic."""
        self.subs[sub.id] = sub
        same = self.topics.setdefault(sub.key, [])
        same.append(sub)
        return len(same) == 1

    def detach(self, sub_id: str) -> Subscription | None:
        sub = self.subs.pop(sub_id, None)
        if sub is not None:
            same = self.topics.get(sub.key)
            if same is not None:
                same.remove(sub)
                if not same:
                    del self.topics[sub.key]
        return sub


class ClientBook:
    """The connections of a hub and the delivery counters behind /metrics, which outlive
    the clients that produced them. Shared by the core's hub and an edge's."""

    def __init__(self) -> None:
        self.clients: set[Client] = set()
        self.clients_cut = 0
        self._stale = 0  # bars older than one already sent for their series: never sent
        self._sent_gone = 0
        self._dropped_gone = 0

    @property
    def frames_sent(self) -> int:
        return self._sent_gone + sum(c.frames_sent for c in self.clients)

    @property
    def updates_dropped(self) -> int:
        return self._stale + self._dropped_gone + sum(c.dropped for c in self.clients)

    def unsubscribe(self, client: Client, sub_id: str) -> bool:
        raise NotImplementedError

    def register(self, client: Client) -> None:
        self.clients.add(client)

    def unregister(self, client: Client) -> None:
        for sub_id in list(client.subs):
            self.unsubscribe(client, sub_id)
        if client in self.clients:
            self.clients.discard(client)
            self._sent_gone += client.frames_sent
            self._dropped_gone += client.dropped
            if client.cut_reason is not None:
                self.clients_cut += 1


class LiveHub(Protocol):
    """What a connection's handler needs of a hub: the core's Hub and an edge's EdgeHub."""

    def register(self, client: Client) -> None: ...

    def unregister(self, client: Client) -> None: ...

    async def subscribe(self, client: Client, sub_id: str, symbol: str, resolution: Resolution) -> Subscription: ...

    def unsubscribe(self, client: Client, sub_id: str) -> bool: ...


class Frames:
    """One push of one topic: its messages, each encoded once for v2 and, for v1 clients,
    as bar JSON to splice behind a subscription id."""

    __slots__ = ("topic_json", "items")

    def __init__(self, key: TopicKey) -> None:
        self.topic_json = _encode(topic_name(key))
        # (v2 frame, kind, bar json, bar time)
        self.items: list[tuple[bytes, FrameKind, bytes, int]] = []

    def reset(self) -> None:
        self.items.append((b'{"type":"reset","topic":' + self.topic_json + b"}", FrameKind.RESET, b"", -1))

    def bar(self, bar: Bar, closed: bool) -> None:
        bar_json = _encode(bar)
        flag = b"true" if closed else b"false"
        frame = b'{"type":"bar","topic":' + self.topic_json + b',"bar":' + bar_json + b',"closed":' + flag + b"}"
        self.items.append((frame, FrameKind.CLOSED if closed else FrameKind.OPEN, bar_json, bar.time))

    def raw(self, frame: bytes, kind: FrameKind, bar_json: bytes, time_ms: int) -> None:
        """A v2 frame encoded elsewhere (an edge's upstream), passed on as it came."""
        self.items.append((frame, kind, bar_json, time_ms))

    def since(self, time_ms: int) -> Frames:
        """The same push without bars older than ``time_ms`` (for a subscriber that was
        just sent the open bar of that time)."""
        out = Frames.__new__(Frames)
        out.topic_json = self.topic_json
        out.items = [item for item in self.items if item[1] is FrameKind.RESET or item[3] >= time_ms]
        return out

    def deliver(self, subs: list[Subscription]) -> int:
        """Write to the connections of ``subs`` (every subscription of one topic); returns
        how many frames were written."""
        sent = 0
        seen: set[int] = set()
        for sub in subs:
            client = sub.client
            if client.version == PROTOCOL_V2:
                if id(client) in seen:
                    continue  # one copy per connection, whatever its subscription ids
                seen.add(id(client))
                for frame, _, _, _ in self.items:
                    client.send(frame)
                sent += len(self.items)
            else:
                for _, kind, bar_json, _ in self.items:
                    client.send(v1_message(sub, kind, bar_json))
                sent += len(self.items)
        return sent


def v1_message(sub: Subscription, kind: FrameKind, bar_json: bytes) -> bytes:
    if kind is FrameKind.RESET:
        return b'{"type":"reset","id":' + sub.id_json + b"}"
    flag = b"true" if kind is FrameKind.CLOSED else b"false"
    return b'{"type":"bar","id":' + sub.id_json + b',"bar":' + bar_json + b',"closed":' + flag + b"}"
