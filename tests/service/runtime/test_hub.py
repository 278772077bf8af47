"""The hub's delivery counters behind /metrics: coalesced and dropped updates survive
the clients that produced them."""

from __future__ import annotations

from service.core.models import Bar
from service.core.resolution import parse_resolution
from service.runtime.hub import Client, Hub, Subscription


def bar(t: int, close: float = 1.0) -> Bar:
    return Bar(t, 1.0, 1.0, 1.0, close, 1.0)


async def test_coalesced_and_dropped_updates_are_counted_and_kept_after_unregister():
    hub = Hub(history=None, clock_ms=lambda: 0)  # type: ignore[arg-type]
    a, b = Client(queue_max=2, name="a"), Client(queue_max=2, name="b")
    hub.register(a)
    hub.register(b)
    sub_a = Subscription("x", ("BTCUSD", parse_resolution("1")), a)
    a.subs["x"] = sub_a
    for close in (1.0, 2.0, 3.0):  # three updates of the open bar before a send: two replaced
        a.offer_bar(sub_a, bar(60_000, close), False)
    frames = a.take()
    assert len(frames) == 1 and b'"close":3.0' in frames[0]
    a.offer_bar(sub_a, bar(0), True)  # older than what was sent: never sent
    assert a.take() == []
    assert (hub.updates_coalesced, hub.updates_dropped) == (2, 1)

    sub_b = Subscription("y", ("BTCUSD", parse_resolution("1")), b)
    b.subs["y"] = sub_b
    for t in (0, 60_000, 120_000):  # a third closed bar overflows queue_max=2: cut off
        b.offer_bar(sub_b, bar(t), True)
    assert b.cut_reason is not None
    b.offer_bar(sub_b, bar(180_000), False)  # after the cut: dropped
    hub.unregister(b)  # the queued closed bars are dropped with the client
    hub.unregister(a)
    hub.unregister(a)  # twice is harmless and counts nothing twice
    assert hub.clients == set()
    assert hub.updates_coalesced == 2
    assert hub.updates_dropped == 1 + 1 + 3
    assert hub.clients_cut == 1
