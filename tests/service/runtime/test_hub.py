"""The hub's pushes: coalesced per series, encoded once for every v2 subscriber, spliced
for v1 subscribers to exactly what the message models encode, never older than what was
pushed, and the counters behind /metrics."""

from __future__ import annotations

import asyncio

import msgspec
import numpy as np

from service.core.models import Bar, BarMessage, ResetMessage, TopicBar, TopicReset, TradeColumns
from service.core.resolution import parse_resolution
from service.runtime.fanout import PROTOCOL_V2, Client, topic_name
from service.runtime.hub import Hub

MINUTE = parse_resolution("1")
NOW_MS = 1_700_000_000_000 // 60_000 * 60_000 + 1_000  # a second into a minute
encode = msgspec.json.Encoder().encode


async def no_history(symbol, resolution, from_ms, to_ms):
    return [], 0


def trades(symbol: str, *points: tuple[int, float]) -> TradeColumns:
    ts = np.array([t * 1_000_000 for t, _ in points], dtype=np.int64)
    price = np.array([p for _, p in points], dtype=np.float64)
    return TradeColumns(symbol, ts, price, np.ones(len(points)))


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def make_hub(push_interval_ms: int = 0) -> Hub:
    return Hub(no_history, lambda: NOW_MS, push_interval_ms=push_interval_ms)


