"""HTTP API against a real server on 127.0.0.1."""

from __future__ import annotations

import time

import pytest


def assert_error(status_body, status, code):
    got_status, body = status_body
    assert got_status == status, body
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"], body
    assert set(body["error"]) <= {"code", "message", "details"}


def now_ms():
    return int(time.time() * 1000)


def test_udf_config_symbols_search_time(module_server):
    s = module_server
    status, cfg = s.get("/udf/config")
    assert status == 200 and "1S" in cfg["supported_resolutions"] and "1M" in cfg["supported_resolutions"]
    assert cfg["supports_search"] is True and cfg["supports_time"] is True
    status, info = s.get("/udf/symbols?symbol=BTCUSD")
    assert status == 200 and info["name"] == "BTCUSD" and info["session"] == "24x7"
    assert info["timezone"] == "Etc/UTC" and info["has_seconds"] and info["has_weekly_and_monthly"]
    status, found = s.get("/udf/search?query=eth&limit=5")
    assert status == 200 and [f["symbol"] for f in found] == ["ETHUSD"]
    status, t = s.get("/udf/time")
    assert status == 200 and abs(int(t) - time.time()) < 5
    status, syms = s.get("/api/symbols")
    assert status == 200 and "LTCUSD" in [x["symbol"] for x in syms["symbols"]]


@pytest.mark.parametrize(
    "query, status, code",
    [
        ("symbol=NOPE&resolution=1&countback=5", 404, "unknown_symbol"),
        ("resolution=1&countback=5", 400, "missing_parameter"),
        ("symbol=BTCUSD&resolution=7&countback=5", 400, "invalid_resolution"),
        ("symbol=BTCUSD&countback=5", 400, "missing_parameter"),
        ("symbol=BTCUSD&resolution=1&from=200&to=100", 400, "invalid_range"),
        ("symbol=BTCUSD&resolution=1&to=100", 400, "invalid_range"),
        ("symbol=BTCUSD&resolution=1&from=abc&to=100", 400, "invalid_range"),
        ("symbol=BTCUSD&resolution=1&from=-5&to=100", 400, "invalid_range"),
        ("symbol=BTCUSD&resolution=1&countback=0", 400, "invalid_range"),
        ("symbol=BTCUSD&resolution=1&countback=999999", 400, "invalid_range"),
        ("symbol=BTCUSD&resolution=1S&from=0&to=1700000000", 400, "invalid_range"),
        ("symbol=BTCUSD&resolution=1&from=0&to=99999999999999", 400, "invalid_range"),
    ],
)
def test_history_bad_input_is_4xx_with_error_shape(module_server, query, status, code):
    assert_error(module_server.get("/api/bars?" + query), status, code)
    assert_error(module_server.get("/udf/history?" + query), status, code)


@pytest.mark.parametrize(
    "body, status, code",
    [
        (b'[{"symbol": ', 400, "invalid_message"),
        (b"{}", 400, "invalid_trade"),
        (b'[{"symbol":"BTCUSD","price":NaN,"size":1,"time":1}]', 400, "invalid_message"),
        (b'[{"symbol":"BTCUSD","price":1e999,"size":1,"time":1}]', 400, "invalid_trade"),
        (b'[{"symbol":"BTCUSD","price":-1,"size":1,"time":1}]', 400, "invalid_trade"),
        (b'[{"symbol":"BTCUSD","price":1,"size":0,"time":1}]', 400, "invalid_trade"),
        (b'[{"symbol":"BTCUSD","price":1,"size":1}]', 400, "invalid_trade"),
        (b'[{"symbol":"BTCUSD","price":1,"size":1,"time":-1}]', 400, "invalid_trade"),
        (b'[{"symbol":"BTCUSD","price":1,"size":1,"time":1.5}]', 400, "invalid_trade"),
        (b'[{"symbol":"BTCUSD","price":"1","size":1,"time":1}]', 400, "invalid_trade"),
        (b'[{"symbol":"BTCUSD","price":1,"size":1,"time":1,"extra":1}]', 400, "invalid_trade"),
        (b'[{"symbol":"bad symbol","price":1,"size":1,"time":1}]', 400, "invalid_trade"),
        (b'[{"symbol":"NOPE","price":1,"size":1,"time":1}]', 400, "invalid_trade"),
        (b'[{"symbol":"BTCUSD","price":1,"size":1,"time":1,"id":"a\\nb"}]', 400, "invalid_trade"),
    ],
)
def test_bad_trades_are_refused_whole(module_server, body, status, code):
    before = module_server.get("/api/stats")[1]["tradesAccepted"]
    assert_error(module_server.post("/api/trades", raw=body), status, code)
    assert module_server.get("/api/stats")[1]["tradesAccepted"] == before


