"""Restarts: nothing stored is lost, SIGTERM flushes what was waiting, downsampling resumes
from its watermarks, and the unique-timestamp state is rebuilt from the store."""

from __future__ import annotations

import signal
import time


def test_sigterm_flushes_pending_trades_and_restart_resumes(server_factory):
    # A long flush interval keeps trades in the writer until shutdown.
    server = server_factory(
        synthetic_rate="0", flush_interval_ms="60000", flush_rows="1000000", downsample_interval_ms="0", grace_ms="0"
    )
    t0 = int(time.time() * 1000) - 2 * 86_400_000  # old enough for every tier to close bars
    trades = [{"symbol": "BTCUSD", "price": 100 + i % 7, "size": 0.5, "time": t0 + i * 997} for i in range(2000)]
    server.post_trades(trades)
    _, before = server.get("/api/bars?symbol=BTCUSD&resolution=60&countback=5")
    assert server.get("/api/stats")[1]["writer"]["pendingRows"] == 2000
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)

    server.start()
    _, after = server.get("/api/bars?symbol=BTCUSD&resolution=60&countback=5")
    assert after == before and sum(b["volume"] for b in after["bars"]) == 1000.0
    status, run = server.post("/api/downsampling/run?wait=600")
    watermarks = [t["watermark"] for t in run["tiers"]]
    assert all(w is not None for w in watermarks)

    server.stop(signal.SIGTERM)
    server.start()
    _, status = server.get("/api/downsampling")
    assert [t["watermark"] for t in status["tiers"]] == watermarks
    _, again = server.get("/api/bars?symbol=BTCUSD&resolution=60&countback=5")
    assert again == before
    # Same-millisecond trades after the restart still get distinct timestamps: two
    # trades at a millisecond already used before the restart both count.
    server.post_trades(
        [
            {"symbol": "BTCUSD", "price": 1.0, "size": 1.0, "time": t0},
            {"symbol": "BTCUSD", "price": 1.0, "size": 1.0, "time": t0},
        ]
    )
    server.post("/api/downsampling/run?wait=600")
    _, hist = server.get(f"/api/bars?symbol=BTCUSD&resolution=1S&from={t0 // 1000}&to={t0 // 1000 + 1}")
    assert hist["bars"][0]["volume"] == 2.5 and hist["bars"][0]["low"] == 1.0


def test_duplicate_ids_are_recognised_across_restarts(server_factory):
    server = server_factory(synthetic_rate="0")
    t = int(time.time() * 1000) - 5_000
    old = [{"symbol": "ETHUSD", "price": 10.0, "size": 1.0, "time": t + i, "id": f"r{i}"} for i in range(50)]
    assert server.post_trades(old) == {"accepted": 50, "duplicates": 0}
    server.stop(signal.SIGTERM)
    server.start()
    # the same ids again (a client retrying after the restart), plus new ones
    again = old + [{"symbol": "ETHUSD", "price": 11.0, "size": 1.0, "time": t + 100, "id": "fresh"}]
    assert server.post_trades(again) == {"accepted": 1, "duplicates": 50}
    # and after a kill -9 (the id filter is warmed again from the store at start)
    server.stop(signal.SIGKILL)
    server.start()
    assert server.post_trades(old[:5]) == {"accepted": 0, "duplicates": 5}


def test_first_start_backfills_synthetic_history_once(server_factory):
    server = server_factory(synthetic_rate="10", synthetic_backfill_s="7200", downsample_interval_ms="0")
    _, page = server.get("/api/bars?symbol=BTCUSD&resolution=15&countback=20")
    assert len(page["bars"]) >= 8  # two hours of 15-minute bars, before any live trade
    first = page["bars"][0]["time"]
    assert first <= int(time.time() * 1000) - 7_000_000
    server.stop(signal.SIGTERM)
    server.start()  # not empty any more: no second backfill
    _, again = server.get("/api/bars?symbol=BTCUSD&resolution=15&countback=20")
    assert again["bars"][0]["time"] == first
    assert again["bars"][0]["volume"] == page["bars"][0]["volume"]
