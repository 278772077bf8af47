"""An edge's fan-out: the topics its clients subscribe to, fed by frames from the
:class:`~service.edge.upstream.Upstream` and passed on as they came (the core coalesced and
encoded them once; v2 clients get the very same bytes).

The edge keeps each topic's open bar so a new subscriber gets it at once, and never
passes on a bar older than one it already sent for that topic. When the upstream is lost
its clients are told (``status``, live false) and the edge reports unready; subscriptions
are still taken meanwhile (the subscriber is told the same). When it is back, every
subscriber gets a ``reset`` (its chart refetches history: whatever happened meanwhile is in
there) and the live bars continue.
"""

from __future__ import annotations

import logging

import msgspec

from service.core.models import ErrorBody, ErrorMessage, LiveStatus, TopicBar, TopicReset
from service.core.resolution import Resolution
from service.core.ws import FrameKind
from service.edge.upstream import Upstream
from service.runtime.fanout import PROTOCOL_V2, Client, ClientBook, Frames, Subscription, TopicKey, topic_name

log = logging.getLogger(__name__)

_decode = msgspec.json.Decoder(TopicBar | TopicReset | ErrorMessage).decode
_encode = msgspec.json.Encoder().encode


class _Topic:
    __slots__ = ("key", "subs", "open", "last_sent_ms")

    def __init__(self, key: TopicKey) -> None:
        self.key = key
        self.subs: list[Subscription] = []
        self.open: tuple[bytes, bytes, int] | None = None  # (v2 frame, bar json, time)
        self.last_sent_ms = -1


class EdgeHub(ClientBook):
    def __init__(self, upstream: Upstream) -> None:
        super().__init__()
        self.upstream = upstream
        upstream.bind(self.deliver, self.on_state, self.refuse)
        self._topics: dict[str, _Topic] = {}
        self.updates_coalesced = 0  # coalescing happens at the core

    @property
    def subscription_count(self) -> int:
        return sum(len(t.subs) for t in self._topics.values())

    async def subscribe(self, client: Client, sub_id: str, symbol: str, resolution: Resolution) -> Subscription:
        key = (symbol, resolution)
        if sub_id in client.subs:
            self.unsubscribe(client, sub_id)
        sub = Subscription(sub_id, key, client)
        first_on_topic = client.attach(sub)
        name = topic_name(key)
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic(key)
            self.upstream.want(name)
        topic.subs.append(sub)
        if not self.upstream.live:
            # Taken all the same: its bars come once the upstream is back (after the
            # `status` live and a `reset` every subscriber gets then).
            if client.version == PROTOCOL_V2:
                client.send(_encode(LiveStatus(False, self.upstream.reason)))
            return sub
        if topic.open is not None and (client.version != PROTOCOL_V2 or first_on_topic):
            frame, bar_json, time_ms = topic.open
            frames = Frames(key)
            frames.raw(frame, FrameKind.OPEN, bar_json, time_ms)
            frames.deliver([sub])
        return sub

    def unsubscribe(self, client: Client, sub_id: str) -> bool:
        sub = client.detach(sub_id)
        if sub is None:
            return False
        name = topic_name(sub.key)
        topic = self._topics.get(name)
        if topic is not None and sub in topic.subs:
            topic.subs.remove(sub)
            if not topic.subs:
                del self._topics[name]
                self.upstream.drop(name)
        return True

    def deliver(self, name: str, frame: bytes) -> None:
        topic = self._topics.get(name)
        if topic is None:
            return  # dropped a moment ago
        msg = _decode(frame)
        if isinstance(msg, ErrorMessage):  # the core ended the topic (its symbol was removed)
            self.refuse(name, msg.error)
            return
        frames = Frames(topic.key)
        if isinstance(msg, TopicReset):
            frames.raw(frame, FrameKind.RESET, b"", -1)
            topic.last_sent_ms = -1  # the bar that follows a reset may replace the last one
        else:
            bar = msg.bar
            if bar.time < topic.last_sent_ms:
                self._stale += 1
                return
            topic.last_sent_ms = bar.time
            bar_json = _encode(bar)
            if msg.closed:
                if topic.open is not None and topic.open[2] <= bar.time:
                    topic.open = None
            else:
                topic.open = (frame, bar_json, bar.time)
            frames.raw(frame, FrameKind.CLOSED if msg.closed else FrameKind.OPEN, bar_json, bar.time)
        frames.deliver(topic.subs)

    def refuse(self, name: str, error: ErrorBody) -> None:
        """The upstream refused or ended topic ``name``: each of its subscriptions gets
        ``error`` with its own id and ends, as it would on the core."""
        topic = self._topics.pop(name, None)
        if topic is None:
            return
        self.upstream.drop(name)
        for sub in topic.subs:
            sub.client.send(_encode(ErrorMessage(error, id=sub.id)))
            sub.client.detach(sub.id)

    def drop_symbol(self, symbol: str, error: ErrorBody) -> None:
        """``symbol`` is no longer listed by the core: end its topics."""
        for name in [n for n, t in self._topics.items() if t.key[0] == symbol]:
            self.refuse(name, error)

    def on_state(self, live: bool, reason: str | None) -> None:
        if live:
            log.info("edge upstream live")
        else:
            log.warning("edge upstream lost: %s", reason)
        status = _encode(LiveStatus(live, reason))
        for client in list(self.clients):
            if client.version == PROTOCOL_V2:
                client.send(status)
        if not live:
            for topic in self._topics.values():
                topic.open = None  # stale from now on; the upstream sends it again
            return
        for topic in self._topics.values():
            frames = Frames(topic.key)
            frames.reset()
            topic.last_sent_ms = -1
            frames.deliver(topic.subs)
