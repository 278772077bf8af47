"""Symbols with a lifecycle, against a real server: added with their own metadata, listed at
once everywhere a client looks, removed (with or without their data) with open
subscriptions told, remembered across restarts, audited."""

from __future__ import annotations

import json
import time

from websockets.sync.client import connect

from tests.service.api.test_ws import recv_until


def now_ms() -> int:
    return int(time.time() * 1000)


def add(server, body):
    return server.post("/api/admin/symbols", body)


def remove(server, symbol, data=False):
    return server.request("DELETE", f"/api/admin/symbols?symbol={symbol}&data={'true' if data else 'false'}")


def test_a_symbol_added_with_its_metadata_is_listed_and_served_at_once(quiet_server):
    s = quiet_server
    status, body = add(s, {"symbol": "SHIBUSD", "tickSize": 0.00000001, "volumePrecision": 0, "description": "Shiba"})
    assert status == 200, body
    assert (body["pricescale"], body["minmov"], body["volumePrecision"]) == (100_000_000, 1, 0)
    _, listed = s.get("/api/symbols")
    shib = next(x for x in listed["symbols"] if x["symbol"] == "SHIBUSD")
    assert shib["description"] == "Shiba" and shib["tickSize"] == 1e-8 and shib["lastTradeMs"] is None
    _, udf = s.get("/udf/symbols?symbol=SHIBUSD")
    assert (udf["pricescale"], udf["minmov"], udf["volume_precision"], udf["description"]) == (
        100_000_000,
        1,
        0,
        "Shiba",
    )
    _, found = s.get("/udf/search?query=shiba&limit=5")
    assert [x["symbol"] for x in found] == ["SHIBUSD"]
    # a coin priced 0.00001 keeps its digits: the bars are not flat
    t = now_ms()
    s.post_trades([{"symbol": "SHIBUSD", "price": p, "size": 1e6, "time": t} for p in (0.00001234, 0.00001299)])
    _, bars = s.get("/api/bars?symbol=SHIBUSD&resolution=1&countback=1")
    assert bars["bars"][-1]["high"] == 0.00001299 and bars["bars"][-1]["low"] == 0.00001234
    # an update changes what it gives, keeps the rest
    status, body = add(s, {"symbol": "SHIBUSD", "tickSize": 0.25})
    assert status == 200 and (body["pricescale"], body["minmov"], body["description"]) == (100, 25, "Shiba")
    # bad metadata: every problem at once, nothing changed
    status, body = add(s, {"symbol": "BAD SYM", "tickSize": -1, "volumePrecision": 99})
    assert status == 400 and body["error"]["code"] == "invalid_message"
    assert len(body["error"]["details"]["problems"]) == 3
    status, body = add(s, {"symbol": "X", "pricescale": 100})
    assert status == 400  # unknown fields are refused


def test_removal_ends_open_subscriptions_with_an_error_and_outlives_a_restart(quiet_server):
    s = quiet_server
    assert add(s, {"symbol": "GONEUSD"})[0] == 200
    t = now_ms()
    s.post_trades([{"symbol": "GONEUSD", "price": 10.0, "size": 1, "time": t - 1000, "id": "g-1"}])
    with connect(s.ws_url + "/ws") as v1, connect(s.ws_url + "/ws?v=2") as v2:
        v1.send(json.dumps({"op": "subscribe", "id": "one", "symbol": "GONEUSD", "resolution": "1"}))
        recv_until(v1, lambda m: m["type"] == "bar")
        v2.send(json.dumps({"op": "subscribe", "id": "two", "symbol": "GONEUSD", "resolution": "1S"}))
        recv_until(v2, lambda m: m["type"] == "subscribed")
        status, body = remove(s, "GONEUSD")
        assert status == 200 and body == {"removed": "GONEUSD", "dataDeleted": False, "deletedTrades": 0}
        for ws, sub_id in ((v1, "one"), (v2, "two")):
            err, _ = recv_until(ws, lambda m: m["type"] == "error")
            assert err["id"] == sub_id and err["error"]["code"] == "unknown_symbol"
            assert "removed" in err["error"]["message"]
    _, listed = s.get("/api/symbols")
    assert "GONEUSD" not in [x["symbol"] for x in listed["symbols"]]
    assert s.get("/udf/search?query=GONE")[1] == []
    assert s.get("/api/bars?symbol=GONEUSD&resolution=1&countback=5")[0] == 404
    status, body = s.post("/api/trades", [{"symbol": "GONEUSD", "price": 10.0, "size": 1, "time": now_ms()}])
    assert status == 400 and "unknown symbol" in json.dumps(body)

    s.restart()  # its trades are still stored, and it stays removed
    assert "GONEUSD" not in [x["symbol"] for x in s.get("/api/symbols")[1]["symbols"]]
    # added again: its kept history is back
    assert add(s, {"symbol": "GONEUSD"})[0] == 200
    _, bars = s.get("/api/bars?symbol=GONEUSD&resolution=1&countback=5")
    assert [b["close"] for b in bars["bars"]] == [10.0]
    # removed with its data: its bars are gone for good, ids forgotten
    status, body = remove(s, "GONEUSD", data=True)
    assert status == 200 and body["deletedTrades"] == 1 and body["dataDeleted"] is True
    assert add(s, {"symbol": "GONEUSD"})[0] == 200
    assert s.get("/api/bars?symbol=GONEUSD&resolution=1&countback=5")[1]["noData"] is True
    again = s.post_trades([{"symbol": "GONEUSD", "price": 11.0, "size": 1, "time": t - 1000, "id": "g-1"}])
    assert again == {"accepted": 1, "duplicates": 0}

    _, audit = s.get("/api/admin/audit")
    actions = [(e["action"], e["symbol"], e.get("purge")) for e in audit["entries"]]
    assert actions[:4] == [
        ("add_symbol", "GONEUSD", None),
        ("remove_symbol", "GONEUSD", True),
        ("add_symbol", "GONEUSD", None),
        ("remove_symbol", "GONEUSD", False),
    ]


def test_configured_and_unknown_symbols_cannot_be_removed(quiet_server):
    s = quiet_server
    status, body = remove(s, "BTCUSD")
    assert status == 409 and body["error"]["code"] == "conflict" and "TVFLUX_SYMBOLS" in body["error"]["message"]
    status, body = remove(s, "NOPE")
    assert status == 404 and body["error"]["code"] == "unknown_symbol"
    assert s.request("DELETE", "/api/admin/symbols")[0] == 400


def test_symbol_changes_need_the_admin_token(server_factory):
    s = server_factory(synthetic_rate="0", admin_token="sesame")
    assert add(s, {"symbol": "NEWUSD"})[0] == 401
    assert remove(s, "BTCUSD")[0] == 401
    assert s.get("/api/admin/symbols")[0] == 401


def test_an_sse_stream_of_a_removed_symbol_gets_the_error_and_ends(quiet_server):
    import urllib.request

    s = quiet_server
    assert add(s, {"symbol": "SSEGONE"})[0] == 200
    with urllib.request.urlopen(s.base_url + "/api/stream?symbol=SSEGONE&resolution=1", timeout=10) as resp:
        assert remove(s, "SSEGONE")[0] == 200
        events = [line.decode().strip() for line in resp]  # ends: the read returns, no hang
    errors = [json.loads(e[5:]) for e in events if e.startswith("data:")]
    assert errors and errors[-1]["type"] == "error" and errors[-1]["error"]["code"] == "unknown_symbol", events
