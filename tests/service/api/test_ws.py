"""/ws, /ws/ingest and /api/stream against a real server, with a real WebSocket client."""

from __future__ import annotations

import json
import time
import urllib.request

import msgspec
import pytest
from websockets.sync.client import connect


def now_ms():
    return int(time.time() * 1000)


def recv_until(ws, predicate, timeout_s=5.0):
    """Messages until one matches ``predicate``; returns (match, everything received)."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            msg = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        except TimeoutError:
            break
        seen.append(msg)
        if predicate(msg):
            return msg, seen
    raise AssertionError(f"no matching message within {timeout_s}s; got {seen[-5:]}")


def test_subscribe_gets_posted_trade_quickly_and_bars_only_move_forward(module_server):
    s = module_server
    with connect(s.ws_url + "/ws") as ws:
        ws.send(json.dumps({"op": "subscribe", "id": "a", "symbol": "ETHUSD", "resolution": "1S"}))
        ws.send(json.dumps({"op": "ping"}))
        recv_until(ws, lambda m: m["type"] == "pong")
        sent = time.monotonic()
        s.post_trades([{"symbol": "ETHUSD", "price": 1234.5, "size": 2, "time": now_ms()}])
        msg, _ = recv_until(ws, lambda m: m["type"] == "bar" and m["bar"]["high"] >= 1234.5)
        latency_ms = (time.monotonic() - sent) * 1000
        print(f"trade → pushed bar: {latency_ms:.0f} ms")
        assert msg["id"] == "a" and msg["closed"] is False
        assert set(msg["bar"]) == {"time", "open", "high", "low", "close", "volume"}
        assert msg["bar"]["time"] % 1000 == 0
        # the 1S bar closes on time, without another trade
        closed, seen = recv_until(ws, lambda m: m["type"] == "bar" and m["closed"], timeout_s=3)
        assert closed["bar"]["time"] == msg["bar"]["time"] and closed["bar"]["high"] == 1234.5
        times = [m["bar"]["time"] for m in [msg] + seen if m["type"] == "bar"]
        assert times == sorted(times)


def test_first_push_is_initialised_from_history(module_server):
    s = module_server
    t = now_ms()
    s.post_trades(
        [
            {"symbol": "LTCUSD", "price": 50.0, "size": 1, "time": t - 5_000},
            {"symbol": "LTCUSD", "price": 70.0, "size": 1, "time": t - 4_000},
        ]
    )
    with connect(s.ws_url + "/ws") as ws:
        ws.send(json.dumps({"op": "subscribe", "id": "d", "symbol": "LTCUSD", "resolution": "1D"}))
        msg, _ = recv_until(ws, lambda m: m["type"] == "bar")
        assert msg["bar"]["high"] >= 70.0 and msg["bar"]["low"] <= 50.0
        s.post_trades([{"symbol": "LTCUSD", "price": 60.0, "size": 1, "time": now_ms()}])
        msg, _ = recv_until(ws, lambda m: m["type"] == "bar" and m["bar"]["close"] == 60.0)
        _, hist = s.get("/api/bars?symbol=LTCUSD&resolution=1D&countback=1")
        assert hist["bars"][-1] == msg["bar"]  # history and the live push agree


def test_late_trade_sends_reset_and_never_an_older_bar(module_server):
    s = module_server
    with connect(s.ws_url + "/ws") as ws:
        ws.send(json.dumps({"op": "subscribe", "id": "m", "symbol": "BTCUSD", "resolution": "1"}))
        s.post_trades([{"symbol": "BTCUSD", "price": 100.0, "size": 1, "time": now_ms()}])
        first, _ = recv_until(ws, lambda m: m["type"] == "bar")
        s.post_trades([{"symbol": "BTCUSD", "price": 1.0, "size": 1, "time": now_ms() - 10 * 60_000}])
        _, seen = recv_until(ws, lambda m: m["type"] == "reset" and m["id"] == "m")
        assert all(m["bar"]["time"] >= first["bar"]["time"] for m in seen if m["type"] == "bar")


def test_protocol_errors_keep_the_connection_open(module_server):
    with connect(module_server.ws_url + "/ws") as ws:
        cases = [
            ("not json", "invalid_message", None),
            (json.dumps({"op": "dance"}), "invalid_message", None),
            (json.dumps({"op": "subscribe", "id": "x", "symbol": "NOPE", "resolution": "1"}), "unknown_symbol", "x"),
            (
                json.dumps({"op": "subscribe", "id": "y", "symbol": "BTCUSD", "resolution": "7"}),
                "invalid_resolution",
                "y",
            ),
            (json.dumps({"op": "subscribe", "id": "", "symbol": "BTCUSD", "resolution": "1"}), "invalid_message", None),
        ]
        for frame, code, sub_id in cases:
            ws.send(frame)
            msg, _ = recv_until(ws, lambda m: m["type"] == "error")
            assert msg["error"]["code"] == code and msg["error"]["message"]
            assert msg.get("id") == sub_id
        ws.send(json.dumps({"op": "ping"}))
        assert recv_until(ws, lambda m: m["type"] == "pong")[0] == {"type": "pong"}


def test_unsubscribe_stops_updates(module_server):
    s = module_server
    with connect(s.ws_url + "/ws") as ws:
        ws.send(json.dumps({"op": "subscribe", "id": "u", "symbol": "ETHUSD", "resolution": "5"}))
        s.post_trades([{"symbol": "ETHUSD", "price": 10.0, "size": 1, "time": now_ms()}])
        recv_until(ws, lambda m: m["type"] == "bar")
        ws.send(json.dumps({"op": "unsubscribe", "id": "u"}))
        ws.send(json.dumps({"op": "ping"}))
        recv_until(ws, lambda m: m["type"] == "pong")
        s.post_trades([{"symbol": "ETHUSD", "price": 11.0, "size": 1, "time": now_ms()}])
        ws.send(json.dumps({"op": "ping"}))
        _, seen = recv_until(ws, lambda m: m["type"] == "pong", timeout_s=2)
        time.sleep(0.3)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
        assert not [m for m in seen if m["type"] == "bar"]
        ws.send(json.dumps({"op": "unsubscribe", "id": "u"}))  # already gone: answered, not ignored
        reply = json.loads(ws.recv(timeout=5))
        assert reply["type"] == "error" and reply["id"] == "u", reply
        assert reply["error"]["code"] == "unknown_subscription" and "'u'" in reply["error"]["message"]


def test_ws_ingest_json_and_msgpack_with_acks(module_server):
    s = module_server
    t = now_ms()
    with connect(s.ws_url + "/ws/ingest") as ws:
        ws.send(json.dumps([{"symbol": "TESTA", "price": 5.0, "size": 1, "time": t, "id": "w1"}]))
        assert json.loads(ws.recv(timeout=5)) == {"type": "ack", "seq": 1, "accepted": 1, "duplicates": 0}
        ws.send(
            msgspec.msgpack.encode(
                [
                    {"symbol": "TESTA", "price": 6.0, "size": 1, "time": t, "id": "w1"},
                    {"symbol": "TESTA", "price": 7.0, "size": 1, "time": t, "id": "w2"},
                ]
            )
        )
        assert json.loads(ws.recv(timeout=5)) == {"type": "ack", "seq": 2, "accepted": 1, "duplicates": 1}
        ws.send("[{]")
        err = json.loads(ws.recv(timeout=5))
        assert err["type"] == "error" and err["seq"] == 3 and err["error"]["code"] == "invalid_message"
        ws.send(json.dumps([{"symbol": "TESTA", "price": -1, "size": 1, "time": t}]))
        err = json.loads(ws.recv(timeout=5))
        assert err["error"]["code"] == "invalid_trade" and err["seq"] == 4
        ws.send(json.dumps([{"symbol": "TESTA", "price": 1, "size": 1, "time": t}] * 1001))
        err = json.loads(ws.recv(timeout=5))
        assert err["error"]["code"] == "payload_too_large" and err["seq"] == 5


def test_sse_stream_pushes_the_same_bar_messages(module_server):
    s = module_server
    req = urllib.request.Request(s.base_url + "/api/stream?symbol=TESTB&resolution=1")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        s.post_trades([{"symbol": "TESTB", "price": 42.0, "size": 3, "time": now_ms()}])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            line = resp.readline().decode().strip()
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg["type"] == "bar" and msg["bar"]["close"] == 42.0:
                    assert msg["id"] == "stream" and msg["closed"] is False
                    return
        pytest.fail("no SSE bar message")


@pytest.mark.parametrize(
    "query, status, code",
    [("symbol=NOPE&resolution=1", 404, "unknown_symbol"), ("symbol=BTCUSD&resolution=2", 400, "invalid_resolution")],
)
def test_sse_bad_input(module_server, query, status, code):
    got, body = module_server.get("/api/stream?" + query)
    assert got == status and body["error"]["code"] == code
