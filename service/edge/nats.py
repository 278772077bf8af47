"""An edge's live bars from a NATS broker (``tvflux edge --broker``): the core's frames,
byte for byte. The subjects, the interest messages and the connection are shared with the
core's bridge in :mod:`service.runtime.broker`, which says how the two sides keep in step."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from service.core.models import ErrorBody
from service.edge.upstream import Upstream
from service.runtime.broker import (
    NATS_ERRORS,
    InterestReply,
    InterestRequest,
    TaskSet,
    check_prefix,
    connect_nats,
    decode_frame_topic,
    decode_hello,
    decode_reply,
    describe_error,
    encode,
    subject_for,
)

log = logging.getLogger(__name__)


ASK_CHUNK = 2000  # topics per interest request


class NatsUpstream(Upstream):
    """An edge's live bars from the broker: the core's frames, byte for byte."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tvflux",
        lease_s: float = 15.0,
        request_timeout_s: float = 5.0,
        reconnect_wait_s: float = 1.0,
        name: str = "tvflux-edge",
    ) -> None:
        super().__init__()
        self.url = self.source = url
        self.prefix = check_prefix(prefix)
        self.lease_s = lease_s
        self.request_timeout_s = request_timeout_s
        self.reconnect_wait_s = reconnect_wait_s
        self.name = name
        self.topics: set[str] = set()
        self.core: str | None = None  # the core's session we are in step with
        self.errors: dict[str, str] = {}  # topics the core refused, and why
        self._subs: dict[str, NatsSubscription] = {}
        self._sub_lock = asyncio.Lock()
        self._asking: set[str] = set()
        self._nc: NatsClient | None = None
        self._closing = False
        self._want_wake = asyncio.Event()
        self._sync_wake = asyncio.Event()
        self._main: list[asyncio.Task[None]] = []
        self._tasks = TaskSet()

    # --- Upstream --------------------------------------------------------------------------

    async def start(self) -> None:
        self._main = [
            asyncio.create_task(self._run(), name="nats-upstream"),
            asyncio.create_task(self._want_loop(), name="nats-upstream-want"),
            asyncio.create_task(self._sync_loop(), name="nats-upstream-sync"),
            asyncio.create_task(self._renew_loop(), name="nats-upstream-renew"),
        ]

    def want(self, topic: str) -> None:
        self.topics.add(topic)
        self._asking.add(topic)
        self._want_wake.set()

    def drop(self, topic: str) -> None:
        self.topics.discard(topic)
        self._asking.discard(topic)
        self.errors.pop(topic, None)
        self._want_wake.set()

    async def close(self) -> None:
        self._closing = True
        for task in self._main:
            task.cancel()
        for task in self._main:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._tasks.cancel()
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 5)

    # --- connection ---------------------------------------------------------------------------

    async def _run(self) -> None:
        self.reason = f"connecting to the broker at {self.url}"
        nc = await connect_nats(
            self.url, self.name, self.reconnect_wait_s, self._on_error, self._on_disconnected, self._on_reconnected
        )
        self._nc = nc
        try:
            await nc.subscribe(f"{self.prefix}.hello", cb=self._on_hello)
        except NATS_ERRORS as exc:  # only a closed client refuses; the renewals still notice a new core
            log.error("broker: could not subscribe %s.hello: %s", self.prefix, describe_error(exc))
        self._on_reconnected()

    @property
    def _connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def _on_error(self, exc: Exception) -> None:
        if not self.live and not self._connected:
            self._set_live(False, f"broker unreachable at {self.url}: {describe_error(exc)}")
        log.debug("broker client error: %s", describe_error(exc))

    def _on_disconnected(self) -> None:
        if not self._closing:
            self._set_live(False, f"broker connection lost ({self.url})")

    def _on_reconnected(self) -> None:
        self._resync(None)

    async def _on_hello(self, msg: Msg) -> None:
        try:
            hello = decode_hello(msg.data)
        except msgspec.DecodeError:
            return
        if hello.core != self.core:
            self._resync("the core reconnected to the broker or restarted: live bars may have been missed")

    def _resync(self, reason: str | None) -> None:
        """Ask for every topic again, then go live (the edge resets its subscribers)."""
        if reason is not None:
            self._set_live(False, reason)
        self._sync_wake.set()

    # --- subjects -------------------------------------------------------------------------

    async def _reconcile(self, nc: NatsClient) -> None:
        """Subscribe the subject of every wanted topic, unsubscribe the others."""
        async with self._sub_lock:
            for topic in list(self.topics):
                if topic not in self._subs and topic in self.topics:
                    self._subs[topic] = await nc.subscribe(subject_for(self.prefix, topic), cb=self._receiver(topic))
            for topic in [t for t in self._subs if t not in self.topics]:
                sub = self._subs.pop(topic)
                with contextlib.suppress(*NATS_ERRORS):
                    await sub.unsubscribe()

    def _receiver(self, topic: str) -> Callable[[Msg], Coroutine[Any, Any, None]]:
        async def receive(msg: Msg) -> None:
            if topic in self.topics:
                self._deliver(topic, msg.data)

        return receive

    # --- interest -----------------------------------------------------------------------------

    async def _ask(self, topics: list[str], *, snapshot: bool) -> InterestReply:
        """One request per ``ASK_CHUNK`` topics (a NATS message holds 1 MB by default: an
        answer with a snapshot frame per topic must fit); their answers merged."""
        nc = self._nc
        if nc is None:
            raise nats.errors.ConnectionClosedError
        chunks = [topics[i : i + ASK_CHUNK] for i in range(0, len(topics), ASK_CHUNK)] or [[]]
        msgs = await asyncio.gather(
            *(
                nc.request(
                    f"{self.prefix}.interest", encode(InterestRequest(chunk, snapshot)), timeout=self.request_timeout_s
                )
                for chunk in chunks
            )
        )
        replies = [decode_reply(msg.data) for msg in msgs]
        reply = replies[0]
        if len(replies) > 1:
            reply = InterestReply(
                [f for r in replies for f in r.frames],
                {t: e for r in replies for t, e in r.errors.items()},
                replies[-1].core if all(r.core == replies[-1].core for r in replies) else "",
            )
        for topic in topics:
            error = reply.errors.get(topic)
            if error is None:
                self.errors.pop(topic, None)
            elif topic in self.topics:
                if self.errors.get(topic) != error:
                    log.warning("the core refused topic %s: %s", topic, error)
                self.errors[topic] = error
                # its subscribers are told and the topic ends (drop() forgets the error)
                self._refused(topic, ErrorBody("refused", error))
        return reply

    def _deliver_reply(self, reply: InterestReply) -> None:
        for text in reply.frames:
            frame = text.encode()
            topic = decode_frame_topic(frame).topic
            if topic in self.topics:
                self._deliver(topic, frame)

    async def _want_loop(self) -> None:
        while True:
            await self._want_wake.wait()
            self._want_wake.clear()
            nc = self._nc
            if nc is None or not nc.is_connected:
                continue  # the resync after the (re)connect asks for everything
            try:
                await self._reconcile(nc)
            except NATS_ERRORS as exc:
                log.debug("broker subscribe failed: %s", describe_error(exc))
                continue  # lost the broker meanwhile: the resync does it
            topics = [t for t in self._asking if t in self.topics]
            self._asking.clear()
            if topics:
                self._tasks.spawn(self._ask_new(topics), "nats-upstream-ask")

    async def _ask_new(self, topics: list[str]) -> None:
        try:
            reply = await self._ask(topics, snapshot=True)
        except (*NATS_ERRORS, msgspec.DecodeError) as exc:
            if self.live:
                self._resync(f"the core is not answering through the broker: {describe_error(exc)}")
            return
        if reply.core != self.core and self.live:
            self._resync("the core reconnected to the broker or restarted: live bars may have been missed")
            return
        self._deliver_reply(reply)

    async def _sync_loop(self) -> None:
        delay_s = 0.1
        while True:
            await self._sync_wake.wait()
            self._sync_wake.clear()
            nc = self._nc
            if nc is None or not nc.is_connected:
                continue  # the reconnect wakes us again
            try:
                await self._reconcile(nc)
                self._asking.clear()
                reply = await self._ask(sorted(self.topics), snapshot=True)
            except (*NATS_ERRORS, msgspec.DecodeError) as exc:
                self._set_live(False, f"the core is not answering through the broker: {describe_error(exc)}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._sync_wake.wait(), delay_s)  # a hello ends the wait
                delay_s = min(delay_s * 2, max(self.lease_s / 3, 0.5))
                self._sync_wake.set()
                continue
            if self._sync_wake.is_set():
                continue  # asked to start over meanwhile: this answer may predate that
            delay_s = 0.1
            self.core = reply.core
            self._set_live(True)  # the edge sends status and a reset of every topic...
            self._deliver_reply(reply)  # ...then the open bars

    async def _renew_loop(self) -> None:
        every_s = max(self.lease_s / 3, 0.02)
        while True:
            await asyncio.sleep(every_s)
            if not self.live or self._sync_wake.is_set():
                continue
            try:
                reply = await self._ask(sorted(self.topics), snapshot=False)
            except (*NATS_ERRORS, msgspec.DecodeError) as exc:
                if self.live:
                    self._resync(f"the core is not answering through the broker: {describe_error(exc)}")
                continue
            if reply.core != self.core and self.live:
                self._resync("the core reconnected to the broker or restarted: live bars may have been missed")
