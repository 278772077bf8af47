"""/admin shows the trade sources and the gaps of their streams, in headless Chromium, with
Binance fed by its replay server (tests/replay/) and a gap the server's 418 leaves open."""

from __future__ import annotations

import time

from tests.replay.binance import BinanceReplay
from tests.replay.check import caught_up
from tests.replay.harness import ReplayServer


def test_admin_lists_sources_and_an_open_gap(new_page, server_factory):
    replay = ReplayServer(BinanceReplay(), ["BTCUSDT"]).start()
    try:
        server = server_factory(
            sources="binance:BTCUSDT=BTCUSD",
            symbols="BTCUSD,ETHUSD",
            synthetic_rate="5",
            binance_ws_url=replay.ws_url,
            binance_rest_url=replay.http_url,
            source_backfill_s="0",
            source_reorder_ms="200",
            source_gap_timeout_s="2",
        )
        replay.wait_connects(1)
        replay.trade("BTCUSDT", 5)
        time.sleep(0.5)
        replay.faults.rest_answers.append((418, {"Retry-After": "30"}))
        rows = replay.trade("BTCUSDT", 10, drop=(3,))
        caught_up(server, replay, "BTCUSD", "BTCUSDT")

        page = new_page()
        page.goto(server.base_url + "/admin")
        page.wait_for_function("() => window.__tvfluxAdmin && __tvfluxAdmin.lastSources")
        sources = page.locator("#source-rows tr")
        assert sources.count() == 2  # the synthetic ETHUSD, Binance's BTCUSD
        btc = page.locator("#source-rows tr", has_text="BTCUSDT")
        assert btc.locator("td").nth(0).inner_text() == "binance"
        assert btc.locator("td").nth(2).inner_text() == "yes"
        assert btc.locator("td").nth(9).inner_text() == "1"  # gaps left open
        gap = page.locator("#gap-rows tr").first
        cells = [gap.locator("td").nth(i).inner_text() for i in range(8)]
        assert cells[1:5] == ["binance", "BTCUSD", f"{rows[3].id}…{rows[3].id}", "open"]
        assert "418" in cells[7] and gap.get_attribute("class") == "bad"
    finally:
        replay.stop()
