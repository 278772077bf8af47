"""Live bars across hosts through a NATS broker.

Core side, :class:`BrokerBridge`: edges ask for topics on ``<prefix>.interest``
(request/reply); for each topic the bridge holds one hub subscription whose frames — the
hub's v2 bytes, encoded once — are published as they are on the topic's subject
``<prefix>.bar.<symbol, escaped>.<resolution>`` (:func:`subject_for`). Interest is a lease:
a topic nobody renewed for ``lease_s`` is given back to the hub.

Edge side, :class:`service.edge.nats.NatsUpstream`: subscribes a topic's subject *before*
asking for it, so nothing published after the answer is missed; renews every wanted topic
in one request every ``lease_s / 3``. The subjects, messages and connection are here, for
both sides.

Every answer names the core's broker *session* (a random id per bridge, and a count of
its connections to the broker). Frames published while the bridge had no connection are
lost, and a restarted core starts from nothing, so an edge that sees the session change —
in an answer, or announced on ``<prefix>.hello`` when the bridge (re)connects — treats it as
a lost upstream: not live, ask again for everything, live (its clients get a ``reset``).

Publishing never waits: the hub writes a frame from inside its push (synchronously), the
bridge appends it to its own queue, and one task hands the queue to the NATS client. Frames
offered while the broker is unreachable, or past ``max_queued_bytes``, are dropped and
counted (``publish_errors``); the edges reset their clients after the outage anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from service.core.errors import BadRequest, TvfluxError
from service.core.models import TopicBar
from service.core.resolution import parse_resolution
from service.runtime.fanout import PROTOCOL_V2, Client, TopicKey, split_topic, topic_name
from service.runtime.hub import Hub

log = logging.getLogger(__name__)

# --- subjects -----------------------------------------------------------------------------

# Kept as they are in a subject token; anything else is ``~`` + two hex digits per UTF-8
# byte. ``.`` separates tokens, ``*`` and ``>`` are wildcards, whitespace ends the subject,
# and ``~`` itself is escaped so the mapping is reversible.
_ESCAPE = re.compile(r"[^A-Za-z0-9_:/\-]")
_UNESCAPE = re.compile(r"~([0-9A-F]{2})")
_PREFIX = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


def escape_token(text: str) -> str:
    return _ESCAPE.sub(lambda m: "".join(f"~{b:02X}" for b in m.group().encode()), text)


def unescape_token(token: str) -> str:
    raw = _UNESCAPE.sub(lambda m: "\x00" + m.group(1), token)
    if "\x00" not in raw:
        return raw
    out = bytearray()
    parts = raw.split("\x00")
    out += parts[0].encode()
    for part in parts[1:]:
        out.append(int(part[:2], 16))
        out += part[2:].encode()
    return out.decode()


def subject_for(prefix: str, topic: str) -> str:
    """The subject a topic's frames are published on: ``<prefix>.bar.<symbol>.<resolution>``."""
    symbol, resolution = split_topic(topic)
    return f"{prefix}.bar.{escape_token(symbol)}.{escape_token(resolution)}"


def topic_for(prefix: str, subject: str) -> str:
    """The inverse of :func:`subject_for`."""
    head = f"{prefix}.bar."
    if not subject.startswith(head):
        raise ValueError(f"not a bar subject under {prefix!r}: {subject!r}")
    symbol, _, resolution = subject[len(head) :].partition(".")
    return f"{unescape_token(symbol)}@{unescape_token(resolution)}"


def check_prefix(prefix: str) -> str:
    if not _PREFIX.match(prefix):
        raise ValueError(f"broker subject prefix must be dot-separated tokens of [A-Za-z0-9_-], got {prefix!r}")
    return prefix


# --- messages on <prefix>.interest and <prefix>.hello ----------------------------------------


class InterestRequest(msgspec.Struct, frozen=True):
    topics: list[str]
    # False for a lease renewal: the edge already has the open bars
    snapshot: bool = True


class InterestReply(msgspec.Struct, frozen=True):
    # v2 bar frames (text) of the open bars of requested topics the bridge already held; a
    # topic it subscribed just now had its open bar published on its subject instead
    frames: list[str]
    errors: dict[str, str]
    core: str = ""  # the bridge's broker session: changes when frames may have been lost


