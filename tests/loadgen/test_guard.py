"""The load generator never touches real data: its trades and latency markers (priced at
the epoch ms, ≈1.8e12) go to its own symbols, or the run is refused before anything is
sent."""

from __future__ import annotations

import time

import pytest

from loadgen.cli import main
from loadgen.guard import DEFAULT_SYMBOLS, OWN_PREFIX, RefusedRun, check_target, is_own
from loadgen.runner import LoadConfig, run_load

RUN = ["--rate", "500", "--frame-trades", "50", "--subscribers", "3", "--duration", "0.5", "--warmup", "0.2", "--quiet"]


def _btc_high(server) -> float:
    status, body = server.get("/api/bars?symbol=BTCUSD&resolution=1M&countback=5")
    assert status == 200, body
    return max(b["high"] for b in body["bars"])


def _seed_btc(server) -> None:
    server.post_trades([{"symbol": "BTCUSD", "price": 61000.5, "size": 0.25, "time": int(time.time() * 1000) - 5000}])


def test_default_symbols_are_the_load_generators_own():
    assert all(is_own(s) for s in DEFAULT_SYMBOLS) and LoadConfig().symbols == DEFAULT_SYMBOLS
    assert not is_own("BTCUSD") and OWN_PREFIX == "LOADGEN-"


def test_run_against_a_service_with_real_data_is_refused_and_sends_nothing(server_factory, capsys):
    server = server_factory(synthetic_rate="0")
    _seed_btc(server)
    accepted = server.get("/api/stats")[1]["tradesAccepted"]

    # what the issue did: the default run against the running service
    assert main(["--url", server.base_url, *RUN]) == 1
    err = capsys.readouterr().err
    assert "does not accept LOADGEN-1" in err and "TVFLUX_SYMBOLS" in err
    # … and naming its real symbols explicitly
    assert main(["--url", server.base_url, "--symbols", "BTCUSD,ETHUSD,LTCUSD", *RUN]) == 1
    err = capsys.readouterr().err
    assert "refusing to publish to BTCUSD, ETHUSD, LTCUSD" in err and "--allow-real-symbols" in err

    assert server.get("/api/stats")[1]["tradesAccepted"] == accepted
    assert _btc_high(server) == 61000.5


async def test_run_on_its_own_symbols_leaves_the_others_alone(server_factory):
    server = server_factory(synthetic_rate="0", symbols="BTCUSD," + ",".join(DEFAULT_SYMBOLS))
    _seed_btc(server)
    cfg = LoadConfig(
        url=server.base_url,
        rate=1_000,
        frame_trades=50,
        subscribers=3,
        marker_hz=20,
        duration_s=0.5,
        warmup_s=0.2,
        progress=False,
    )
    report = await run_load(cfg)
    assert report["ingest"]["trades_acked"] > 0 and report["markers"]["sent"] > 0
    assert _btc_high(server) == 61000.5
    status, body = server.get(f"/api/bars?symbol={DEFAULT_SYMBOLS[0]}&resolution=1&countback=5")
    assert status == 200 and max(b["high"] for b in body["bars"]) > 1e12  # the markers went here


def test_real_symbols_only_when_asked_explicitly():
    symbols = {"symbols": [{"symbol": "BTCUSD"}, {"symbol": "LOADGEN-1"}]}

    def get(base_url, path):
        assert path == "/api/symbols"
        return symbols

    with pytest.raises(RefusedRun, match="refusing to publish to BTCUSD"):
        check_target("http://127.0.0.1:1", ["BTCUSD"], writes=True, allow_real_symbols=False, get_json=get)
    check_target("http://127.0.0.1:1", ["BTCUSD"], writes=True, allow_real_symbols=True, get_json=get)
    check_target("http://127.0.0.1:1", ["BTCUSD"], writes=False, allow_real_symbols=False, get_json=get)
    check_target("http://127.0.0.1:1", ["LOADGEN-1"], writes=True, allow_real_symbols=False, get_json=get)