async def test_v2_subscribers_get_the_same_bytes_and_v1_the_models_encoding():
    hub = make_hub()
    v2a, v2b, v1 = Client("a", version=PROTOCOL_V2), Client("b", version=PROTOCOL_V2), Client("c")
    for client, sub_id in ((v2a, "x"), (v2b, "y"), (v1, "z")):
        hub.register(client)
        await hub.subscribe(client, sub_id, "BTCUSD", MINUTE)
    hub.publish([trades("BTCUSD", (NOW_MS, 10.0), (NOW_MS + 1, 12.0))], seq=1)
    await settle()
    got_a, got_b, got_v1 = v2a.take(), v2b.take(), v1.take()
    want = Bar(NOW_MS // 60_000 * 60_000, 10.0, 12.0, 10.0, 12.0, 2.0)
    assert got_a == [encode(TopicBar(topic_name(("BTCUSD", MINUTE)), want, False))]
    assert got_a[0] is got_b[0]  # encoded once, the very same object written to both
    assert got_v1 == [encode(BarMessage("z", want, False))]
    hub.reset_symbol("BTCUSD")
    await settle()
    assert v2a.take() == [encode(TopicReset("BTCUSD@1"))]
    assert v1.take() == [encode(ResetMessage("z"))]


async def test_one_copy_per_v2_connection_whatever_its_ids_on_a_topic():
    hub = make_hub()
    client = Client("a", version=PROTOCOL_V2)
    hub.register(client)
    await hub.subscribe(client, "x", "BTCUSD", MINUTE)
    await hub.subscribe(client, "y", "BTCUSD", MINUTE)
    hub.publish([trades("BTCUSD", (NOW_MS, 10.0))], seq=1)
    await settle()
    assert len(client.take()) == 1
    assert hub.subscription_count == 2
    hub.unsubscribe(client, "x")
    hub.publish([trades("BTCUSD", (NOW_MS + 5, 11.0))], seq=2)
    await settle()
    assert len(client.take()) == 1  # "y" still holds the topic


async def test_updates_within_a_push_interval_are_coalesced_closed_bars_kept():
    hub = make_hub(push_interval_ms=200)
    client = Client("a", version=PROTOCOL_V2)
    hub.register(client)
    await hub.subscribe(client, "x", "BTCUSD", MINUTE)
    hub.publish([trades("BTCUSD", (NOW_MS, 1.0))], seq=1)
    await asyncio.sleep(0.25)
    assert len(client.take()) == 1  # within one interval
    for i, price in enumerate((2.0, 3.0, 4.0)):  # within the next interval: one push
        hub.publish([trades("BTCUSD", (NOW_MS + 10 + i, price))], seq=2 + i)
    next_minute = NOW_MS // 60_000 * 60_000 + 60_000
    hub.publish([trades("BTCUSD", (next_minute + 5, 5.0))], seq=9)  # closes the first bar
    await settle()
    assert client.take() == []  # not before an interval has passed since the last push
    await asyncio.sleep(0.25)
    frames = [msgspec.json.decode(f) for f in client.take()]
    assert [(f["closed"], f["bar"]["close"]) for f in frames] == [(True, 4.0), (False, 5.0)]
    assert hub.updates_coalesced == 2  # 2.0 and 3.0 were replaced before a push


async def test_a_new_subscriber_gets_the_open_bar_and_nothing_older_from_the_pending_push():
    hub = make_hub(push_interval_ms=200)
    old = Client("old", version=PROTOCOL_V2)
    hub.register(old)
    await hub.subscribe(old, "x", "BTCUSD", MINUTE)
    hub.publish([trades("BTCUSD", (NOW_MS, 1.0))], seq=1)
    await settle()
    old.take()
    next_minute = NOW_MS // 60_000 * 60_000 + 60_000
    hub.publish([trades("BTCUSD", (NOW_MS + 1, 2.0)), trades("BTCUSD", (next_minute + 1, 3.0))], seq=2)
    new = Client("new", version=PROTOCOL_V2)
    hub.register(new)
    await hub.subscribe(new, "y", "BTCUSD", MINUTE)
    first = [msgspec.json.decode(f) for f in new.take()]
    assert [(f["bar"]["time"], f["closed"]) for f in first] == [(next_minute, False)]
    await asyncio.sleep(0.3)
    later = [msgspec.json.decode(f) for f in new.take()]
    assert all(f["bar"]["time"] >= next_minute for f in later), later  # not the closed bar before it
    assert [(f["bar"]["time"], f["closed"]) for f in (msgspec.json.decode(f) for f in old.take())] == [
        (next_minute - 60_000, True),
        (next_minute, False),
    ]


async def test_a_client_that_stops_reading_is_cut_off_and_counted_after_it_is_gone():
    hub = make_hub()
    unsent = {"bytes": 0}

    def write(frame: bytes) -> int:  # a transport that never drains
        unsent["bytes"] += len(frame)
        return unsent["bytes"]

    slow = Client("slow", version=PROTOCOL_V2, write=write, buffer_max_bytes=4096)
    fast = Client("fast", version=PROTOCOL_V2)
    for client, sub_id in ((slow, "x"), (fast, "y")):
        hub.register(client)
        await hub.subscribe(client, sub_id, "BTCUSD", MINUTE)
    minute = NOW_MS // 60_000 * 60_000
    for i in range(60):  # a closed bar each: every push carries two frames
        hub.publish([trades("BTCUSD", (minute + i * 60_000 + 1, 1.0 + i))], seq=i + 1)
        await settle()
    assert slow.cut_reason is not None and "4096 bytes" in slow.cut_reason
    assert fast.cut_reason is None and len(fast.take()) >= 100  # nobody else waited
    sent_before = hub.frames_sent
    hub.unregister(slow)
    hub.unregister(slow)  # twice is harmless and counts nothing twice
    assert hub.clients_cut == 1
    assert hub.frames_sent == sent_before
    assert hub.updates_dropped > 0


async def test_series_push_on_grids_of_their_own_so_they_do_not_push_in_step():
    phases = iter([0.1, 0.6])
    clock = {"s": 100.0}
    hub = Hub(
        no_history, lambda: NOW_MS, push_interval_ms=400, clock_s=lambda: clock["s"], stagger=lambda: next(phases)
    )
    early, late = Client("early", version=PROTOCOL_V2), Client("late", version=PROTOCOL_V2)
    for client, symbol in ((early, "BTCUSD"), (late, "ETHUSD")):
        hub.register(client)
        await hub.subscribe(client, "x", symbol, MINUTE)
    # both change at the same instant (t = 100.0 s: 100.0 mod 0.4 = 0): BTCUSD's grid is at
    # 0.04 s past each 0.4 s, ETHUSD's at 0.24 s
    hub.publish([trades("BTCUSD", (NOW_MS, 1.0)), trades("ETHUSD", (NOW_MS, 2.0))], seq=1)
    await asyncio.sleep(0.15)
    assert len(early.take()) == 1 and late.take() == []
    await asyncio.sleep(0.2)
    assert len(late.take()) == 1


async def test_a_busy_series_pushes_every_interval_not_every_other():
    hub = make_hub(push_interval_ms=100)
    client = Client("a", version=PROTOCOL_V2)
    hub.register(client)
    await hub.subscribe(client, "x", "BTCUSD", MINUTE)
    client.take()
    for i in range(50):  # a trade every 20 ms for 1 s
        hub.publish([trades("BTCUSD", (NOW_MS + i, 1.0 + i))], seq=i + 1)
        await asyncio.sleep(0.02)
    pushes = len(client.take())
    assert 8 <= pushes <= 11, pushes  # once per 100 ms (timer lateness must not skip a grid point)


async def test_a_reset_comes_after_the_bars_of_its_push():
    """Late trades for a bar that closed in the same push interval: that closed bar lacks
    them, so the reset that announces them must come after it (the client refetches last)."""
    hub = make_hub(push_interval_ms=200)
    client = Client("a", version=PROTOCOL_V2)
    hub.register(client)
    await hub.subscribe(client, "x", "BTCUSD", MINUTE)
    minute = NOW_MS // 60_000 * 60_000
    hub.publish([trades("BTCUSD", (minute + 1, 1.0))], seq=1)
    await asyncio.sleep(0.25)
    client.take()
    hub.publish([trades("BTCUSD", (minute + 60_000 + 1, 2.0))], seq=2)  # closes the first minute
    hub.publish([trades("BTCUSD", (minute + 2, 3.0))], seq=3)  # late: for the closed minute
    await asyncio.sleep(0.25)
    kinds = [(m["type"], m.get("closed")) for m in (msgspec.json.decode(f) for f in client.take())]
    assert kinds == [("bar", True), ("bar", False), ("reset", None)]


async def test_a_removed_symbol_ends_every_subscription_with_an_error_even_one_still_loading():
    import pytest

    from service.core.errors import UnknownSymbol
    from service.core.models import ErrorBody, ErrorMessage

    loading = asyncio.Event()
    release = asyncio.Event()

    async def history(symbol, resolution, from_ms, to_ms):
        if resolution.text == "1S":
            loading.set()
            await release.wait()
        return [], 0

    hub = Hub(history, lambda: NOW_MS)
    live, waiting = Client("a"), Client("b", version=PROTOCOL_V2)
    hub.register(live)
    hub.register(waiting)
    await hub.subscribe(live, "x", "BTCUSD", MINUTE)
    pending = asyncio.create_task(hub.subscribe(waiting, "y", "BTCUSD", parse_resolution("1S")))
    await loading.wait()
    error = ErrorBody("unknown_symbol", "symbol 'BTCUSD' was removed")
    assert hub.drop_symbol("BTCUSD", error) == 1
    assert live.take() == [encode(ErrorMessage(error, id="x"))] and not live.subs
    release.set()
    with pytest.raises(UnknownSymbol, match="was removed"):
        await pending  # the caller answers it with an error for its id
    assert not waiting.subs and hub.subscription_count == 0
    hub.publish([trades("BTCUSD", (NOW_MS, 10.0))], seq=1)
    await settle()
    assert live.take() == [] and waiting.take() == []