def test_future_trades_and_mixed_batches_are_refused_with_every_problem(module_server):
    t = now_ms()
    batch = [
        {"symbol": "TESTA", "price": 1, "size": 1, "time": t},
        {"symbol": "TESTA", "price": 1, "size": 1, "time": t + 3_600_000},
        {"symbol": "NOPE", "price": 1, "size": 1, "time": t},
    ]
    status, body = module_server.post("/api/trades", batch)
    assert_error((status, body), 400, "invalid_trade")
    assert [d["index"] for d in body["error"]["details"]] == [1, 2]
    status, bars = module_server.get("/api/bars?symbol=TESTA&resolution=1D&countback=5")
    assert bars["noData"] is True


def test_oversized_batch_and_body(module_server):
    t = now_ms()
    many = [{"symbol": "TESTA", "price": 1, "size": 1, "time": t}] * 1001
    assert_error(module_server.post("/api/trades", many), 413, "payload_too_large")
    huge = b"[" + b" " * 300_000 + b"]"
    assert_error(module_server.post("/api/trades", raw=huge), 413, "payload_too_large")


def test_ids_make_posts_idempotent(module_server):
    t = now_ms() - 10_000
    trades = [{"symbol": "TESTB", "price": 10 + i, "size": 1, "time": t + i, "id": f"x{i}"} for i in range(5)]
    assert module_server.post_trades(trades) == {"accepted": 5, "duplicates": 0}
    assert module_server.post_trades(trades) == {"accepted": 0, "duplicates": 5}
    again = trades[:2] + [{**trades[0]}] + [{"symbol": "TESTB", "price": 1, "size": 1, "time": t, "id": "new"}]
    assert module_server.post_trades(again) == {"accepted": 1, "duplicates": 3}
    # a trade without id is never a duplicate
    plain = [{"symbol": "TESTB", "price": 1, "size": 1, "time": t}]
    assert module_server.post_trades(plain + plain) == {"accepted": 2, "duplicates": 0}
    _, bars = module_server.get("/api/bars?symbol=TESTB&resolution=1D&countback=1")
    assert bars["bars"][0]["volume"] == pytest.approx(8.0)


def test_numeric_ids_are_accepted_and_are_the_same_trade_as_their_text(module_server):
    """Exchanges send numeric trade ids (Binance's ``a``, Kraken's ``trade_id``): taken over
    HTTP and ``/ws/ingest`` (JSON and msgpack), stored as their decimal text."""
    import msgspec
    from websockets.sync.client import connect

    t = now_ms() - 5_000
    trades = [{"symbol": "TESTC", "price": 5, "size": 1, "time": t + i, "id": 9_000_000_000 + i} for i in range(3)]
    assert module_server.post_trades(trades) == {"accepted": 3, "duplicates": 0}
    as_text = [{**x, "id": str(x["id"])} for x in trades]
    assert module_server.post_trades(as_text) == {"accepted": 0, "duplicates": 3}
    with connect(module_server.ws_url + "/ws/ingest") as ws:
        ws.send(msgspec.msgpack.encode(trades[:2] + [{**trades[0], "id": 9_000_000_100, "time": t + 100}]))
        ack = msgspec.json.decode(ws.recv(timeout=5))
    assert ack == {"type": "ack", "seq": 1, "accepted": 1, "duplicates": 2}
    for bad in (-1, 1.5, 2**63, True):
        status, body = module_server.post("/api/trades", [{**trades[0], "id": bad}])
        assert status == 400 and body["error"]["code"] == "invalid_trade", (bad, body)
        assert body["error"]["details"][0]["index"] == 0


def test_unknown_route_and_method(module_server):
    assert_error(module_server.get("/api/nothing"), 404, "not_found")
    assert_error(module_server.request("PUT", "/api/trades"), 405, "method_not_allowed")


