"""A source's failure stops nothing else (service/runtime/source_set.py): with Binance
unreachable, the synthetic market still feeds its symbols, publishers still post, the
service stays ready, and /api/sources and /metrics say what is wrong."""

from __future__ import annotations

import time

import pytest

from tests.conftest import free_port
from tests.replay.check import feed
from tests.replay.harness import wait_until

pytestmark = pytest.mark.timeout(60)


def test_an_unreachable_exchange_stops_nothing_else(server_factory):
    nowhere = free_port()  # nothing listens here
    server = server_factory(
        sources="binance:BTCUSDT=BTCUSD",
        symbols="BTCUSD,ETHUSD",
        synthetic_rate="20",
        binance_ws_url=f"ws://127.0.0.1:{nowhere}",
        binance_rest_url=f"http://127.0.0.1:{nowhere}",
        source_backoff_max_s="0.5",
    )
    wait_until(lambda: feed(server, "ETHUSD")["trades"] > 0, 10, "synthetic ETHUSD trades")
    btc = wait_until(lambda: (f := feed(server, "BTCUSD"))["source"]["lastError"] and f, 10, "Binance's error")
    assert not btc["source"]["connected"] and "cannot connect" in btc["source"]["lastError"]
    assert btc["state"] == "waiting" and feed(server, "ETHUSD")["source"]["name"] == "synthetic"
    now = int(time.time() * 1000)
    assert server.post_trades([{"symbol": "ETHUSD", "price": 3000.5, "size": 1.0, "time": now}])["accepted"] == 1
    status, ready = server.get("/health/ready")
    assert status == 200, ready
    _, metrics = server.get("/metrics")
    assert 'tvflux_source_connected{source="binance"} 0.0' in metrics
    assert 'tvflux_source_connected{source="synthetic"} 1.0' in metrics
