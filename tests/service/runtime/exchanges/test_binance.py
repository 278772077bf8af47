"""Binance spot end to end: ``tvflux serve`` with ``TVFLUX_SOURCES=binance:BTCUSDT=BTCUSD``
against a replay server on 127.0.0.1 (tests/replay/binance.py) through the endpoint
settings. Every case ends with the pass criterion of tests/replay/check.py: the stored
ids are the server's set exactly, once each, and every resolution equals an independent
aggregation of that set."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.replay.binance import BinanceReplay
from tests.replay.check import assert_exact, caught_up, feed, sources
from tests.replay.harness import ReplayServer, wait_until

pytestmark = pytest.mark.timeout(120)
SYMBOL, VENUE_SYMBOL = "BTCUSD", "BTCUSDT"


@pytest.fixture
def replay() -> Iterator[ReplayServer]:
    server = ReplayServer(BinanceReplay(), [VENUE_SYMBOL], heartbeat_s=0.5).start()
    yield server
    server.stop()


def start_tvflux(server_factory: Any, replay: ReplayServer, **env: str) -> Any:
    settings = {
        "sources": f"binance:{VENUE_SYMBOL}={SYMBOL}",
        "symbols": SYMBOL,
        "synthetic_rate": "0",
        "binance_ws_url": replay.ws_url,
        "binance_rest_url": replay.http_url,
        "source_stall_s": "2",
        "source_reorder_ms": "300",
        "source_gap_timeout_s": "3",
        "source_backoff_max_s": "0.5",
        "downsample_interval_ms": "500",
        "grace_ms": "500",
        **env,
    }
    server = server_factory(**settings)
    replay.wait_connects(1)
    return server


def gaps(server: Any) -> list[dict[str, Any]]:
    return [g for g in sources(server)["gaps"] if g["symbol"] == SYMBOL]


def metric(server: Any, name: str) -> float:
    _, text = server.get("/metrics")
    for line in text.splitlines():
        if line.startswith(f'{name}{{source="binance",symbol="{SYMBOL}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not on /metrics")


def test_history_then_a_normal_stream_with_placeholders_and_microseconds(server_factory, replay):
    before = replay.books[VENUE_SYMBOL].make(2500, time_ms=int(time.time() * 1000) - 600_000, step_ms=100)
    server = start_tvflux(server_factory, replay)  # a fresh symbol: the last hour by time, 3 pages
    for _ in range(5):
        replay.trade(VENUE_SYMBOL, 40, placeholders=(7, 21))
        time.sleep(0.05)
    replay.faults.micro_s = True  # the same stream in µs (timeUnit=MICROSECOND): the ms floor is the time
    replay.trade(VENUE_SYMBOL, 30)
    caught_up(server, replay, SYMBOL, VENUE_SYMBOL)
    f = feed(server, SYMBOL)
    assert f["tradesBackfilled"] == len(before) and f["pricescale"] == 100 and f["volumePrecision"] == 5
    assert f["source"]["connected"] and f["source"]["restWeightUsed"] > 0
    assert gaps(server) == []  # history of a fresh symbol fills no gap
    _, info = server.get(f"/udf/symbols?symbol={SYMBOL}")
    assert (info["pricescale"], info["minmov"], info["volume_precision"]) == (100, 1, 5)
    assert_exact(server, replay, SYMBOL, VENUE_SYMBOL)


def test_a_dropped_message_is_backfilled_and_shown_everywhere(server_factory, replay):
    server = start_tvflux(server_factory, replay, source_backfill_s="0")
    replay.trade(VENUE_SYMBOL, 10)  # the first trade starts the sequence (no history asked)
    time.sleep(0.3)
    replay.trade(VENUE_SYMBOL, 50, drop=(10, 11, 12))
    caught_up(server, replay, SYMBOL, VENUE_SYMBOL)
    [gap] = gaps(server)
    lost = replay.books[VENUE_SYMBOL].rows[20:23]
    assert (gap["state"], gap["cause"], gap["fromId"], gap["toId"], gap["trades"]) == (
        "backfilled",
        "id jump",
        lost[0].id,
        lost[-1].id,
        3,
    )
    assert metric(server, "tvflux_source_gaps_found_total") == 1
    assert metric(server, "tvflux_source_gaps_left_open_total") == 0
    assert metric(server, "tvflux_source_trades_backfilled_total") == 3
    assert assert_exact(server, replay, SYMBOL, VENUE_SYMBOL) == set()


def test_duplicates_and_out_of_order_delivery_are_not_gaps(server_factory, replay):
    server = start_tvflux(server_factory, replay)
    for _ in range(4):
        replay.trade(VENUE_SYMBOL, 30, duplicate=True, swap=True)
    caught_up(server, replay, SYMBOL, VENUE_SYMBOL)
    assert gaps(server) == [] and feed(server, SYMBOL)["tradesBackfilled"] == 0
    assert_exact(server, replay, SYMBOL, VENUE_SYMBOL)


def test_an_abrupt_close_mid_burst_is_synced_over_rest(server_factory, replay):
    server = start_tvflux(server_factory, replay)
    replay.trade(VENUE_SYMBOL, 100)
    replay.abort_connections()  # no close frame; trades go on server-side meanwhile
    replay.trade(VENUE_SYMBOL, 200)
    replay.wait_connects(2)
    replay.trade(VENUE_SYMBOL, 50)
    caught_up(server, replay, SYMBOL, VENUE_SYMBOL)
    assert feed(server, SYMBOL)["source"]["reconnects"] == 1
    [gap] = gaps(server)
    assert (gap["state"], gap["cause"]) == ("backfilled", "reconnect")
    assert gap["trades"] >= 1  # what the stream sent before the new connection was up is not counted
    assert_exact(server, replay, SYMBOL, VENUE_SYMBOL)


def test_server_shutdown_opens_the_new_connection_before_the_old_one_closes(server_factory, replay):
    server = start_tvflux(server_factory, replay)
    replay.trade(VENUE_SYMBOL, 50)
    replay.broadcast(BinanceReplay.server_shutdown())
    wait_until(lambda: len(replay.connections) == 2, 10, "a second connection while the first is open")
    replay.trade(VENUE_SYMBOL, 50)  # both connections deliver these: the tracker keeps one of each
    wait_until(lambda: len(replay.connections) == 1, 10, "the old connection closed")
    replay.trade(VENUE_SYMBOL, 50)
    caught_up(server, replay, SYMBOL, VENUE_SYMBOL)
    assert replay.connects == 2 and feed(server, SYMBOL)["source"]["reconnects"] == 0
    assert gaps(server) == []
    assert_exact(server, replay, SYMBOL, VENUE_SYMBOL)


def test_a_silent_stall_is_replaced_when_rest_shows_newer_trades(server_factory, replay):
    server = start_tvflux(server_factory, replay)
    replay.trade(VENUE_SYMBOL, 20)
    replay.stall()  # the connection stays open and says nothing; the market goes on
    replay.trade(VENUE_SYMBOL, 30)
    replay.wait_connects(2, timeout_s=15)  # the watchdog (2 s) asked REST, saw newer ids
    replay.trade(VENUE_SYMBOL, 20)
    caught_up(server, replay, SYMBOL, VENUE_SYMBOL)
    [gap] = gaps(server)
    assert (gap["state"], gap["cause"], gap["trades"]) == ("backfilled", "stall", 30)
    assert_exact(server, replay, SYMBOL, VENUE_SYMBOL)


def test_a_long_quiet_market_keeps_its_connection_and_pongs_in_time(server_factory, replay):
    server = start_tvflux(server_factory, replay)
    replay.trade(VENUE_SYMBOL, 20)
    caught_up(server, replay, SYMBOL, VENUE_SYMBOL)
    time.sleep(6)  # three stall periods without a trade; the server pings every 0.5 s
    replay.trade(VENUE_SYMBOL, 20)
    caught_up(server, replay, SYMBOL, VENUE_SYMBOL)
    assert replay.connects == 1 and replay.pong_timeouts == 0
    assert any("fromId" not in q and q.get("limit") == "1" for _, q, _ in replay.rest_log)  # it looked
    assert 0 < replay.max_client_frames_per_s() <= 5  # pongs and its own pings within Binance's 5/s
    assert gaps(server) == []
    assert_exact(server, replay, SYMBOL, VENUE_SYMBOL)


def test_a_429_is_waited_out_and_the_gap_still_filled(server_factory, replay):
    server = start_tvflux(server_factory, replay, source_backfill_s="0")
    replay.trade(VENUE_SYMBOL, 10)
    time.sleep(0.3)
    replay.faults.rest_answers.append((429, {"Retry-After": "1"}))
    replay.trade(VENUE_SYMBOL, 30, drop=(5,))
    caught_up(server, replay, SYMBOL, VENUE_SYMBOL)
    assert [s for _, _, s in replay.rest_log].count(429) == 1
    [gap] = gaps(server)
    assert gap["state"] == "backfilled"
    assert_exact(server, replay, SYMBOL, VENUE_SYMBOL)


def test_a_418_ban_leaves_the_gap_open_and_says_so(server_factory, replay):
    server = start_tvflux(server_factory, replay, source_backfill_s="0")
    replay.trade(VENUE_SYMBOL, 10)
    time.sleep(0.3)
    replay.faults.rest_answers.append((418, {"Retry-After": "30"}))
    rows = replay.trade(VENUE_SYMBOL, 30, drop=(5, 6))
    caught_up(server, replay, SYMBOL, VENUE_SYMBOL)
    [gap] = gaps(server)
    assert (gap["state"], gap["fromId"], gap["toId"]) == ("open", rows[5].id, rows[6].id)
    assert "418" in gap["reason"]
    assert feed(server, SYMBOL)["source"]["restPausedUntil"] is not None
    assert metric(server, "tvflux_source_gaps_left_open_total") == 1
    _, admin = server.get("/admin")
    assert admin  # the page loads; its sources table reads /api/sources
    assert assert_exact(server, replay, SYMBOL, VENUE_SYMBOL) == {rows[5].id, rows[6].id}


def test_a_restart_resumes_from_the_last_stored_id(server_factory, replay):
    server = start_tvflux(server_factory, replay)
    replay.trade(VENUE_SYMBOL, 100)
    caught_up(server, replay, SYMBOL, VENUE_SYMBOL)
    server.stop()
    replay.trade(VENUE_SYMBOL, 300)  # while tvflux is down
    server.start()
    replay.wait_connects(2)
    replay.trade(VENUE_SYMBOL, 50)
    caught_up(server, replay, SYMBOL, VENUE_SYMBOL)
    [gap] = gaps(server)
    assert (gap["state"], gap["cause"], gap["trades"]) == ("backfilled", "restart", 300)
    assert_exact(server, replay, SYMBOL, VENUE_SYMBOL)
