"""Live bars from a core hub to an edge through a real NATS server (``tests/nats_server.py``):
:class:`BrokerBridge` on the core side, :class:`NatsUpstream` under an :class:`EdgeHub`."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
import pytest
from nats.aio.client import Client as NatsClient

from service.core.models import TradeColumns
from service.core.resolution import parse_resolution
from service.edge import nats as edge_nats
from service.edge.hub import EdgeHub
from service.edge.nats import NatsUpstream
from service.runtime.broker import BrokerBridge, subject_for, topic_for
from service.runtime.fanout import PROTOCOL_V1, PROTOCOL_V2, Client
from service.runtime.history import SymbolSet
from service.runtime.hub import Hub
from tests.nats_server import NatsServer, nats_server_binary_or_skip

NOW = 1_700_000_000_000  # the core's clock: every trade lands in the bars open at this time
LEASE_S = 0.6  # renewed every 0.2 s
SYMBOLS = ("BTCUSD", "ETH.USD")


async def until(check: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Inbox:
    """The frames an outbox client got, in order, read as they come."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.frames: list[bytes] = []
        self._read = 0

    def _collect(self) -> None:
        self.client.wake.clear()
        self.frames += self.client.take()

    async def next(self, match: Callable[[dict[str, Any]], bool] = lambda m: True, timeout_s: float = 5.0) -> bytes:
        """The next frame (after the last one returned) that ``match``es."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._collect()
            while self._read < len(self.frames):
                frame = self.frames[self._read]
                self._read += 1
                if match(json.loads(frame)):
                    return frame
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [f.decode() for f in self.frames]
                raise AssertionError(f"no matching frame in {timeout_s}s; got {seen}")
            try:
                await asyncio.wait_for(self.client.wake.wait(), left)
            except TimeoutError:
                pass

    def rest(self) -> list[dict[str, Any]]:
        self._collect()
        out = [json.loads(f) for f in self.frames[self._read :]]
        self._read = len(self.frames)
        return out


def bar_of(topic: str, close: float | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["type"] == "bar" and m["topic"] == topic and (close is None or m["bar"]["close"] == close)


_ns = itertools.count(NOW * 1_000_000)  # unique, increasing trade times (as ingest makes them)


def trades(symbol: str, *prices: float) -> TradeColumns:
    n = len(prices)
    return TradeColumns(
        symbol,
        np.array([next(_ns) for _ in prices], dtype=np.int64),
        np.array(prices, dtype=np.float64),
        np.ones(n, dtype=np.float64),
    )


class Core:
    def __init__(self, url: str) -> None:
        async def no_history(*_: Any) -> tuple[list[Any], int]:
            return [], 0

        self.hub = Hub(no_history, lambda: NOW)
        self.bridge = BrokerBridge(
            self.hub, url, require_symbol=SymbolSet(SYMBOLS).require, lease_s=LEASE_S, reconnect_wait_s=0.1
        )
        self.seq = 0

    def publish(self, *batches: TradeColumns) -> None:
        self.seq += 1
        self.hub.publish(list(batches), self.seq)


class Edge:
    def __init__(self, url: str) -> None:
        self.upstream = NatsUpstream(url, lease_s=LEASE_S, request_timeout_s=1.0, reconnect_wait_s=0.1)
        self.hub = EdgeHub(self.upstream)

    async def client(self, topic: str, version: int = PROTOCOL_V2, sub_id: str | None = None) -> Inbox:
        client = Client(f"test:{topic}", version=version)
        self.hub.register(client)
        symbol, _, resolution = topic.rpartition("@")
        await self.hub.subscribe(client, sub_id or topic, symbol, parse_resolution(resolution))
        return Inbox(client)


@pytest.fixture
def nats(tmp_path: Any) -> Iterator[NatsServer]:
    server = NatsServer(nats_server_binary_or_skip(), tmp_path).start()
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture
async def core(nats: NatsServer) -> AsyncIterator[Core]:
    core = Core(nats.url)
    await core.bridge.start()
    await until(lambda: core.bridge.connected, what="the bridge to connect")
    yield core
    await core.bridge.close()


@pytest.fixture
async def edge(nats: NatsServer, core: Core) -> AsyncIterator[Edge]:
    edge = Edge(nats.url)
    await edge.upstream.start()
    await until(lambda: edge.upstream.live, what="the edge to go live")
    yield edge
    await edge.upstream.close()


@pytest.fixture
async def tap(nats: NatsServer) -> AsyncIterator[Callable[[str], Any]]:
    """Raw NATS subscriptions: what the bridge publishes on a subject, byte for byte."""
    nc = NatsClient()
    await nc.connect(nats.url)
    got: dict[str, list[bytes]] = {}

    async def listen(subject: str) -> list[bytes]:
        frames = got.setdefault(subject, [])

        async def cb(msg: Any) -> None:
            frames.append(msg.data)

        await nc.subscribe(subject, cb=cb)
        await nc.flush()
        return frames

    yield listen
    await nc.close()


def test_subjects_escape_symbols_reversibly() -> None:
    for symbol in ("BTCUSD", "ETH.USD", "a:b/c-d_e", "X.Y.Z", "odd~2Esym", "ü*> x"):
        topic = f"{symbol}@1S"
        subject = subject_for("tvflux", topic)
        tokens = subject.split(".")
        assert tokens[:2] == ["tvflux", "bar"] and len(tokens) == 4, subject
        assert all(token and not set(token) & set("*> \t") for token in tokens), subject
        assert topic_for("tvflux", subject) == topic
    assert subject_for("tvflux", "ETH.USD@1") == "tvflux.bar.ETH~2EUSD.1"
    assert subject_for("a.b", "BTC/USD:X@1D") == "a.b.bar.BTC/USD:X.1D"
    with pytest.raises(ValueError):
        BrokerBridge(None, "nats://x", require_symbol=lambda s: None, prefix="bad.*")  # type: ignore[arg-type]


async def test_edge_clients_get_the_bytes_the_bridge_published(core: Core, edge: Edge, tap: Any) -> None:
    published = await tap(subject_for("tvflux", "BTCUSD@1"))
    inbox = await edge.client("BTCUSD@1")
    await until(lambda: core.bridge.topics == ["BTCUSD@1"], what="the core to take the topic")
    assert core.hub.subscription_count == 1

    for price in (100.0, 101.5, 99.25):
        core.publish(trades("BTCUSD", price))
        await inbox.next(bar_of("BTCUSD@1", close=price))
    await until(lambda: len(published) == 3, what="the tap to see 3 frames")
    assert inbox.frames == published  # the core's encoding, passed on as it is
    last = json.loads(published[-1])
    assert last["bar"] | {"time": 0} == {
        "time": 0,
        "open": 100.0,
        "high": 101.5,
        "low": 99.25,
        "close": 99.25,
        "volume": 3.0,
    }
    assert core.bridge.published >= 3 and core.bridge.publish_errors == 0

    # a second edge, to a topic the core already holds: its first frame is the open bar,
    # from the answer to its interest request, encoded as the hub encodes it
    other = Edge(edge.upstream.url)
    await other.upstream.start()
    try:
        await until(lambda: other.upstream.live, what="a second edge to go live")
        late = await other.client("BTCUSD@1")
        assert await late.next() == published[-1]
        assert core.hub.subscription_count == 1  # one hub subscription per topic, whatever the edges
    finally:
        await other.upstream.close()


async def test_topics_stay_separate_and_v1_clients_get_v1(core: Core, edge: Edge, tap: Any) -> None:
    eth_published = await tap("tvflux.bar.ETH~2EUSD.1S")
    btc = await edge.client("BTCUSD@1")
    eth = await edge.client("ETH.USD@1S")
    eth_v1 = await edge.client("ETH.USD@1S", version=PROTOCOL_V1, sub_id="chart-7")
    await until(lambda: sorted(core.bridge.topics) == ["BTCUSD@1", "ETH.USD@1S"], what="both topics")

    core.publish(trades("BTCUSD", 50.0), trades("ETH.USD", 3.0))
    core.publish(trades("ETH.USD", 3.5))
    await btc.next(bar_of("BTCUSD@1", close=50.0))
    eth_frame = await eth.next(bar_of("ETH.USD@1S", close=3.5))
    v1 = await eth_v1.next(lambda m: m["type"] == "bar" and m["bar"]["close"] == 3.5)
    await asyncio.sleep(0.1)  # anything stray would have arrived by now

    assert all(m["topic"] == "BTCUSD@1" for m in btc.rest())
    assert [json.loads(f)["topic"] for f in eth.frames] == ["ETH.USD@1S"] * len(eth.frames)
    assert eth.frames == eth_published
    assert all(b"BTCUSD" not in f for f in eth_v1.frames)
    message = json.loads(v1)
    assert message == {"type": "bar", "id": "chart-7", "bar": json.loads(eth_frame)["bar"], "closed": False}


async def test_the_core_refuses_bad_topics_in_its_answer(core: Core, nats: NatsServer) -> None:
    nc = NatsClient()
    await nc.connect(nats.url)
    try:
        msg = await nc.request(
            "tvflux.interest", b'{"topics":["NOPE@1","BTCUSD@7","BTCUSD@D","BTCUSD","BTCUSD@1"]}', timeout=2
        )
        reply = json.loads(msg.data)
        assert reply["frames"] == []  # BTCUSD@1 was taken just now: its open bar (none yet) goes on the subject
        assert sorted(reply["errors"]) == ["BTCUSD", "BTCUSD@7", "BTCUSD@D", "NOPE@1"]
        assert "unknown symbol" in reply["errors"]["NOPE@1"]
        assert "BTCUSD@1D" in reply["errors"]["BTCUSD@D"]  # the canonical spelling is asked for
        assert core.bridge.topics == ["BTCUSD@1"]

        core.publish(trades("BTCUSD", 7.0))
        await asyncio.sleep(0.05)
        msg = await nc.request("tvflux.interest", b'{"topics":["BTCUSD@1"]}', timeout=2)
        frames = json.loads(msg.data)["frames"]
        assert [json.loads(f)["bar"]["close"] for f in frames] == [7.0]
        msg = await nc.request("tvflux.interest", b"not json", timeout=2)
        assert "bad interest request" in json.loads(msg.data)["errors"][""]
    finally:
        await nc.close()


async def test_a_large_interest_is_asked_in_chunks(core: Core, edge: Edge, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edge_nats, "ASK_CHUNK", 1)  # a NATS message holds 1 MB: thousands of topics are split
    await edge.client("BTCUSD@1")
    await edge.client("ETH.USD@1S")
    await until(lambda: len(core.bridge.topics) == 2, what="both topics")
    core.publish(trades("BTCUSD", 1.0), trades("ETH.USD", 2.0))
    await asyncio.sleep(0.05)
    requests = core.bridge.requests
    reply = await edge.upstream._ask(["BTCUSD@1", "ETH.USD@1S", "NOPE@1"], snapshot=True)
    assert core.bridge.requests == requests + 3
    assert sorted(json.loads(f)["bar"]["close"] for f in reply.frames) == [1.0, 2.0]
    assert list(reply.errors) == ["NOPE@1"] and reply.core == core.bridge.session


async def test_a_topic_no_edge_renews_is_given_back_to_the_hub(core: Core, edge: Edge) -> None:
    await edge.client("BTCUSD@1")
    await until(lambda: core.bridge.topics == ["BTCUSD@1"], what="the core to take the topic")
    await asyncio.sleep(LEASE_S * 2.5)  # renewed meanwhile
    assert core.bridge.topics == ["BTCUSD@1"] and core.hub.subscription_count == 1

    client = next(iter(edge.hub.clients))
    started = time.monotonic()
    assert edge.hub.unsubscribe(client, "BTCUSD@1")
    await until(lambda: core.hub.subscription_count == 0, timeout_s=LEASE_S * 4, what="the lease to run out")
    assert time.monotonic() - started >= LEASE_S * 0.5  # a lease, not an unsubscribe message
    assert core.bridge.topics == [] and core.bridge.expired == 1
    assert not any(c.name.startswith("broker:") for c in core.hub.clients)


async def test_broker_outage_and_return(core: Core, edge: Edge, nats: NatsServer) -> None:
    inbox = await edge.client("BTCUSD@1")
    await until(lambda: core.bridge.topics == ["BTCUSD@1"], what="the core to take the topic")
    core.publish(trades("BTCUSD", 10.0))
    await inbox.next(bar_of("BTCUSD@1", close=10.0))

    nats.stop()
    lost = json.loads(await inbox.next(lambda m: m["type"] == "status"))
    assert lost["live"] is False and "broker" in lost["reason"]
    assert not edge.upstream.live
    await until(lambda: not core.bridge.connected, what="the bridge to notice")
    assert core.bridge.error is not None

    # the hub keeps pushing; the bridge drops and counts, and never holds it up
    errors = core.bridge.publish_errors
    started = time.perf_counter()
    core.publish(trades("BTCUSD", 11.0))
    await asyncio.sleep(0.05)  # the push runs
    assert time.perf_counter() - started < 0.5
    assert core.bridge.publish_errors == errors + 1

    nats.start()  # same port
    back = json.loads(await inbox.next(lambda m: m["type"] == "status", timeout_s=10))
    assert back == {"type": "status", "live": True}
    assert json.loads(await inbox.next()) == {"type": "reset", "topic": "BTCUSD@1"}
    assert core.bridge.connected and core.bridge.error is None
    # the open bar as the core has it now, then the live bars again
    assert json.loads(await inbox.next())["bar"]["close"] == 11.0
    core.publish(trades("BTCUSD", 12.0))
    await inbox.next(bar_of("BTCUSD@1", close=12.0))


async def test_a_restarted_core_resets_the_edges_clients(core: Core, edge: Edge, nats: NatsServer) -> None:
    inbox = await edge.client("BTCUSD@1")
    await until(lambda: core.bridge.topics == ["BTCUSD@1"], what="the core to take the topic")
    await core.bridge.close()

    new = Core(nats.url)  # a new process: new hub, new session
    await new.bridge.start()
    try:
        # the new bridge announces itself; the edge asks it for its topics and resets its clients
        assert json.loads(await inbox.next(lambda m: m["type"] == "status"))["live"] is False
        assert json.loads(await inbox.next(lambda m: m["type"] == "status"))["live"] is True
        assert json.loads(await inbox.next()) == {"type": "reset", "topic": "BTCUSD@1"}
        await until(lambda: new.bridge.topics == ["BTCUSD@1"], what="the new core to take the topic")
        new.publish(trades("BTCUSD", 20.0))
        await inbox.next(bar_of("BTCUSD@1", close=20.0))
    finally:
        await new.bridge.close()


async def test_starting_with_the_broker_down(tmp_path: Any) -> None:
    nats = NatsServer(nats_server_binary_or_skip(), tmp_path)  # not started yet
    core, edge = Core(nats.url), Edge(nats.url)
    await core.bridge.start()
    await edge.upstream.start()
    try:
        await asyncio.sleep(0.3)
        assert not core.bridge.connected and "unreachable" in (core.bridge.error or "")
        assert not edge.upstream.live and "unreachable" in (edge.upstream.reason or "")
        nats.start()
        await until(lambda: core.bridge.connected and edge.upstream.live, what="both to connect")
        inbox = await edge.client("BTCUSD@1")
        await until(lambda: core.bridge.topics == ["BTCUSD@1"], what="the core to take the topic")
        core.publish(trades("BTCUSD", 5.0))
        await inbox.next(bar_of("BTCUSD@1", close=5.0))
    finally:
        await edge.upstream.close()
        await core.bridge.close()
        nats.stop(signal.SIGKILL)