def test_countback_paging_no_data_and_next_time(module_server):
    s = module_server
    day = 86_400_000
    base = (now_ms() // day - 30) * day
    # trades on days 0, 1, 2 and 20 of a month-old window
    trades = [{"symbol": "TESTC", "price": 100 + d, "size": 1, "time": base + d * day + 1000} for d in (0, 1, 2, 20)]
    s.post_trades(trades, history=True)  # older than the live horizon
    _, page = s.get(f"/api/bars?symbol=TESTC&resolution=1D&countback=2&to={(base + 25 * day) // 1000}")
    assert [b["time"] for b in page["bars"]] == [base + 2 * day, base + 20 * day]  # countback jumps the gap
    # countback wins over from
    _, page = s.get(
        f"/api/bars?symbol=TESTC&resolution=1D&countback=1&from={(base + 19 * day) // 1000}"
        f"&to={(base + 2 * day) // 1000}"
    )
    assert [b["time"] for b in page["bars"]] == [base + day]
    # an empty range says where older data is, so the chart can jump back
    _, page = s.get(
        f"/api/bars?symbol=TESTC&resolution=1D&from={(base + 5 * day) // 1000}&to={(base + 10 * day) // 1000}"
    )
    assert page == {"bars": [], "noData": True, "nextTime": base + 2 * day}
    _, udf = s.get(
        f"/udf/history?symbol=TESTC&resolution=1D&from={(base + 5 * day) // 1000}&to={(base + 10 * day) // 1000}"
    )
    assert udf == {"s": "no_data", "nextTime": (base + 2 * day) // 1000}
    _, page = s.get(f"/api/bars?symbol=TESTC&resolution=1D&countback=5&to={base // 1000}")
    assert page == {"bars": [], "noData": True, "nextTime": None}
    _, udf = s.get(f"/udf/history?symbol=TESTC&resolution=1D&countback=2&to={(base + 3 * day) // 1000}")
    assert udf["s"] == "ok" and udf["t"] == [(base + day) // 1000, (base + 2 * day) // 1000] and udf["o"] == [101, 102]


def test_a_bar_is_answered_whole_when_to_falls_inside_it(module_server):
    """A bar is named by its start: ``to`` inside its bucket still gives all of it (what a
    chart drew before must not shrink when it asks again with another ``to``)."""
    s = module_server
    day, hour = 86_400_000, 3_600_000
    base = (now_ms() // day - 40) * day
    trades = [
        {"symbol": "TESTW", "price": 10.0, "size": 1, "time": base + hour},
        {"symbol": "TESTW", "price": 30.0, "size": 2, "time": base + 20 * hour},
    ]
    s.post_trades(trades, history=True)
    whole = {"time": base, "open": 10.0, "high": 30.0, "low": 10.0, "close": 30.0, "volume": 3.0}
    inside = (base + 10 * hour) // 1000
    for query in (f"from={base // 1000}&to={inside}", f"countback=1&to={inside}"):
        _, page = s.get(f"/api/bars?symbol=TESTW&resolution=1D&{query}")
        assert page["bars"] == [whole], query
    _, udf = s.get(f"/udf/history?symbol=TESTW&resolution=1D&countback=1&to={inside}")
    assert udf["c"] == [30.0] and udf["v"] == [3.0]


def test_a_downsampling_run_answers_at_once_and_is_followed_by_its_id(module_server):
    """POST starts the run and answers with its id without waiting for it (202 while it
    runs; a small store may already be done); GET follows it, ``?wait=S`` for scripts."""
    s = module_server
    status, run = s.post("/api/downsampling/run")
    assert status in (200, 202) and run["state"] in ("running", "done") and run["id"], run
    assert [t["tier"] for t in run["tiers"]] == ["1m", "5m", "15m", "1h", "4h", "1d"]
    status, done = s.get(f"/api/downsampling/runs/{run['id']}?wait=60")
    assert status == 200 and done["state"] == "done" and done["id"] == run["id"], done
    assert isinstance(done["ran"], list) and done["finishedAt"] >= done["startedAt"]
    status, err = s.get("/api/downsampling/runs/nope")
    assert status == 404 and err["error"]["code"] == "not_found"
    for bad in ("abc", "-1", "601"):
        status, err = s.post(f"/api/downsampling/run?wait={bad}")
        assert status == 400 and "'wait'" in err["error"]["message"], (bad, err)


def test_downsampling_endpoints(module_server):
    status, body = module_server.post("/api/downsampling/run?wait=600")
    assert status == 200 and isinstance(body["ran"], list)
    tiers = [t["tier"] for t in body["tiers"]]
    assert tiers == ["1m", "5m", "15m", "1h", "4h", "1d"]
    status, body = module_server.get("/api/downsampling")
    assert status == 200 and body["tiers"][0]["watermark"] is not None and body["tiers"][0]["error"] is None


def test_health_and_metrics(module_server):
    assert module_server.get("/health/live") == (200, {"status": "ok"})
    status, ready = module_server.get("/health/ready")
    assert status == 200 and ready["ready"] is True and ready["reasons"] == []
    status, text = module_server.get("/metrics")
    assert status == 200 and "tvflux_trades_ingested_total" in text and 'tvflux_downsampling_lag_ms{tier="1m"}' in text


def test_openapi_schema_is_served(module_server):
    status, schema = module_server.get("/schema/openapi.json")
    assert status == 200 and "/api/bars" in schema["paths"] and "/api/trades" in schema["paths"]


def test_udf_search_answers_the_name_then_names_starting_with_it(module_server):
    s = module_server
    # new symbols, so as bulk history; the server learns them in sorted order, so the one
    # merely containing QRX comes first unless the search ranks
    trades = [
        {"symbol": sym, "price": 5.0, "size": 1, "time": now_ms() - 120_000} for sym in ("QRXUSD", "AQRXB", "QRX")
    ]
    s.post_trades(trades, history=True)
    status, found = s.get("/udf/search?query=qrx&limit=10")
    assert status == 200 and [f["symbol"] for f in found] == ["QRX", "QRXUSD", "AQRXB"]
    status, found = s.get("/udf/search?query=qrx&limit=1")
    assert status == 200 and [f["symbol"] for f in found] == ["QRX"]


def test_udf_accepts_the_full_name_it_hands_out_and_bounds_search_limit(module_server):
    s = module_server
    s.post_trades([{"symbol": "TESTB", "price": 5.0, "size": 1, "time": now_ms() - 120_000}])
    status, info = s.get("/udf/symbols?symbol=tvflux:TESTB")
    assert status == 200 and info["full_name"] == "tvflux:TESTB"
    q = "resolution=1&countback=3"
    status, plain = s.get(f"/udf/history?symbol=TESTB&{q}")
    status2, full = s.get(f"/udf/history?symbol={info['full_name']}&{q}")
    assert status == status2 == 200 and full == plain and plain["s"] == "ok"
    assert s.get(f"/udf/history?symbol=other:TESTB&{q}")[0] == 404  # only this server's exchange prefix

    assert s.get("/udf/search?query=TEST&limit=100")[0] == 200
    assert len(s.get("/udf/search?query=TEST&limit=1")[1]) == 1
    for bad in ("0", "101", "-5", "x"):
        status, body = s.get(f"/udf/search?query=TEST&limit={bad}")
        assert status == 400 and body["error"]["code"] == "invalid_message", (bad, body)


DAY_MS = 86_400_000


def test_a_countback_beyond_max_bars_is_read_and_streamed_in_pages(server_factory):
    """TradingView's volume profile asks for up to 200,000 bars: a countback above
    TVFLUX_MAX_BARS (50 here) is answered in pages of 50, the same bars as ranges give."""
    s = server_factory(synthetic_rate="0", max_bars="50", max_countback="1000")
    minute = 60_000
    base = (now_ms() // DAY_MS - 2) * DAY_MS
    trades = [
        {"symbol": "BTCUSD", "price": 100.0 + i % 7, "size": 1 + i % 3, "time": base + i * minute} for i in range(130)
    ]
    s.post_trades(trades, history=True)
    to_s = (base + 130 * minute) // 1000
    status, page = s.get(f"/api/bars?symbol=BTCUSD&resolution=1&countback=120&to={to_s}")
    assert status == 200 and len(page["bars"]) == 120 and page["noData"] is False, page
    want = []
    for lo in range(10, 130, 50):  # the same bars, as three ranges of at most 50
        hi = min(lo + 50, 130)
        _, part = s.get(
            f"/api/bars?symbol=BTCUSD&resolution=1&from={(base + lo * minute) // 1000}&to={(base + hi * minute) // 1000}"
        )
        want += part["bars"]
    assert page["bars"] == want
    status, udf = s.get(f"/udf/history?symbol=BTCUSD&resolution=1&countback=130&to={to_s}")
    assert status == 200 and udf["s"] == "ok" and len(udf["t"]) == 130 and len(udf["v"]) == 130
    assert udf["t"] == sorted(udf["t"]) and udf["o"][-120:] == [b["open"] for b in want]
    status, err = s.get(f"/api/bars?symbol=BTCUSD&resolution=1&countback=1001&to={to_s}")
    assert status == 400 and "between 1 and 1000" in err["error"]["message"]
