"""The service on a real InfluxDB 2 (``TVFLUX_STORE=influx``), end to end: ``tvflux serve``
in a subprocess, ``influxd`` in another, 127.0.0.1 only, everything bounded in time.

* Acknowledged trades are stored exactly once, also when ``influxd`` restarts in the
  middle of the ingest (the spool holds them meanwhile and drains when it is back) —
  counted in InfluxDB itself, by trade id, with Flux over its HTTP API.
* A user following docs/influxdb.md (``tvflux influx setup``, then ``tvflux serve``) gets
  a live chart: a WebSocket subscriber receives bars, InfluxDB's tasks move the
  watermarks, and history is served from the bars they wrote.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from websockets.sync.client import connect

from service.core.resolution import parse_resolution
from service.core.timestamps import NS_PER_MS
from tests.conftest import ROOT, TVFLUX
from tests.reference import reference_bars

# --- InfluxDB, queried directly ------------------------------------------------------------


def flux_rows(influx: Any, flux: str) -> list[dict[str, str]]:
    """Run ``flux`` on InfluxDB's HTTP API (``POST /api/v2/query``), rows as dicts."""
    req = urllib.request.Request(
        f"{influx.url}/api/v2/query?org={influx.org}",
        data=json.dumps({"query": flux, "type": "flux"}).encode(),
        method="POST",
        headers={
            "Authorization": f"Token {influx.token}",
            "Content-Type": "application/json",
            "Accept": "application/csv",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"InfluxDB query failed: {exc.code} {exc.read()[:500]!r}\n{flux}") from None
    rows = []
    header: list[str] | None = None
    for rec in csv.reader(io.StringIO(text)):
        if not rec or not any(rec):
            header = None  # a blank line ends a table; the next one has its own header
            continue
        if header is None:
            header = rec
            continue
        rows.append(dict(zip(header, rec)))
    return rows


def points(
    influx: Any, bucket: str, measurement: str, symbol: str, start_ns: int = 0, stop_ns: int = 4_102_444_800 * 10**9
) -> dict[int, dict[str, str]]:
    """Every point of one series: time (ns) -> {field: value as InfluxDB printed it}. The
    fields are put together here rather than with ``pivot()``."""
    flux = (
        f'from(bucket: "{bucket}") |> range(start: time(v: {start_ns}), stop: time(v: {stop_ns}))'
        f' |> filter(fn: (r) => r._measurement == "{measurement}" and r.symbol == "{symbol}")'
        " |> map(fn: (r) => ({r with t: int(v: r._time)}))"
    )
    out: dict[int, dict[str, str]] = {}
    for r in flux_rows(influx, flux):
        fields = out.setdefault(int(r["t"]), {})
        assert r["_field"] not in fields, f"two values of {r['_field']} at {r['t']}"
        fields[r["_field"]] = r["_value"]
    return out


def stored_trades(influx: Any, bucket: str, symbol: str, stop_ms: int = 4_102_444_800_000) -> list[dict[str, Any]]:
    """Every trade of ``symbol`` in the raw bucket before ``stop_ms`` (time ns, price, size,
    id), time-ordered. (A query is not a snapshot: while trades are being written, one
    read at the live edge may see a trade's size and not yet its price.)"""
    found = points(influx, bucket, "trades", symbol, 0, stop_ms * NS_PER_MS)
    bad = {t: f for t, f in found.items() if "price" not in f or "size" not in f}
    assert not bad, f"{len(bad)} of {len(found)} trades lack a price or size, e.g. {list(bad.items())[:3]}"
    return [
        {"ts_ns": t, "price": float(f["price"]), "size": float(f["size"]), "id": f.get("id")}
        for t, f in sorted(found.items())
    ]


def id_counts(influx: Any, bucket: str) -> dict[str, int]:
    """How many points carry each trade id (all symbols), counted by InfluxDB."""
    flux = (
        f'from(bucket: "{bucket}") |> range(start: 0, stop: 2100-01-01T00:00:00Z)'
        ' |> filter(fn: (r) => r._measurement == "trades" and r._field == "id")'
        ' |> duplicate(column: "_value", as: "id") |> group(columns: ["id"]) |> count()'
    )
    return {r["id"]: int(r["_value"]) for r in flux_rows(influx, flux)}


def tier_bars(influx: Any, bucket: str, tier: str, symbol: str, start_ms: int, stop_ms: int) -> list[dict[str, Any]]:
    found = points(influx, bucket, f"bars_{tier}", symbol, start_ms * NS_PER_MS, stop_ms * NS_PER_MS)
    return [
        {"time": t // NS_PER_MS, **{k: float(f[k]) for k in ("open", "high", "low", "close", "volume")}}
        for t, f in sorted(found.items())
    ]


def buckets(tag: str) -> dict[str, str]:
    """Bucket names of their own for one test (the InfluxDB server is shared by the session)."""
    suffix = f"{tag}_{uuid.uuid4().hex[:8]}"
    return {
        "TVFLUX_INFLUX_BUCKET": f"trades_{suffix}",
        "TVFLUX_INFLUX_BARS_BUCKET": f"bars_{suffix}",
        "TVFLUX_INFLUX_STATUS_BUCKET": f"status_{suffix}",
    }


def ohlc(bars: list[dict[str, Any]]) -> list[tuple[int, float, float, float, float]]:
    return [(b["time"], b["open"], b["high"], b["low"], b["close"]) for b in bars]


def wait_drained(server: Any, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    writer: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, stats = server.get("/api/stats")
        writer = stats.get("writer", {}) if status == 200 else {}
        if writer and writer.get("pendingRows") == 0 and writer.get("spilledRows") == 0:
            return writer
        time.sleep(0.2)
    pytest.fail(f"the writer did not drain into InfluxDB in {timeout_s}s: {writer}\n{server.log()}")


# --- 1. exactly once across an influxd restart -----------------------------------------------


def test_acknowledged_trades_are_stored_once_across_an_influxd_restart(influx_server, server_factory):
    names = buckets("restart")
    server = server_factory(
        **influx_server.env,
        **names,
        synthetic_rate="0",
        flush_interval_ms="100",
        downsample_interval_ms="1000",
        grace_ms="1000",
    )
    symbols = ("BTCUSD", "ETHUSD")
    acked: list[dict[str, Any]] = []
    refused: list[tuple[int, Any]] = []
    stop = threading.Event()

    def ingest() -> None:
        n = 0
        deadline = time.monotonic() + 40  # bounded whatever happens
        while not stop.is_set() and time.monotonic() < deadline:
            now = int(time.time() * 1000)
            batch = [
                {
                    "symbol": symbols[(n + i) % 2],
                    "price": 100.0 + ((n + i) * 7) % 13 + 0.25,
                    "size": 0.5 + (n + i) % 3,
                    "time": now - (n + i) % 3,
                    "id": f"x{n + i}",
                }
                for i in range(100)
            ]
            status, body = server.post("/api/trades", batch)
            if status == 200:
                assert body == {"accepted": 100, "duplicates": 0}, body
                acked.extend(batch)
            else:
                refused.append((status, body))  # not acknowledged: not ours to find (429/503 while influxd is away)
            n += 100
            time.sleep(0.01)

    worker = threading.Thread(target=ingest)
    worker.start()
    try:
        time.sleep(3.0)
        before = len(acked)
        # influxd restarts (SIGTERM, then the same data and port again), down for 3 s:
        # ingest keeps acknowledging, the trades wait in the writer and its spool.
        influx_server.stop()
        time.sleep(3.0)
        _, stats = server.get("/api/stats")
        waiting = stats["writer"]["pendingRows"] + stats["writer"]["spilledRows"]
        influx_server.start()
        during = len(acked) - before
        time.sleep(3.0)
    finally:
        stop.set()
        worker.join(60)
    assert before > 500, (before, refused[:3])
    assert during > 0 and waiting > 0, "ingest should go on acknowledging while influxd is down"
    assert len(acked) > before + during, "ingest should go on after influxd is back"

    wait_drained(server, 60)
    # Ready again once the service's next look at the tasks' progress succeeds (the
    # downsampling reason from the outage clears then), within a bounded wait.
    deadline = time.monotonic() + 30
    status, ready = server.get("/health/ready")
    while status != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
        status, ready = server.get("/health/ready")
    assert status == 200, ready

    # Every acknowledged trade is in InfluxDB exactly once (counted there, by id) ...
    counts = id_counts(influx_server, names["TVFLUX_INFLUX_BUCKET"])
    acked_ids = [t["id"] for t in acked]
    assert len(acked_ids) == len(set(acked_ids))
    missing = [i for i in acked_ids if i not in counts]
    assert not missing, (
        f"{len(missing)} of {len(acked_ids)} acknowledged trades are not in InfluxDB, e.g. {missing[:3]}"
    )
    twice = {i: c for i, c in counts.items() if c != 1}
    assert not twice, f"trades stored more than once: {list(twice.items())[:5]}"
    assert set(counts) == set(acked_ids), "InfluxDB holds trades nobody acknowledged"
    print(
        f"acked {len(acked_ids)} trades, {during} while influxd was down ({waiting} waiting then); "
        f"refused: {refused[:3]}"
    )

    # ... and history equals an independent aggregation of the acknowledged trades.
    server.post("/api/downsampling/run?wait=600")
    for symbol in symbols:
        stored = stored_trades(influx_server, names["TVFLUX_INFLUX_BUCKET"], symbol)
        mine = {t["id"]: t for t in acked if t["symbol"] == symbol}
        assert len(stored) == len(mine)
        for row in stored:  # the stored values are the acknowledged ones
            want = mine[row["id"]]
            assert (row["ts_ns"] // NS_PER_MS, row["price"], row["size"]) == (want["time"], want["price"], want["size"])
        # in stored (unique-ns) order: ties within a millisecond keep the service's order
        trades = [{"time": r["ts_ns"] // NS_PER_MS, "price": r["price"], "size": r["size"]} for r in stored]
        lo, hi = trades[0]["time"] // 1000 - 60, trades[-1]["time"] // 1000 + 61
        for res in ("1S", "1", "5"):
            status, body = server.get(f"/api/bars?symbol={symbol}&resolution={res}&from={lo}&to={hi}")
            assert status == 200, body
            want = reference_bars(trades, parse_resolution(res))
            assert ohlc(body["bars"]) == ohlc(want), (symbol, res)
            assert [b["volume"] for b in body["bars"]] == pytest.approx([w["volume"] for w in want], rel=1e-12)


# --- 2. docs/influxdb.md: setup, serve, a live chart ---------------------------------------------


def test_following_the_docs_gives_a_live_chart_from_influxdb_tiers(influx_server, server_factory, tmp_path):
    names = buckets("docs")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TVFLUX_")},
        **influx_server.env,
        **names,
        "TVFLUX_DATA_DIR": str(tmp_path / "setup"),
        "TVFLUX_LOG_LEVEL": "WARNING",
    }
    setup = subprocess.run(
        [TVFLUX, "influx", "setup"], check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert setup.returncode == 0, setup.stdout + setup.stderr

    # `tvflux serve` on InfluxDB with its synthetic market, which writes two hours of
    # history on a first start (so the tasks have something to downsample).
    server = server_factory(
        **influx_server.env,
        **names,
        synthetic_rate="30",
        synthetic_backfill_s="7200",
        downsample_interval_ms="1000",
        grace_ms="2000",
    )
    with connect(server.ws_url + "/ws", open_timeout=10) as ws:
        ws.send(json.dumps({"op": "subscribe", "id": "c1", "symbol": "BTCUSD", "resolution": "1S"}))
        bars = []
        deadline = time.monotonic() + 20
        while len(bars) < 3 and time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=10))
            if msg.get("type") == "bar":
                assert msg["id"] == "c1"
                bars.append(msg["bar"])
        assert len(bars) >= 3, "no live bars pushed"
        assert [b["time"] for b in bars] == sorted(b["time"] for b in bars)
        assert bars[-1]["time"] >= int(time.time() * 1000) - 60_000

    # InfluxDB's tasks move the watermarks (the service only asks for runs and watches them).
    status, run = server.post("/api/downsampling/run?wait=600")
    assert status == 200, run
    _, state = server.get("/api/downsampling")
    tiers = {t["tier"]: t for t in state["tiers"]}
    now = int(time.time() * 1000)
    assert all(tiers[t]["error"] is None for t in tiers), tiers
    for tier in ("1m", "5m", "15m", "1h"):
        assert tiers[tier]["watermark"] is not None, (tier, tiers[tier])
    assert tiers["1m"]["watermark"] >= now - 3 * 60_000, tiers["1m"]
    assert tiers["1m"]["rows"] > 0

    # History from the tiers: the 5m and 1h bars the tasks wrote into InfluxDB are what
    # /api/bars serves below their watermarks, and they equal an independent aggregation
    # of the raw trades in InfluxDB.
    raw = stored_trades(influx_server, names["TVFLUX_INFLUX_BUCKET"], "BTCUSD", tiers["5m"]["watermark"])
    trades = [{"time": r["ts_ns"] // NS_PER_MS, "price": r["price"], "size": r["size"]} for r in raw]
    assert len(trades) > 1000
    for tier, res in (("5m", "5"), ("1h", "60")):
        wm = tiers[tier]["watermark"]
        lo = parse_resolution(res).bucket_start_ms(trades[0]["time"])
        stored = tier_bars(influx_server, names["TVFLUX_INFLUX_BARS_BUCKET"], tier, "BTCUSD", lo, wm)
        assert stored, f"no {tier} bars in InfluxDB below the watermark {wm}"
        status, body = server.get(f"/api/bars?symbol=BTCUSD&resolution={res}&from={lo // 1000}&to={wm // 1000}")
        assert status == 200, body
        want = reference_bars([t for t in trades if t["time"] < wm], parse_resolution(res))
        assert ohlc(stored) == ohlc(want), tier
        assert ohlc(body["bars"]) == ohlc(want), tier
        assert [b["volume"] for b in body["bars"]] == pytest.approx([b["volume"] for b in stored], rel=1e-9)
        # the UDF protocol serves the same bars (times in seconds, columns per field)
        status, udf = server.get(f"/udf/history?symbol=BTCUSD&resolution={res}&from={lo // 1000}&to={wm // 1000}")
        assert status == 200 and udf["s"] == "ok", udf
        assert udf["t"] == [b["time"] // 1000 for b in want], tier
        assert list(zip(udf["o"], udf["h"], udf["l"], udf["c"], strict=True)) == [o[1:] for o in ohlc(want)], tier
    # and the chart-opening request answers from them too
    status, page = server.get("/api/bars?symbol=BTCUSD&resolution=5&countback=300")
    assert status == 200 and len(page["bars"]) >= 20, page