class Hello(msgspec.Struct, frozen=True):
    core: str


class _FrameTopic(msgspec.Struct):
    topic: str


encode = msgspec.json.Encoder().encode
_decode_request = msgspec.json.Decoder(InterestRequest).decode
decode_reply = msgspec.json.Decoder(InterestReply).decode
decode_hello = msgspec.json.Decoder(Hello).decode
decode_frame_topic = msgspec.json.Decoder(_FrameTopic).decode

# What losing the broker looks like from the nats client (besides OSError)
NATS_ERRORS = (nats.errors.Error, TimeoutError, OSError)


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def connect_nats(
    url: str,
    name: str,
    reconnect_wait_s: float,
    on_error: Callable[[Exception], None],
    on_disconnected: Callable[[], None],
    on_reconnected: Callable[[], None],
    *,
    pending_size: int = 2 << 20,
) -> NatsClient:
    """Connect, retrying until it works (it never gives up, and never raises for an
    unreachable broker); reconnects forever afterwards, with the callbacks."""

    async def error_cb(exc: Exception) -> None:
        on_error(exc)

    async def disconnected_cb() -> None:
        on_disconnected()

    async def reconnected_cb() -> None:
        on_reconnected()

    delay_s = reconnect_wait_s
    while True:
        nc = NatsClient()
        try:
            await nc.connect(
                servers=[url],
                name=name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,  # also makes the first connect retry until it works
                reconnect_time_wait=reconnect_wait_s,  # type: ignore[arg-type]  # annotated int; sleeps a float
                connect_timeout=2,
                ping_interval=5,
                max_outstanding_pings=2,
                pending_size=pending_size,
                error_cb=error_cb,
                disconnected_cb=disconnected_cb,
                reconnected_cb=reconnected_cb,
            )
            return nc
        except Exception as exc:  # the client gave up after all: start over
            on_error(exc)
            with contextlib.suppress(Exception):
                await nc.close()
        await asyncio.sleep(delay_s * (0.5 + random.random()))
        delay_s = min(delay_s * 2, 10.0)


