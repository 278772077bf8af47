"""Kraken WebSocket v2 and REST (service/core/venues/kraken.py). Stream messages are
written from Kraken's documented formats (public recordings exist of v1 only); the
AssetPairs answer is one Kraken sent (see data/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.core.errors import VenueProtocolError
from service.core.venues.common import Heartbeat, Instrument, Trades, VenueRefusal
from service.core.venues.kraken import PAGE, Kraken, default_rest_pair, v2_name

kraken = Kraken()


def trade_message(*trades: dict, kind: str = "update") -> str:
    return json.dumps({"channel": "trade", "type": kind, "data": list(trades)})


def trade(trade_id: int, symbol: str = "BTC/USD", price: float | str = 64321.1, qty: float | str = 0.00012345) -> str:
    return {
        "symbol": symbol,
        "side": "sell",
        "price": price,
        "qty": qty,
        "ord_type": "market",
        "trade_id": trade_id,
        "timestamp": "2024-05-01T12:00:00.708706Z",
    }


def test_trade_snapshot_and_update_with_numeric_prices_read_exactly():
    (event,) = kraken.parse(trade_message(trade(10), trade(11, qty=40.0), kind="snapshot"))
    assert isinstance(event, Trades) and event.venue_symbol == "BTC/USD"
    first, second = event.trades
    assert (first.id, first.time_ms, first.price, first.size) == (10, 1714564800708, 64321.1, 0.00012345)
    assert second.size == 40.0
    # a JSON number is read as the decimal it spells, then rounded once
    (tiny,) = kraken.parse(trade_message(trade(12, price=0.1, qty=0.30000000000000004)))
    assert tiny.trades[0].price == 0.1 and tiny.trades[0].size == 0.30000000000000004
    two = kraken.parse(trade_message(trade(1, "ETH/USD"), trade(13)))
    assert {e.venue_symbol for e in two} == {"ETH/USD", "BTC/USD"}


def test_heartbeat_status_and_subscription_answers():
    assert kraken.parse('{"channel": "heartbeat"}') == [Heartbeat()]
    status = {"channel": "status", "type": "update", "data": [{"system": "online", "api_version": "v2"}]}
    assert kraken.parse(json.dumps(status)) == [Heartbeat()]
    ok = {"method": "subscribe", "result": {"channel": "trade", "symbol": "BTC/USD"}, "success": True}
    assert kraken.parse(json.dumps(ok)) == [Heartbeat()]
    refused = {"method": "subscribe", "success": False, "error": "Currency pair not supported BTC/USX"}
    (refusal,) = kraken.parse(json.dumps(refused))
    assert isinstance(refusal, VenueRefusal) and "BTC/USX" in refusal.message
    assert kraken.parse('{"method": "pong", "req_id": 1}') == [Heartbeat()]


@pytest.mark.parametrize("bad", [{**trade(1), "trade_id": "x"}, {**trade(1), "price": "abc"}, {"symbol": "BTC/USD"}])
def test_malformed_trades_are_protocol_errors(bad):
    with pytest.raises(VenueProtocolError):
        kraken.parse(trade_message(bad))


def test_subscribe_message():
    (msg,) = kraken.subscribe_messages(["BTC/USD", "ETH/USD"])
    sub = json.loads(msg)
    assert sub["method"] == "subscribe"
    assert sub["params"] == {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"], "snapshot": True}


def rest(rows: list[list], last: str = "1714564800708706000", pair: str = "XXBTZUSD", error=()) -> bytes:
    return json.dumps({"error": list(error), "result": {pair: rows, "last": last}}).encode()


def row(trade_id: int, t: float = 1714564800.708706) -> list:
    return ["64321.10000", "0.00012345", t, "s", "m", "", trade_id]


def test_backfill_pages_by_since_and_reads_rows_exactly():
    instrument = Instrument("BTC/USD", "XXBTZUSD", "0.1", "0.00000001")
    walk = kraken.backfill(instrument, from_id=100, from_time_ms=1_714_564_800_000)
    req = walk.request(0)
    assert req.path == "/0/public/Trades"
    assert req.params == {"pair": "XXBTZUSD", "since": str(1_714_564_799_000 * 1_000_000), "count": str(PAGE)}
    page = walk.take(rest([row(100 + i) for i in range(PAGE)], last="1714564801000000000"), 0)
    assert len(page) == PAGE and page[0].id == 100 and page[0].time_ms == 1714564800708
    assert (page[0].price, page[0].size) == (64321.1, 0.00012345) and not walk.exhausted
    assert walk.request(0).params["since"] == "1714564801000000000"
    assert walk.take(rest([row(1100)], last="1714564802000000000"), 0)[0].id == 1100 and walk.exhausted
    with pytest.raises(VenueProtocolError, match="EGeneral:Too many requests"):
        walk.take(rest([], error=["EGeneral:Too many requests"]), 0)


def test_rows_without_trade_ids_are_refused():
    walk = kraken.backfill(Instrument("BTC/USD", "XXBTZUSD", "0.1", "1"), from_id=1, from_time_ms=0)
    with pytest.raises(VenueProtocolError):
        walk.take(rest([["64321.1", "0.1", 1714564800.7, "s", "m", ""]]), 0)


def test_asset_pairs_map_v2_names_to_rest_pairs_and_increments():
    pairs = {
        "error": [],
        "result": {
            "XXBTZUSD": {
                "altname": "XBTUSD",
                "wsname": "XBT/USD",
                "pair_decimals": 1,
                "lot_decimals": 8,
                "tick_size": "0.1",
            },
            "XDGUSD": {"altname": "XDGUSD", "wsname": "XDG/USD", "pair_decimals": 7, "lot_decimals": 8},
            "XETHZUSD": {"altname": "ETHUSD", "wsname": "ETH/USD", "pair_decimals": 2, "lot_decimals": 8},
        },
    }
    got = kraken.parse_instruments([json.dumps(pairs).encode()], ["BTC/USD", "DOGE/USD"])
    assert got == {
        "BTC/USD": Instrument("BTC/USD", "XXBTZUSD", "0.1", "0.00000001"),
        "DOGE/USD": Instrument("DOGE/USD", "XDGUSD", "0.0000001", "0.00000001"),
    }
    assert got["BTC/USD"].pricescale == 10 and got["DOGE/USD"].pricescale == 10_000_000
    assert v2_name("XBT/EUR") == "BTC/EUR" and default_rest_pair("BTC/USD") == "BTCUSD"
    assert kraken.parse_latest(rest([row(7), row(9)])) == 9


def test_asset_pairs_as_kraken_sent_them():
    # recorded by cryptofeed (data/README.md): names in XBT/XDG, no tick_size yet
    body = (Path(__file__).parent / "data" / "kraken_assetpairs_cryptofeed.json").read_bytes()
    found = Kraken().parse_instruments([body], ["BTC/USD", "DOGE/USD", "ETH/USD", "BTC/USDT", "SOL/USD"])
    assert found == {
        "BTC/USD": Instrument("BTC/USD", "XXBTZUSD", "0.1", "0.00000001"),  # not the dark pool's XXBTZUSD.d
        "DOGE/USD": Instrument("DOGE/USD", "XDGUSD", "0.0000001", "0.00000001"),
        "ETH/USD": Instrument("ETH/USD", "XETHZUSD", "0.01", "0.00000001"),
        "BTC/USDT": Instrument("BTC/USDT", "XBTUSDT", "0.1", "0.00000001"),
    }
    assert (found["BTC/USD"].pricescale, found["BTC/USD"].volume_precision) == (10, 8)
    assert found["DOGE/USD"].pricescale == 10**7
