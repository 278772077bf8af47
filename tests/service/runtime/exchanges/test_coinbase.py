"""Coinbase Advanced Trade end to end: ``tvflux serve`` with ``TVFLUX_SOURCES=coinbase:BTC-USD=BTCUSD``
against a replay server on 127.0.0.1 (tests/replay/coinbase.py), through the cases every
venue passes (tests/replay/suite.py). Coinbase sends a snapshot on subscribing and a
heartbeat a second, and its public REST history pages by time window, newest first."""

from __future__ import annotations

import pytest

from tests.replay.coinbase import CoinbaseReplay
from tests.replay.harness import ReplayServer
from tests.replay.suite import ReplaySuite

pytestmark = pytest.mark.timeout(120)


class TestCoinbase(ReplaySuite):
    venue = "coinbase"
    venue_symbol = "BTC-USD"
    precision = (100, 8)  # price_increment 0.01, base_increment 0.00000001
    snapshot = True

    def make_replay(self) -> ReplayServer:
        return ReplayServer(CoinbaseReplay(), [self.venue_symbol], heartbeat_s=0.5)
