"""Binance's protocol, read from recorded messages (tests/service/core/venues/data) and
from its documented formats (service/core/venues/binance.py)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from service.core.errors import VenueProtocolError
from service.core.venues.binance import PAGE, Binance
from service.core.venues.common import Heartbeat, Instrument, PlannedClose, Trades, VenueRefusal, VenueTrade

DATA = Path(__file__).parent / "data"
binance = Binance()


def recorded() -> list[str]:
    return (DATA / "binance_aggtrade_cryptofeed.jsonl").read_text().splitlines()


def test_recorded_aggtrades_parse_to_exact_trades():
    events = [e for line in recorded() for e in binance.parse(line)]
    assert all(isinstance(e, Trades) for e in events) and len(events) == 13
    first = events[0]
    assert first == Trades("NKNUSDT", [VenueTrade(15683430, 1633998523963, 0.3528, 58.0)])
    lrc = events[1].trades[0]
    assert (lrc.id, lrc.price, lrc.size) == (9213679, 0.00000638, 177.0)
    omg = [e.trades[0] for e in events if e.venue_symbol == "OMGBUSD"]
    # Binance.US's recorded stream: consecutive aggregate ids, times never decreasing
    assert [t.id for t in omg] == list(range(425085, 425096))
    assert [t.time_ms for t in omg] == sorted(t.time_ms for t in omg)
    assert omg[0].time_ms == 1633998288467 and omg[0].price == 13.8048 and omg[0].size == 2.1
    assert not any(t.placeholder for e in events for t in e.trades)


def aggtrade(**fields) -> str:
    data = {"e": "aggTrade", "E": 1, "s": "BTCUSDT", "a": 7, "p": "1.5", "q": "2", "f": 10, "l": 10, "T": 1700000000123}
    data.update(fields)
    return json.dumps({"stream": "btcusdt@aggTrade", "data": data})


def test_placeholder_rows_hold_their_id_but_are_not_trades():
    (zero_price,) = binance.parse(aggtrade(p="0.00000000"))
    (minus_one,) = binance.parse(aggtrade(f=-1, l=-1))
    assert zero_price.trades[0].placeholder and minus_one.trades[0].placeholder
    assert zero_price.trades[0].id == minus_one.trades[0].id == 7


def test_microsecond_times_become_milliseconds():
    (event,) = binance.parse(aggtrade(T=1700000000123456))
    assert event.trades[0].time_ms == 1700000000123


def test_control_messages():
    shutdown = {"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": 1770123456789}}
    assert binance.parse(json.dumps(shutdown)) == [PlannedClose("Binance serverShutdown")]
    assert binance.parse('{"result": null, "id": 1}') == [Heartbeat()]
    (refusal,) = binance.parse('{"error": {"code": 2, "msg": "Invalid request"}, "id": 3}')
    assert isinstance(refusal, VenueRefusal) and "Invalid request" in refusal.message
    depth = {"stream": "btcusdt@depth", "data": {"e": "depthUpdate", "E": 1, "s": "BTCUSDT"}}
    assert binance.parse(json.dumps(depth)) == []


@pytest.mark.parametrize(
    "message",
    ["not json", aggtrade(p="1e5"), aggtrade(p=1.5), aggtrade(a="seven"), json.dumps({"data": {"e": "aggTrade"}})],
)
def test_malformed_messages_are_protocol_errors(message):
    with pytest.raises(VenueProtocolError):
        binance.parse(message)


def test_stream_url_names_every_symbol_on_the_combined_stream():
    url = binance.stream_url("wss://stream.binance.com:9443/", ["BTCUSDT", "ETHUSDT"])
    assert url == "wss://stream.binance.com:9443/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade"
    assert binance.subscribe_messages(["BTCUSDT"]) == []


def rows(first: int, n: int, *, t0: int = 1_700_000_000_000) -> bytes:
    return json.dumps(
        [
            {"a": first + i, "p": "10.01", "q": "0.5", "f": 1, "l": 1, "T": t0 + i, "m": True, "M": True}
            for i in range(n)
        ]
    ).encode()


def test_backfill_pages_from_an_id_until_a_short_page():
    instrument = Instrument("BTCUSDT", "BTCUSDT", "0.01", "0.00001")
    walk = binance.backfill(instrument, from_id=500, from_time_ms=0)
    req = walk.request(0)
    assert (req.path, req.params, req.weight) == (
        "/api/v3/aggTrades",
        {"symbol": "BTCUSDT", "limit": str(PAGE), "fromId": "500"},
        4,
    )
    page = walk.take(rows(500, PAGE), 0)
    assert [t.id for t in page] == list(range(500, 500 + PAGE)) and not walk.exhausted
    assert walk.request(0).params["fromId"] == str(500 + PAGE)
    assert len(walk.take(rows(500 + PAGE, 3), 0)) == 3 and walk.exhausted
    by_time = binance.backfill(instrument, from_id=None, from_time_ms=1_700_000_000_000)
    assert by_time.request(0).params == {"symbol": "BTCUSDT", "limit": str(PAGE), "startTime": "1700000000000"}


def test_latest_id_and_used_weight():
    instrument = Instrument("BTCUSDT", "BTCUSDT", "0.01", "0.00001")
    assert binance.latest_request(instrument).params == {"symbol": "BTCUSDT", "limit": "1"}
    assert binance.parse_latest(rows(42, 1)) == 42 and binance.parse_latest(b"[]") is None
    assert binance.used_weight({"x-mbx-used-weight-1m": "1234"}) == 1234
    assert binance.used_weight({}) is None


def test_recorded_exchange_info_gives_tick_and_step_sizes():
    body = (DATA / "binance_exchangeinfo_cryptofeed.json").read_bytes()
    (req,) = binance.instruments_request(["NKNUSDT", "LRCBTC"])
    assert req.path == "/api/v3/exchangeInfo" and json.loads(req.params["symbols"]) == ["LRCBTC", "NKNUSDT"]
    got = binance.parse_instruments([body], ["NKNUSDT", "LRCBTC", "MISSING"])
    assert got == {
        "NKNUSDT": Instrument("NKNUSDT", "NKNUSDT", "0.00010000", "1.00000000"),
        "LRCBTC": Instrument("LRCBTC", "LRCBTC", "0.00000001", "1.00000000"),
    }
    assert (got["NKNUSDT"].pricescale, got["NKNUSDT"].volume_precision) == (10_000, 0)
    assert got["LRCBTC"].pricescale == 100_000_000
    query = parse_qs(urlsplit("http://x/?symbols=" + req.params["symbols"]).query)
    assert query["symbols"] == ['["LRCBTC","NKNUSDT"]']