class TaskSet:
    """Short tasks that must not be garbage collected half-way and end on close."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def cancel(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


# --- core side --------------------------------------------------------------------------------


class Publisher:
    """Frames to publish, taken synchronously (:meth:`send` never waits and never raises)
    and handed to the NATS client by one task, in order. A frame is dropped and counted in
    ``errors`` when the client is not connected, or when ``max_queued_bytes`` wait already."""

    def __init__(self, *, max_queued_bytes: int = 8 << 20) -> None:
        self.nc: NatsClient | None = None
        self.connected = False
        self.max_queued_bytes = max_queued_bytes
        self.published = 0  # frames handed to the client (answers not counted)
        self.errors = 0
        self._queue: deque[tuple[str, bytes, bool]] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="broker-publisher")

    def send(self, subject: str, frame: bytes, *, counted: bool = True) -> int:
        if not self.connected or self._queued_bytes > self.max_queued_bytes:
            self.errors += counted
            return 0
        self._queue.append((subject, frame, counted))
        self._queued_bytes += len(frame)
        if not self._wake.is_set():
            self._wake.set()
        return 0  # the hub's fan-out never cuts the broker off: overflow is counted here

    async def _run(self) -> None:
        queue = self._queue
        while True:
            await self._wake.wait()
            self._wake.clear()
            while queue:
                subject, frame, counted = queue.popleft()
                self._queued_bytes -= len(frame)
                nc = self.nc
                if nc is None or not self.connected:
                    self.errors += counted
                    continue
                try:
                    # appends to the client's buffer; its flusher task writes the socket
                    # (this waits only when that buffer is full: a flush forced)
                    await nc.publish(subject, frame)
                except NATS_ERRORS as exc:
                    self.errors += counted
                    if not counted:
                        log.warning("broker: an answer to %s was not sent: %s", subject, describe_error(exc))
                else:
                    self.published += counted

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class _Held:
    __slots__ = ("topic", "key", "client", "expires_s", "ready")

    def __init__(self, topic: str, key: TopicKey, client: Client, expires_s: float) -> None:
        self.topic = topic
        self.key = key
        self.client = client
        self.expires_s = expires_s
        self.ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()  # error, or None


class BrokerBridge:
    """The core's end: answers interest requests, holds a hub subscription per topic wanted
    by some edge, and publishes its frames byte for byte."""

    def __init__(
        self,
        hub: Hub,
        url: str,
        *,
        require_symbol: Callable[[str], object],
        prefix: str = "tvflux",
        lease_s: float = 15.0,
        reconnect_wait_s: float = 1.0,
        max_queued_bytes: int = 8 << 20,
        name: str = "tvflux-core",
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.url = url
        self.prefix = check_prefix(prefix)
        self.lease_s = lease_s
        self.reconnect_wait_s = reconnect_wait_s
        self.name = name
        self._require_symbol = require_symbol
        self._clock_s = clock_s
        self.connected = False
        self.error: str | None = "not started"
        self.session = ""
        self._instance = secrets.token_hex(6)
        self._connections = 0
        self._held: dict[str, _Held] = {}
        self._publisher = Publisher(max_queued_bytes=max_queued_bytes)
        self._nc: NatsClient | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self._tasks = TaskSet()
        self.requests = 0
        self.expired = 0

    # --- metrics -------------------------------------------------------------------------

    @property
    def published(self) -> int:
        return self._publisher.published

    @property
    def publish_errors(self) -> int:
        return self._publisher.errors

    @property
    def topics(self) -> list[str]:
        return [h.topic for h in self._held.values() if h.ready.done() and h.ready.result() is None]

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connects in the background; returns at once, whether or not the broker is up."""
        self.error = f"connecting to the broker at {self.url}"
        self._publisher.start()
        self._run_task = asyncio.create_task(self._run(), name="broker-bridge")
        self._expiry_task = asyncio.create_task(self._expire_loop(), name="broker-leases")

    async def _run(self) -> None:
        nc = await connect_nats(
            self.url, self.name, self.reconnect_wait_s, self._on_error, self._on_disconnected, self._on_reconnected
        )
        self._nc = self._publisher.nc = nc
        try:
            await nc.subscribe(f"{self.prefix}.interest", cb=self._on_interest)
        except NATS_ERRORS as exc:  # closed under us: nothing to answer with
            self.error = f"could not subscribe {self.prefix}.interest: {describe_error(exc)}"
            log.error("broker: %s", self.error)
            return
        self._on_reconnected()

    async def close(self) -> None:
        for task in (self._run_task, self._expiry_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._tasks.cancel()
        await self._publisher.close()
        for held in list(self._held.values()):
            self._release(held)
        self.connected = self._publisher.connected = False
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 5)
        self.error = "closed"

    # --- broker state ----------------------------------------------------------------------

    def _on_error(self, exc: Exception) -> None:
        if not self.connected:
            self.error = f"broker unreachable at {self.url}: {describe_error(exc)}"
        log.debug("broker client error: %s", describe_error(exc))

    def _on_disconnected(self) -> None:
        if self.connected:
            log.warning("broker connection lost (%s): live bars are not reaching other hosts", self.url)
        self.connected = self._publisher.connected = False
        if self.error is None:
            self.error = f"broker connection lost ({self.url})"

    def _on_reconnected(self) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            return
        self._connections += 1
        self.session = f"{self._instance}.{self._connections}"
        self.connected = self._publisher.connected = True
        self.error = None
        log.info("broker connected (%s), session %s", self.url, self.session)
        # edges that hold topics: whatever was published meanwhile is lost, ask again
        self._publisher.send(f"{self.prefix}.hello", encode(Hello(self.session)), counted=False)

    # --- interest ----------------------------------------------------------------------------

    async def _on_interest(self, msg: Msg) -> None:
        # one task per request: a topic waiting for its history must not hold up the others
        self._tasks.spawn(self._answer(msg), "broker-interest")

    async def _answer(self, msg: Msg) -> None:
        self.requests += 1
        try:
            request = _decode_request(msg.data)
        except msgspec.DecodeError as exc:
            reply = InterestReply([], {"": f"bad interest request: {exc}"}, self.session)
        else:
            reply = await self.interest(request.topics, snapshot=request.snapshot)
        if msg.reply:
            # through the publisher's queue, so the answer leaves after every frame queued
            # before it: an edge never gets an open bar older than the snapshot after it
            self._publisher.send(msg.reply, encode(reply), counted=False)

    async def interest(self, topics: list[str], *, snapshot: bool = True) -> InterestReply:
        """Renew (or take) the lease of each topic. The answer has the open bars of the
        topics that were already held; a topic taken now has its open bar published on its
        subject (which the asking edge subscribed before asking), as does one that another
        request is taking meanwhile."""
        frames: list[str] = []
        errors: dict[str, str] = {}
        pending: list[tuple[str, asyncio.Future[str | None]]] = []
        expires_s = self._clock_s() + self.lease_s
        for topic in dict.fromkeys(topics):
            held = self._held.get(topic)
            if held is not None:
                try:  # a symbol removed since: its edges end the topic (its lease then runs out)
                    self._require_symbol(held.key[0])
                except TvfluxError as exc:
                    errors[topic] = exc.message
                    continue
            if held is None:
                try:
                    key = self._parse(topic)
                except TvfluxError as exc:
                    errors[topic] = exc.message
                    continue
                held = self._held[topic] = _Held(topic, key, self._client(topic), expires_s)
                self._tasks.spawn(self._take(held), "broker-take")
                pending.append((topic, held.ready))
            elif not held.ready.done():
                held.expires_s = expires_s
                pending.append((topic, held.ready))
            else:
                held.expires_s = expires_s
                if snapshot:
                    self._snapshot(held, frames)
        for topic, ready in pending:
            error = await asyncio.shield(ready)
            if error is not None:
                errors[topic] = error
        return InterestReply(frames, errors, self.session)

    def _parse(self, topic: str) -> TopicKey:
        symbol, text = split_topic(topic)
        resolution = parse_resolution(text)
        self._require_symbol(symbol)
        if topic_name((symbol, resolution)) != topic:
            raise BadRequest(f"topic {topic!r} must be spelled {topic_name((symbol, resolution))!r}")
        return symbol, resolution

    def _client(self, topic: str) -> Client:
        subject = subject_for(self.prefix, topic)
        return Client(
            name="broker:" + topic,
            version=PROTOCOL_V2,
            write=partial(self._publisher.send, subject),
            buffer_max_bytes=1 << 62,  # never cut: the publisher bounds and counts
        )

    async def _take(self, held: _Held) -> None:
        """Subscribe the hub; it sends the open bar at once, so it goes out on the subject.
        ``held.ready`` gets the error, or None."""
        error: str | None = "closing"
        self.hub.register(held.client)
        try:
            await self.hub.subscribe(held.client, held.topic, *held.key)
            error = None
        except TvfluxError as exc:
            error = exc.message
        except Exception as exc:  # a bug or an unexpected store failure: the edge asks again
            log.exception("broker: subscribing %s failed", held.topic)
            error = f"internal error: {describe_error(exc)}"
        finally:
            if error is not None:
                self.hub.unregister(held.client)
                if self._held.get(held.topic) is held:
                    del self._held[held.topic]  # not held: the next request tries again
            else:
                held.expires_s = max(held.expires_s, self._clock_s() + self.lease_s)
            held.ready.set_result(error)

    def _snapshot(self, held: _Held, frames: list[str]) -> None:
        bar = self.hub.open_bar(held.key)
        if bar is not None:
            frames.append(encode(TopicBar(held.topic, bar, False)).decode())

    def _release(self, held: _Held) -> None:
        self._held.pop(held.topic, None)
        self.hub.unsubscribe(held.client, held.topic)
        self.hub.unregister(held.client)

    async def _expire_loop(self) -> None:
        every_s = max(min(self.lease_s / 4, 5.0), 0.02)
        while True:
            await asyncio.sleep(every_s)
            self.expire()

    def expire(self) -> int:
        """Give back to the hub every topic whose lease ran out; returns how many."""
        now = self._clock_s()
        gone = [h for h in self._held.values() if h.ready.done() and h.expires_s < now]
        for held in gone:
            self._release(held)
        self.expired += len(gone)
        return len(gone)


# --- edge side ------------------------------------------------------------------------------
