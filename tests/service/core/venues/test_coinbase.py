"""Coinbase Advanced Trade's protocol (service/core/venues/coinbase.py). No public
recording of this feed exists (see data/README.md): the messages are written from
Coinbase's documented formats."""

from __future__ import annotations

import json

import pytest

from service.core.errors import VenueProtocolError
from service.core.venues.coinbase import FIRST_WINDOW_S, PAGE, Coinbase
from service.core.venues.common import Heartbeat, Instrument, Trades, VenueRefusal

coinbase = Coinbase()


def message(channel: str, events: list[dict], seq: int = 3) -> str:
    return json.dumps(
        {
            "channel": channel,
            "client_id": "",
            "timestamp": "2024-05-01T12:00:00.5Z",
            "sequence_num": seq,
            "events": events,
        }
    )


def trade(trade_id: str, product: str = "BTC-USD", price: str = "60123.45", size: str = "0.0012", t: str = "") -> dict:
    t = t or "2024-05-01T12:00:00.123456789Z"
    return {"trade_id": trade_id, "product_id": product, "price": price, "size": size, "side": "BUY", "time": t}


def test_market_trades_snapshot_and_update():
    snapshot = message("market_trades", [{"type": "snapshot", "trades": [trade("102"), trade("101"), trade("100")]}])
    (event,) = coinbase.parse(snapshot)
    assert isinstance(event, Trades) and event.venue_symbol == "BTC-USD"
    assert [t.id for t in event.trades] == [100, 101, 102]  # newest first on the wire, ascending here
    first = event.trades[0]
    assert (first.time_ms, first.price, first.size) == (1714564800123, 60123.45, 0.0012)
    mixed = message(
        "market_trades",
        [{"type": "update", "trades": [trade("7", "ETH-USD", "3000.1", "2", "2024-05-01T12:00:01Z"), trade("103")]}],
    )
    events = {e.venue_symbol: e for e in coinbase.parse(mixed)}
    assert set(events) == {"ETH-USD", "BTC-USD"} and events["ETH-USD"].trades[0].time_ms == 1714564801000


def test_heartbeats_subscriptions_and_errors():
    beat = message("heartbeats", [{"current_time": "2024-05-01 12:00:00.5 +0000 UTC", "heartbeat_counter": 42}])
    assert coinbase.parse(beat) == [Heartbeat()]
    assert coinbase.parse(message("subscriptions", [{"subscriptions": {"market_trades": ["BTC-USD"]}}])) == [
        Heartbeat()
    ]
    (refusal,) = coinbase.parse('{"type": "error", "message": "failure to subscribe"}')
    assert isinstance(refusal, VenueRefusal) and "failure to subscribe" in refusal.message
    assert coinbase.parse(message("ticker", [])) == []


@pytest.mark.parametrize(
    "bad",
    [trade("abc"), trade("1", price="1e3"), trade("1", t="2024-05-01"), {"trade_id": "1"}],
)
def test_malformed_trades_are_protocol_errors(bad):
    with pytest.raises(VenueProtocolError):
        coinbase.parse(message("market_trades", [{"type": "update", "trades": [bad]}]))


def test_subscribes_to_trades_and_heartbeats():
    messages = [json.loads(m) for m in coinbase.subscribe_messages(["BTC-USD", "ETH-USD"])]
    assert {"type": "subscribe", "channel": "heartbeats"} in messages
    assert {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "market_trades"} in messages


def ticker(ids: list[int], product: str = "BTC-USD") -> bytes:
    trades = [trade(str(i), product) for i in sorted(ids, reverse=True)]
    return json.dumps({"trades": trades, "best_bid": "1", "best_ask": "2"}).encode()


def test_backfill_walks_time_windows_narrowing_on_full_pages():
    instrument = Instrument("BTC-USD", "BTC-USD", "0.01", "0.00000001")
    now_ms = 1_714_564_800_000
    walk = coinbase.backfill(instrument, from_id=100, from_time_ms=now_ms - 600_000)
    req = walk.request(now_ms)
    start = (now_ms - 600_000) // 1000 - 1
    assert req.path == "/api/v3/brokerage/market/products/BTC-USD/ticker"
    assert req.params == {"limit": str(PAGE), "start": str(start), "end": str(start + FIRST_WINDOW_S)}
    assert walk.take(ticker(list(range(PAGE))), now_ms) == [] and not walk.exhausted  # full: too wide
    assert walk.request(now_ms).params["end"] == str(start + FIRST_WINDOW_S // 2)
    page = walk.take(ticker([100, 101, 102]), now_ms)
    assert [t.id for t in page] == [100, 101, 102] and not walk.exhausted
    nxt = walk.request(now_ms).params
    assert nxt["start"] == str(start + FIRST_WINDOW_S // 2) and int(nxt["end"]) - int(nxt["start"]) == FIRST_WINDOW_S
    while not walk.exhausted:
        walk.take(ticker([]), now_ms)
    assert int(walk.request(now_ms).params["start"]) > now_ms // 1000


def test_product_increments_and_latest():
    product = {
        "product_id": "BTC-USD",
        "price": "60000.01",
        "base_increment": "0.00000001",
        "quote_increment": "0.01",
        "price_increment": "0.01",
        "base_min_size": "0.00000001",
    }
    (req,) = coinbase.instruments_request(["BTC-USD"])
    assert req.path == "/api/v3/brokerage/market/products/BTC-USD"
    got = coinbase.parse_instruments([json.dumps(product).encode()], ["BTC-USD"])
    assert got == {"BTC-USD": Instrument("BTC-USD", "BTC-USD", "0.01", "0.00000001")}
    assert got["BTC-USD"].volume_precision == 8
    assert coinbase.parse_latest(ticker([5, 9, 7])) == 9
