"""The replay cases every venue passes, as a class a venue's test module subclasses
(``class TestKraken(ReplaySuite)``): ``tvflux serve`` fed by the venue's replay server
through the endpoint settings, each case ending with the pass criterion of
:func:`tests.replay.check.assert_exact`."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from tests.replay.check import assert_exact, caught_up, feed, sources
from tests.replay.harness import ReplayServer


class ReplaySuite:
    venue: ClassVar[str]  # binance, coinbase, kraken
    venue_symbol: ClassVar[str]
    symbol: ClassVar[str] = "BTCUSD"
    precision: ClassVar[tuple[int, int]]  # (pricescale, volumePrecision) the instrument data gives
    snapshot: ClassVar[bool] = False  # a new subscription replays recent trades on the stream

    def make_replay(self) -> ReplayServer:
        raise NotImplementedError

    @pytest.fixture
    def replay(self) -> Iterator[ReplayServer]:
        server = self.make_replay().start()
        yield server
        server.stop()

    def start(self, server_factory: Any, replay: ReplayServer, **env: str) -> Any:
        settings = {
            "sources": f"{self.venue}:{self.venue_symbol}={self.symbol}",
            "symbols": self.symbol,
            "synthetic_rate": "0",
            f"{self.venue}_ws_url": replay.ws_url + replay.venue.ws_path,
            f"{self.venue}_rest_url": replay.http_url,
            "source_stall_s": "2",
            "source_reorder_ms": "300",
            "source_gap_timeout_s": "3",
            "source_backoff_max_s": "0.5",
            "downsample_interval_ms": "500",
            "grace_ms": "500",
            **env,
        }
        if self.venue == "binance":  # the combined stream's path is the connector's to add
            settings["binance_ws_url"] = replay.ws_url
        server = server_factory(**settings)
        replay.wait_connects(1)
        return server

    # --- helpers ---------------------------------------------------------------------

    def trade(self, replay: ReplayServer, n: int, **kw: Any) -> list[Any]:
        return replay.trade(self.venue_symbol, n, **kw)

    def caught_up(self, server: Any, replay: ReplayServer) -> None:
        caught_up(server, replay, self.symbol, self.venue_symbol)

    def exact(self, server: Any, replay: ReplayServer) -> set[int]:
        return assert_exact(server, replay, self.symbol, self.venue_symbol)

    def gaps(self, server: Any) -> list[dict[str, Any]]:
        return [g for g in sources(server)["gaps"] if g["symbol"] == self.symbol]

    def metric(self, server: Any, name: str) -> float:
        _, text = server.get("/metrics")
        for line in text.splitlines():
            if line.startswith(f'{name}{{source="{self.venue}",symbol="{self.symbol}"}}'):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not on /metrics")

    def assert_synced(self, server: Any, cause: str, missed: int | None) -> None:
        """After a new connection that missed ``missed`` trades (``None``: not known
        exactly): one backfilled gap of them; where the venue replays recent trades on a
        new subscription (a snapshot), the stream may have delivered some (or all: then
        no gap at all)."""
        found = self.gaps(server)
        if not self.snapshot:
            assert [(g["state"], g["cause"]) for g in found] == [("backfilled", cause)], found
            assert missed is None or found[0]["trades"] == missed
        else:
            assert all((g["state"], g["cause"]) == ("backfilled", cause) for g in found), found
            assert missed is None or sum(g["trades"] for g in found) <= missed

    # --- the cases ---------------------------------------------------------------------

    def test_history_then_a_normal_stream(self, server_factory, replay):
        before = replay.books[self.venue_symbol].make(2500, time_ms=int(time.time() * 1000) - 600_000, step_ms=100)
        server = self.start(server_factory, replay)  # a fresh symbol: the last hour by time, in pages
        for _ in range(5):
            self.trade(replay, 40)
            time.sleep(0.05)
        self.caught_up(server, replay)
        f = feed(server, self.symbol)
        assert f["tradesBackfilled"] >= len(before) - 50 * self.snapshot  # a snapshot may bring the newest
        assert (f["pricescale"], f["volumePrecision"]) == self.precision
        assert f["source"]["connected"] and f["source"]["restRequests"] > 0
        assert self.gaps(server) == []  # history of a fresh symbol fills no gap
        _, info = server.get(f"/udf/symbols?symbol={self.symbol}")
        assert (info["pricescale"], info["volume_precision"]) == self.precision
        self.exact(server, replay)

    def test_a_dropped_message_is_backfilled_and_shown_everywhere(self, server_factory, replay):
        server = self.start(server_factory, replay, source_backfill_s="0")
        self.trade(replay, 10)  # the first trades start the sequence (no history asked)
        time.sleep(0.5)
        rows = self.trade(replay, 50, drop=(10, 11, 12))
        self.caught_up(server, replay)
        [gap] = self.gaps(server)
        assert (gap["state"], gap["cause"], gap["fromId"], gap["toId"], gap["trades"]) == (
            "backfilled",
            "id jump",
            rows[10].id,
            rows[12].id,
            3,
        )
        assert self.metric(server, "tvflux_source_gaps_found_total") == 1
        assert self.metric(server, "tvflux_source_gaps_left_open_total") == 0
        assert self.metric(server, "tvflux_source_trades_backfilled_total") == 3
        assert self.exact(server, replay) == set()

    def test_duplicates_and_out_of_order_delivery_are_not_gaps(self, server_factory, replay):
        server = self.start(server_factory, replay, source_backfill_s="0")  # every trade comes on the stream
        for _ in range(4):
            self.trade(replay, 30, duplicate=True, swap=True)
        self.caught_up(server, replay)
        assert self.gaps(server) == [] and feed(server, self.symbol)["tradesBackfilled"] == 0
        self.exact(server, replay)

    def test_an_abrupt_close_mid_burst_is_synced_over_rest(self, server_factory, replay):
        server = self.start(server_factory, replay)
        self.trade(replay, 100)
        # no close frame; trades go on server-side while the venue cannot be reached (a
        # reconnect at once would get them live, and there would be no gap to close)
        replay.faults.refuse_connects = True
        replay.abort_connections()
        self.trade(replay, 200)
        replay.faults.refuse_connects = False
        replay.wait_connects(2)
        self.trade(replay, 50)
        self.caught_up(server, replay)
        assert feed(server, self.symbol)["source"]["reconnects"] == 1, feed(server, self.symbol)["source"]
        found = self.gaps(server)  # what the old stream delivered before it died is not counted
        assert all((g["state"], g["cause"]) == ("backfilled", "reconnect") for g in found) and len(found) <= 1
        # the 200 trades missed came over REST: as a "reconnect" gap record, or (when the
        # reconnect races the start-up sync by time) counted as backfilled without one
        assert self.snapshot or found or feed(server, self.symbol)["tradesBackfilled"] >= 200
        self.exact(server, replay)

    def test_a_silent_stall_is_replaced(self, server_factory, replay):
        server = self.start(server_factory, replay)
        self.trade(replay, 20)
        self.caught_up(server, replay)
        replay.stall()  # the connection stays open and says nothing; the market goes on
        self.trade(replay, 30)
        replay.wait_connects(2, timeout_s=15)  # the watchdog (2 s) replaced it
        self.trade(replay, 20)
        self.caught_up(server, replay)
        self.assert_synced(server, "stall", 30)
        self.exact(server, replay)

    def test_an_old_connection_is_replaced_new_one_first(self, server_factory, replay):
        server = self.start(server_factory, replay, source_max_connection_s="2")  # Binance's 24 h, shortened
        for _ in range(14):  # trades flow across the replacement
            self.trade(replay, 10)
            time.sleep(0.25)
        self.caught_up(server, replay)
        assert replay.connects >= 2 and feed(server, self.symbol)["source"]["reconnects"] == 0
        assert all(g["state"] == "backfilled" and g["cause"] == "planned" for g in self.gaps(server))
        self.exact(server, replay)

    def test_a_long_quiet_market_keeps_its_connection_and_pongs_in_time(self, server_factory, replay):
        server = self.start(server_factory, replay)
        self.trade(replay, 20)
        self.caught_up(server, replay)
        time.sleep(6)  # three stall periods without a trade; the server pings every 0.5 s
        self.trade(replay, 20)
        self.caught_up(server, replay)
        assert replay.connects == 1 and replay.pong_timeouts == 0
        assert 0 < replay.max_client_frames_per_s() <= 5  # pongs, its own pings, subscribes
        assert self.gaps(server) == []
        self.quiet_market_checks(replay)
        self.exact(server, replay)

    def quiet_market_checks(self, replay: ReplayServer) -> None:
        """What a venue's connector must have done during the quiet minute (overridden)."""

    def test_a_rate_limit_is_waited_out_and_the_gap_still_filled(self, server_factory, replay):
        server = self.start(server_factory, replay, source_backfill_s="0")
        self.trade(replay, 10)
        time.sleep(0.5)
        replay.faults.rest_answers.append((429, {"Retry-After": "1"}))
        self.trade(replay, 30, drop=(5,))
        self.caught_up(server, replay)
        assert [s for _, _, s in replay.rest_log].count(429) == 1
        [gap] = self.gaps(server)
        assert (gap["state"], gap["trades"]) == ("backfilled", 1)
        self.exact(server, replay)

    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
    def test_a_restart_resumes_from_the_last_stored_id(self, server_factory, replay, sig):
        server = self.start(server_factory, replay)
        self.trade(replay, 100)
        self.caught_up(server, replay)
        self.trade(replay, 200)
        time.sleep(0.2)  # in the middle of taking these: some ingested, some in flight
        server.stop(sig)  # kill -9: what the spool holds is replayed, nothing is stored twice
        self.trade(replay, 300)  # while tvflux is down
        server.start()
        replay.wait_connects(2)
        self.trade(replay, 50)
        self.caught_up(server, replay)
        self.assert_synced(server, "restart", None)
        self.exact(server, replay)

    def test_history_the_venue_no_longer_keeps_is_an_open_gap(self, server_factory, replay):
        server = self.start(server_factory, replay)
        self.trade(replay, 50)
        self.caught_up(server, replay)
        server.stop()
        missed = self.trade(replay, 300)  # while tvflux is down ...
        replay.faults.rest_min_id = missed[100].id  # ... and the venue's retention drops the oldest 100
        server.start()
        replay.wait_connects(2)
        self.trade(replay, 20)
        self.caught_up(server, replay)
        [gap] = [g for g in self.gaps(server) if g["state"] == "open"]
        assert (gap["fromId"], gap["toId"], gap["cause"]) == (missed[0].id, missed[99].id, "restart")
        assert "REST history" in gap["reason"] or "REST could not" in gap["reason"]
        assert self.exact(server, replay) == {r.id for r in missed[:100]}
