"""Binance spot end to end: ``tvflux serve`` with ``TVFLUX_SOURCES=binance:BTCUSDT=BTCUSD``
against a replay server on 127.0.0.1 (tests/replay/binance.py): the cases every venue
passes (tests/replay/suite.py) and Binance's own (placeholder rows, µs times,
``serverShutdown``, a 418 ban, the REST look that tells a quiet market from a stall)."""

from __future__ import annotations

import time

import pytest

from tests.replay.binance import BinanceReplay
from tests.replay.check import feed
from tests.replay.harness import ReplayServer, wait_until
from tests.replay.suite import ReplaySuite

pytestmark = pytest.mark.timeout(120)


class TestBinance(ReplaySuite):
    venue = "binance"
    venue_symbol = "BTCUSDT"
    precision = (100, 5)

    def make_replay(self) -> ReplayServer:
        return ReplayServer(BinanceReplay(), [self.venue_symbol], heartbeat_s=0.5)

    def quiet_market_checks(self, replay: ReplayServer) -> None:
        # no heartbeats on Binance: silence is asked about over REST (the newest id)
        assert any("fromId" not in q and q.get("limit") == "1" for _, q, _ in replay.rest_log)

    def test_placeholder_rows_and_microsecond_times(self, server_factory, replay):
        server = self.start(server_factory, replay, source_backfill_s="0")
        self.trade(replay, 40, placeholders=(7, 21))
        unsent = replay.books[self.venue_symbol].make(30, placeholders=(3,))  # REST has a placeholder too
        replay.faults.micro_s = True  # timeUnit=MICROSECOND: the ms floor is the trade time
        self.trade(replay, 30, drop=(4,))  # the jump's backfill reads µs rows and the placeholder
        self.caught_up(server, replay)
        # one id jump: the unsent rows (29 trades, the placeholder is none); the dropped
        # trade after them came with the same REST page
        assert [(g["fromId"], g["toId"], g["trades"]) for g in self.gaps(server)] == [(unsent[0].id, unsent[-1].id, 29)]
        assert self.exact(server, replay) == set()

    def test_server_shutdown_opens_the_new_connection_before_the_old_one_closes(self, server_factory, replay):
        server = self.start(server_factory, replay)
        self.trade(replay, 50)
        replay.broadcast(BinanceReplay.server_shutdown())
        wait_until(lambda: len(replay.connections) == 2, 10, "a second connection while the first is open")
        self.trade(replay, 50)  # both connections deliver these: the tracker keeps one of each
        wait_until(lambda: len(replay.connections) == 1, 10, "the old connection closed")
        self.trade(replay, 50)
        self.caught_up(server, replay)
        assert replay.connects == 2 and feed(server, self.symbol)["source"]["reconnects"] == 0
        assert self.gaps(server) == []
        self.exact(server, replay)

    def test_a_418_ban_leaves_the_gap_open_and_says_so(self, server_factory, replay):
        server = self.start(server_factory, replay, source_backfill_s="0")
        self.trade(replay, 10)
        time.sleep(0.5)
        replay.faults.rest_answers.append((418, {"Retry-After": "30"}))
        rows = self.trade(replay, 30, drop=(5, 6))
        self.caught_up(server, replay)
        [gap] = self.gaps(server)
        assert (gap["state"], gap["fromId"], gap["toId"]) == ("open", rows[5].id, rows[6].id)
        assert "418" in gap["reason"]
        assert feed(server, self.symbol)["source"]["restPausedUntil"] is not None
        assert self.metric(server, "tvflux_source_gaps_left_open_total") == 1
        assert self.exact(server, replay) == {rows[5].id, rows[6].id}

    def test_instrument_data_that_failed_is_asked_again(self, server_factory, replay):
        replay.faults.rest_answers.append((500, {}))  # the first exchangeInfo fails
        server = self.start(server_factory, replay, source_backfill_s="0")
        wait_until(lambda: feed(server, self.symbol)["pricescale"] == 100, 10, "the instrument data, asked again")
        asked = [status for path, _, status in replay.rest_log if path.endswith("/exchangeInfo")]
        assert asked == [500, 200]
        _, info = server.get(f"/udf/symbols?symbol={self.symbol}")
        assert (info["pricescale"], info["volume_precision"]) == (100, 5)
