"""Bad data never gets in: implausible trade times, size limits that say why, every schema
problem of a batch listed, error codes that match their meaning — on a real server."""

from __future__ import annotations

import json
import signal
import tempfile
import time

import msgspec
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from service.core.settings import Settings
from tests.conftest import ServerProcess

DAY_MS = 86_400_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture(scope="module")
def server():
    with tempfile.TemporaryDirectory(prefix="tvflux-bad-data-") as data_dir:
        s = ServerProcess(
            data_dir,
            {
                "TVFLUX_SYNTHETIC_RATE": "0",
                "TVFLUX_MAX_FRAME_BYTES": "2048",
                "TVFLUX_MAX_BODY_BYTES": "4096",
                "TVFLUX_MAX_PAST_MS": str(DAY_MS),
                "TVFLUX_SYMBOLS": "BTCUSD,OLDUSD,BANDUSD,LISTUSD",
                "TVFLUX_PRICE_BAND_PCT": str(Settings().price_band_pct),  # the default: on, 20 %
            },
        )
        s.start()
        yield s
        s.stop(signal.SIGKILL)


def trade(t: int, price: float = 100.0, symbol: str = "BTCUSD") -> dict:
    return {"symbol": symbol, "price": price, "size": 1.0, "time": t}


# --- item 2: plausible times ---------------------------------------------------------------


@pytest.mark.parametrize("t", [1, 1_700_000_000])
def test_live_ingest_refuses_times_before_the_horizon(server, t):
    status, body = server.post("/api/trades", [trade(t)])
    assert status == 400 and body["error"]["code"] == "invalid_trade", body
    [problem] = body["error"]["details"]
    assert problem["index"] == 0 and "TVFLUX_MAX_PAST_MS" in problem["reason"]
    status, bars = server.get("/api/bars?symbol=BTCUSD&resolution=1D&from=0&to=86400")
    assert bars["noData"] is True


def test_a_time_in_seconds_is_named_as_such(server):
    seconds = now_ms() // 1000
    status, body = server.post("/api/trades", [trade(now_ms()), trade(seconds)])
    assert status == 400
    [problem] = body["error"]["details"]
    assert problem["index"] == 1 and "looks like epoch seconds" in problem["reason"]
    assert str(seconds * 1000) in problem["reason"]


