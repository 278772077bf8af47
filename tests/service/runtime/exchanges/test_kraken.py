"""Kraken WebSocket v2 end to end: ``tvflux serve`` with ``TVFLUX_SOURCES=kraken:BTC/USD=BTCUSD``
against a replay server on 127.0.0.1 (tests/replay/kraken.py), through the cases every venue
passes (tests/replay/suite.py). Kraken replays its newest trades on a new subscription,
sends heartbeats (so silence is a stall) and pages REST by time, not by id."""

from __future__ import annotations

import pytest

from tests.replay.harness import ReplayServer
from tests.replay.kraken import KrakenReplay
from tests.replay.suite import ReplaySuite

pytestmark = pytest.mark.timeout(120)


class TestKraken(ReplaySuite):
    venue = "kraken"
    venue_symbol = "BTC/USD"
    precision = (10, 8)  # AssetPairs: tick_size 0.1, lot_decimals 8
    snapshot = True

    def make_replay(self) -> ReplayServer:
        return ReplayServer(KrakenReplay(), [self.venue_symbol], heartbeat_s=0.5)
