"""Nothing acknowledged is lost: kill -9 mid-ingest, and a store outage under ingest.
Both bounded in time, 127.0.0.1 only."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import duckdb
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from service.core.resolution import parse_resolution
from tests.reference import reference_bars


def stored_trades(data_dir):
    con = duckdb.connect(str(Path(data_dir) / "tvflux.duckdb"), read_only=True)
    try:
        return con.execute(
            "SELECT id, ts_ns, price, size FROM trades WHERE symbol = 'BTCUSD' ORDER BY ts_ns"
        ).fetchall()
    finally:
        con.close()


def ingest_until(server, stop, acked, frame_trades=50):
    """Send frames of trades with ids over /ws/ingest; record ids only once acked."""
    n = 0
    try:
        with connect(server.ws_url + "/ws/ingest") as ws:
            while not stop.is_set():
                now = int(time.time() * 1000)
                frame = [
                    {"symbol": "BTCUSD", "price": 100.0 + (n + i) % 13, "size": 1.0, "time": now, "id": f"k{n + i}"}
                    for i in range(frame_trades)
                ]
                ws.send(json.dumps(frame))
                reply = json.loads(ws.recv(timeout=10))
                if reply["type"] == "ack":
                    assert reply["accepted"] == frame_trades
                    acked.extend(t["id"] for t in frame)
                n += frame_trades
    except (ConnectionClosed, OSError, TimeoutError):
        pass  # the server died under us: that's the point


def test_kill_9_loses_no_acknowledged_trade(server_factory):
    server = server_factory(
        synthetic_rate="0",
        flush_interval_ms="300",
        downsample_interval_ms="300",
        grace_ms="500",
        spool_fsync_interval_ms="1000",
    )
    acked: list[str] = []
    stop = threading.Event()
    worker = threading.Thread(target=ingest_until, args=(server, stop, acked))
    worker.start()
    time.sleep(2.0)
    server.stop(signal.SIGKILL)
    stop.set()
    worker.join(15)
    assert len(acked) > 500, "the client should have had many acks before the kill"

    server.start()  # replays the spool
    _, stats = server.get("/api/stats")
    assert stats["writer"]["spilledRows"] == 0
    server.post("/api/downsampling/run?wait=600")
    rows = stored_trades_via_restart(server)
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "a trade was stored twice"
    missing = set(acked) - set(ids)
    assert not missing, f"{len(missing)} acknowledged trades lost, e.g. {sorted(missing)[:3]}"

    # history equals an independent aggregation of what is stored
    server.start()
    trades = [{"time": ts // 1_000_000, "price": p, "size": s} for _, ts, p, s in rows]
    lo, hi = trades[0]["time"] // 1000, trades[-1]["time"] // 1000 + 1
    for res in ("1S", "1", "60"):
        _, body = server.get(f"/api/bars?symbol=BTCUSD&resolution={res}&from={lo}&to={hi}")
        want = reference_bars(trades, parse_resolution(res))
        assert [(b["time"], b["open"], b["close"], b["high"], b["low"]) for b in body["bars"]] == [
            (w["time"], w["open"], w["close"], w["high"], w["low"]) for w in want
        ]
        assert sum(b["volume"] for b in body["bars"]) == pytest.approx(len(rows))


def stored_trades_via_restart(server):
    """The server holds the DuckDB file; stop it cleanly to read the file directly."""
    server.stop(signal.SIGTERM)
    return stored_trades(server.data_dir)


def test_store_outage_spills_to_spool_and_recovers(server_factory, tmp_path):
    fault = tmp_path / "store-down"
    server = server_factory(
        synthetic_rate="0", fault_store_down_file=str(fault), writer_max_pending_rows="400", flush_interval_ms="50"
    )
    acked = 0
    t0 = int(time.time() * 1000) - 60_000

    def post(i):
        trades = [
            {"symbol": "BTCUSD", "price": 50.0 + k, "size": 1.0, "time": t0 + i, "id": f"o{i}-{k}"} for k in range(100)
        ]
        assert server.post_trades(trades)["accepted"] == 100
        return 100

    for i in range(5):
        acked += post(i)
    fault.touch()  # the store goes away
    deadline = time.monotonic() + 3
    i = 5
    while time.monotonic() < deadline:
        acked += post(i)
        i += 1
    status, ready = server.get("/health/ready")
    assert status == 503 and any("spool" in r or "writer" in r or "store" in r for r in ready["reasons"])
    _, stats = server.get("/api/stats")
    assert stats["writer"]["spilledRows"] > 0 and stats["writer"]["spoolBytes"] > 0
    fault.unlink()  # the store is back

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, stats = server.get("/api/stats")
        if stats["writer"]["pendingRows"] == 0 and stats["writer"]["spilledRows"] == 0:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the spool never drained: {stats['writer']}")
    status, ready = server.get("/health/ready")
    assert status == 200, ready
    _, bars = server.get(f"/api/bars?symbol=BTCUSD&resolution=1D&from={t0 // 1000 - 86400}&to={t0 // 1000 + 86400}")
    assert sum(b["volume"] for b in bars["bars"]) == acked
    ids = [r[0] for r in stored_trades_via_restart(server)]
    assert len(ids) == acked == len(set(ids))