def test_ws_ingest_applies_the_same_horizon(server):
    with connect(server.ws_url + "/ws/ingest") as ws:
        ws.send(json.dumps([trade(now_ms() // 1000)]))
        reply = json.loads(ws.recv(timeout=5))
    assert reply["type"] == "error" and reply["seq"] == 1 and reply["error"]["code"] == "invalid_trade"
    assert "epoch seconds" in reply["error"]["details"][0]["reason"]


def test_bulk_history_takes_any_past_date(server):
    old = 1_500_000_000_000  # 2017
    status, body = server.post("/api/admin/trades", [trade(old + i, symbol="OLDUSD") for i in range(3)])
    assert status == 200 and body == {"accepted": 3, "duplicates": 0}, body
    status, bars = server.get(
        f"/api/bars?symbol=OLDUSD&resolution=1D&from={old // 1000 - 86400}&to={old // 1000 + 86400}"
    )
    assert len(bars["bars"]) == 1 and bars["bars"][0]["volume"] == 3


@pytest.mark.parametrize("path", ["/api/trades", "/api/admin/trades"])
@pytest.mark.parametrize("per_ms, unit", [(1000, "microseconds"), (1_000_000, "nanoseconds")])
def test_a_time_in_microseconds_or_nanoseconds_is_named_as_such(server, path, per_ms, unit):
    t = now_ms()
    status, body = server.post(path, [trade(t * per_ms)])
    assert status == 400, body
    [problem] = body["error"]["details"]
    assert f"looks like epoch {unit}" in problem["reason"] and str(t) in problem["reason"], problem


# --- a price band: one fat-finger trade does not ruin every resolution -----------------------


def test_a_fat_finger_price_is_refused_naming_the_band(server):
    t = now_ms()
    assert server.post("/api/trades", [trade(t, 100.0, "BANDUSD")])[0] == 200  # a first trade: no band yet
    status, body = server.post("/api/trades", [trade(t + 1, 101.0, "BANDUSD"), trade(t + 2, 1e300, "BANDUSD")])
    assert status == 400 and body["error"]["code"] == "outside_price_band", body
    assert "price band of BANDUSD" in body["error"]["message"] and "TVFLUX_PRICE_BAND_PCT" in body["error"]["message"]
    [problem] = body["error"]["details"]
    assert problem["index"] == 1
    assert problem["priceBand"] == {
        "low": pytest.approx(100 / 1.2),
        "high": pytest.approx(120),
        "reference": 100.0,
        "pct": 20.0,
    }
    with_id = dict(trade(t + 3, 1e300, "BANDUSD"), id="x-1")  # the general path checks it too
    assert server.post("/api/trades", [with_id])[1]["error"]["code"] == "outside_price_band"
    with connect(server.ws_url + "/ws/ingest") as ws:
        ws.send(json.dumps([trade(t + 4, 0.0001, "BANDUSD")]))
        reply = json.loads(ws.recv(timeout=5))
    assert reply["type"] == "error" and reply["error"]["code"] == "outside_price_band", reply

    # the band follows the market: 115 is in it, and then so is 135 (< 115 x 1.2)
    assert server.post("/api/trades", [trade(t + 5, 115.0, "BANDUSD")])[0] == 200
    assert server.post("/api/trades", [trade(t + 6, 135.0, "BANDUSD")])[0] == 200
    status, bars = server.get("/api/bars?symbol=BANDUSD&resolution=1D&countback=1&to=" + str(t // 1000 + 86400))
    assert bars["bars"][-1]["high"] == 135.0 and bars["bars"][-1]["low"] == 100.0  # no 1e300, no 0.0001

    # a retry of an accepted trade is a duplicate, even once the market has moved away from it
    kept = dict(trade(t + 7, 136.0, "BANDUSD"), id="r-1")
    assert server.post("/api/trades", [kept])[0] == 200
    for i, price in enumerate((160.0, 190.0)):  # each within the band of the one before
        assert server.post("/api/trades", [trade(t + 8 + i, price, "BANDUSD")])[0] == 200
    assert server.post("/api/trades", [kept]) == (200, {"accepted": 0, "duplicates": 1})

    # bulk history is not judged by today's prices
    old = 1_500_000_000_000
    status, body = server.post("/api/admin/trades", [trade(old, 1e6, "BANDUSD")])
    assert status == 200 and body["accepted"] == 1, body


def test_a_listing_turns_its_band_off(server):
    status, body = server.post("/api/admin/symbols", {"symbol": "LISTUSD", "priceBandPct": 0})
    assert status == 200, body
    t = now_ms()
    assert server.post("/api/trades", [trade(t, 1.0, "LISTUSD")])[0] == 200
    assert server.post("/api/trades", [trade(t + 1, 50.0, "LISTUSD")])[0] == 200  # the price is being found
    assert server.post("/api/admin/symbols", {"symbol": "LISTUSD", "priceBandPct": 10})[0] == 200
    status, body = server.post("/api/trades", [trade(t + 2, 60.0, "LISTUSD")])
    assert status == 400 and body["error"]["details"][0]["priceBand"]["high"] == pytest.approx(55.0), body


# --- item 3: limits and error codes --------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws", "/ws/ingest"])
def test_an_oversized_frame_gets_an_error_before_the_1009_close(server, path):
    with connect(server.ws_url + path, max_size=None) as ws:
        ws.send(json.dumps([trade(now_ms())] * 100))  # ~6 KB > 2 KiB
        reply = json.loads(ws.recv(timeout=5))
        assert reply["type"] == "error" and reply["error"]["code"] == "payload_too_large", reply
        assert "2048" in reply["error"]["message"] and reply["error"]["details"]["maxFrameBytes"] == 2048
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_an_oversized_body_gets_the_error_shape(server):
    status, body = server.post("/api/trades", raw=b"[" + b" " * 10_000 + b"]")
    assert status == 413 and body["error"]["code"] == "payload_too_large"


def test_every_schema_problem_of_a_batch_is_listed(server):
    t = now_ms()
    batch = [
        trade(t),
        {**trade(t), "price": -1},
        trade(t),
        {"symbol": "BTCUSD", "price": 1, "size": 1},
        {**trade(t), "extra": 1},
    ]
    status, body = server.post("/api/trades", batch)
    assert status == 400 and body["error"]["code"] == "invalid_trade"
    assert [d["index"] for d in body["error"]["details"]] == [1, 3, 4]
    with connect(server.ws_url + "/ws/ingest") as ws:
        ws.send(msgspec.msgpack.encode(batch))
        reply = json.loads(ws.recv(timeout=5))
    assert reply["error"]["code"] == "invalid_trade" and [d["index"] for d in reply["error"]["details"]] == [1, 3, 4]


def test_negative_price_is_the_same_error_over_http_and_ws(server):
    bad = [{**trade(now_ms()), "price": -1}]
    status, body = server.post("/api/trades", bad)
    with connect(server.ws_url + "/ws/ingest") as ws:
        ws.send(json.dumps(bad))
        ws.send("[{]")
        first, second = json.loads(ws.recv(timeout=5)), json.loads(ws.recv(timeout=5))
    assert status == 400 and body["error"]["code"] == first["error"]["code"] == "invalid_trade"
    assert first["seq"] == 1 and second["seq"] == 2 and second["error"]["code"] == "invalid_message"
    assert "id" not in first  # the frame's number is `seq`, an integer, as in acks


@pytest.mark.parametrize("path", ["/api/bars", "/udf/history", "/api/stream"])
@pytest.mark.parametrize(
    "query, missing", [("resolution=1&countback=5", "symbol"), ("symbol=BTCUSD&countback=5", "resolution")]
)
def test_a_missing_parameter_is_named_as_missing(server, path, query, missing):
    status, body = server.get(f"{path}?{query}")
    assert status == 400 and body["error"]["code"] == "missing_parameter", body
    assert body["error"]["details"] == {"parameter": missing}
