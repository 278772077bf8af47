"""``tvflux import``, ``generate`` and ``downsample`` while ``tvflux serve`` holds the same
data directory, on a port the command's environment does not name: they find the service
(its ``service.json``) and go through it. And ``generate`` on a data dir that already
holds the first start's synthetic history writes the span before it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from service.core.plan import default_plan
from service.core.resolution import parse_resolution
from service.storage.embedded.store import EmbeddedStore
from tests.reference import reference_bars
from tests.service.ops.test_importer import T0_MS, csv_lines, make_trades

TVFLUX = str(Path(sys.executable).parent / "tvflux")
DAY_MS = 86_400_000


def tvflux(args, data_dir, **env):
    """As a user runs it: the data dir in the environment, a port nobody listens on."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TVFLUX_")}
    full_env.update({"TVFLUX_DATA_DIR": str(data_dir), "TVFLUX_LOG_LEVEL": "WARNING", "TVFLUX_PORT": "1", **env})
    return subprocess.run([TVFLUX, *args], env=full_env, capture_output=True, text=True, timeout=180)


def bars(server, symbol, resolution, from_ms, to_ms):
    status, body = server.get(
        f"/api/bars?symbol={symbol}&resolution={resolution}&from={from_ms // 1000}&to={to_ms // 1000}"
    )
    assert status == 200, body
    return body["bars"]


def test_import_while_serving_goes_through_the_service_and_is_idempotent(server_factory, tmp_path):
    server = server_factory(synthetic_rate="0", admin_token="sesame")
    trades = make_trades(5, 2500, 7_000_000, T0_MS)
    csv = tmp_path / "BTCUSDT-aggTrades-2024-01.csv"
    csv.write_text("\n".join(csv_lines(trades)) + "\n")

    out = tvflux(
        ["import", str(csv), "--block-bytes", "8192"],
        server.data_dir,
        TVFLUX_ADMIN_TOKEN="sesame",
        TVFLUX_MAX_BATCH_TRADES="700",
    )
    assert out.returncode == 0, out.stderr
    assert "Could not set lock" not in out.stderr
    assert server.base_url in out.stderr  # found through service.json, not TVFLUX_PORT
    assert "BTCUSDT, 2,500 rows: 2,500 stored, 0 already stored, 0 rejected" in out.stderr, out.stderr
    assert "1d watermark" in out.stderr and "downsampling:" in out.stderr  # the service ran the plan

    for res in ("1", "60", "1D"):
        got = [
            (b["time"], b["open"], b["high"], b["low"], b["close"])
            for b in bars(server, "BTCUSDT", res, T0_MS, T0_MS + 5 * DAY_MS)
        ]
        want = [
            (r["time"], r["open"], r["high"], r["low"], r["close"])
            for r in reference_bars(trades, parse_resolution(res))
        ]
        assert got == want, res

    again = tvflux(["import", str(csv)], server.data_dir, TVFLUX_ADMIN_TOKEN="sesame")
    assert again.returncode == 0, again.stderr
    assert "BTCUSDT, 2,500 rows: 0 stored, 2,500 already stored" in again.stderr, again.stderr

    wrong = tvflux(["import", str(csv)], server.data_dir, TVFLUX_ADMIN_TOKEN="nope")
    assert wrong.returncode != 0 and "TVFLUX_ADMIN_TOKEN" in wrong.stderr, wrong.stderr


def test_downsample_while_serving_asks_the_service(server_factory):
    server = server_factory(synthetic_rate="0")
    server.post_trades(
        [{"symbol": "BTCUSD", "price": 100.0 + i, "size": 1.0, "time": T0_MS + i * 60_000} for i in range(100)]
    )
    out = tvflux(["downsample"], server.data_dir)
    assert out.returncode == 0, out.stderr
    assert "Could not set lock" not in out.stderr
    assert server.base_url in out.stderr and "by the service" in out.stderr
    assert "1d watermark" in out.stderr
    status, body = server.get("/api/downsampling")
    assert status == 200 and all(t["watermark"] is not None for t in body["tiers"])


def test_generate_while_serving_writes_through_the_service_or_says_what_to_do(server_factory):
    server = server_factory(synthetic_rate="0")
    end = T0_MS + 2 * DAY_MS
    out = tvflux(["generate", "--days", "2", "--trades", "20000", "--end-ms", str(end)], server.data_dir)
    assert out.returncode == 0, out.stderr
    assert "through the service" in out.stderr and "1d watermark" in out.stderr
    days = bars(server, "BTCUSD", "1D", T0_MS, end)
    assert len(days) == 2 and 15_000 < _accepted(server) < 25_000

    big = tvflux(["generate"], server.data_dir)  # the default: 50M trades over a year
    assert big.returncode == 2
    assert "holds the store" in big.stderr and "stop the service" in big.stderr and "--trades 5000000" in big.stderr
    assert "Could not set lock" not in big.stderr


def _accepted(server):
    status, body = server.get("/api/stats")
    assert status == 200
    return body["tradesAccepted"]


def test_generate_after_the_first_start_writes_the_span_before_its_history(server_factory, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    server = server_factory(str(data), synthetic_backfill_s="3600")
    server.stop()  # the first start wrote an hour of synthetic history ending about now

    out = tvflux(["generate", "--days", "1", "--trades", "5000"], data)
    assert out.returncode == 0, out.stderr
    assert "already has trades from" in out.stderr and "--end-ms" in out.stderr, out.stderr

    async def spans():
        store = EmbeddedStore(str(data / "tvflux.duckdb"), default_plan())
        await store.start()
        try:
            rows = await store._run(
                lambda c: c.execute(
                    "SELECT min(ts_ns) // 1000000, max(ts_ns) // 1000000, count(*) FROM trades"
                ).fetchone()
            )
            return rows
        finally:
            await store.close()

    import asyncio

    first, last, count = asyncio.run(spans())
    now = time.time() * 1000
    assert now - 1.1 * DAY_MS - 3_600_000 < first < now - 0.9 * DAY_MS - 3_600_000  # a day before the hour
    assert last <= now + 60_000

    # An explicit span over stored trades: refused, naming the flag that fits.
    overlap = tvflux(["generate", "--days", "1", "--trades", "5000", "--end-ms", str(int(now))], data)
    assert overlap.returncode == 2 and "refusing" in overlap.stderr and "--end-ms " in overlap.stderr
