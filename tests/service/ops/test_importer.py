"""``tvflux import`` of Binance aggTrades files into a real DuckDB file, as a user runs it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import subprocess
import sys
import time
import zipfile

import pytest

from service.core.plan import default_plan
from service.core.resolution import parse_resolution
from service.storage.embedded.store import EmbeddedStore
from tests.reference import reference_bars

T0_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC
HEADER7 = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"


def ops(args, data_dir, **env):
    """``tvflux <args>`` via ``python -m service.ops.commands`` (the same commands ``tvflux`` registers)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TVFLUX_")}
    full_env.update({"TVFLUX_DATA_DIR": str(data_dir), "TVFLUX_LOG_LEVEL": "WARNING", **env})
    return subprocess.run(
        [sys.executable, "-m", "service.ops.commands", *args], env=full_env, capture_output=True, text=True, timeout=120
    )


def make_trades(seed: int, n: int, first_id: int, start_ms: int) -> list[dict]:
    rng = random.Random(seed)
    trades, t = [], start_ms
    for i in range(n):
        t += rng.choice([0, 0, 1, 3, 400, 1500, 20_000])  # same-millisecond trades included
        trades.append(
            {
                "id": first_id + i,
                "time": t,
                "price": round(rng.uniform(40_000, 41_000), 2),
                "size": round(rng.uniform(0.001, 2), 5),
            }
        )
    return trades


def csv_lines(trades: list[dict], *, micro: bool = False, columns: int = 8) -> list[str]:
    out = []
    for tr in trades:
        t = tr["time"] * 1000 + 123 if micro else tr["time"]
        fields = [tr["id"], f"{tr['price']:.8f}", f"{tr['size']:.8f}", tr["id"] * 3, tr["id"] * 3 + 2, t, "True"]
        out.append(",".join(str(f) for f in fields + (["True"] if columns == 8 else [])))
    return out


def read_store(data_dir, fn):
    async def run():
        store = EmbeddedStore(str(data_dir / "tvflux.duckdb"), default_plan())
        await store.start()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())


def trade_rows(data_dir, symbol):
    async def fn(store):
        return await store._run(
            lambda c: c.execute(
                "SELECT id, ts_ns, price, size FROM trades WHERE symbol = ? ORDER BY ts_ns", [symbol]
            ).fetchall()
        )

    return read_store(data_dir, fn)


def test_import_csv_and_zip_then_reimport_is_idempotent(tmp_path):
    btc = make_trades(1, 1500, 5_000_000, T0_MS)
    eth = make_trades(2, 800, 9_000_000, T0_MS + 3_600_000)
    btc_lines = csv_lines(btc)
    # bad rows in the middle, with their reasons
    btc_lines[100:100] = [
        "5000100,40000",
        "x1,40000.1,1,1,1,1704067200000,True,True",
        f"7,0,1,1,1,{T0_MS},True,True",
        f"8,40000,1,1,1,{T0_MS * 10**6},True,True",
    ]
    (tmp_path / "BTCUSDT-aggTrades-2024-01.csv").write_text("\n".join(btc_lines) + "\n")
    with zipfile.ZipFile(tmp_path / "ETHUSDT-aggTrades-2024-01.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(
            "ETHUSDT-aggTrades-2024-01.csv", HEADER7 + "\n" + "\n".join(csv_lines(eth, micro=True, columns=7)) + "\n"
        )
    data = tmp_path / "data"
    files = [str(tmp_path / "BTCUSDT-aggTrades-2024-01.csv"), str(tmp_path / "ETHUSDT-aggTrades-2024-01.zip")]

    out = ops(["import", *files, "--block-bytes", "4096"], data)  # many chunks of ~50 rows
    assert out.returncode == 0, out.stderr
    assert "BTCUSDT, 1,504 rows: 1,500 stored, 0 already stored, 4 rejected" in out.stderr
    for reason in ("malformed row: 1", "bad id: 1", "bad price: 1", "bad time: 1"):
        assert f"rejected, {reason} " in out.stderr, out.stderr
    assert "ETHUSDT, 800 rows: 800 stored" in out.stderr and "timestamps in µs" in out.stderr
    assert "import BTCUSDT-aggTrades-2024-01.csv [" in out.stderr  # the progress bar
    assert "downsampling:" in out.stderr

    for symbol, trades in (("BTCUSDT", btc), ("ETHUSDT", eth)):
        rows = trade_rows(data, symbol)
        assert [r[0] for r in rows] == [str(t["id"]) for t in trades]  # file order = time order, ids kept
        assert [r[1] // 1_000_000 for r in rows] == [t["time"] for t in trades]
        assert len({r[1] for r in rows}) == len(rows)  # unique nanosecond timestamps
        for res in ("1S", "1", "60", "1D"):
            resolution = parse_resolution(res)

            async def bars(store, symbol=symbol, resolution=resolution):
                status = await store.downsampling_status(T0_MS)
                assert all(s.watermark is not None for s in status)  # the import ran downsampling
                return await store.bars(symbol, resolution, 0, T0_MS + 10 * 86_400_000)

            got = [(b.time, b.open, b.high, b.low, b.close, pytest.approx(b.volume)) for b in read_store(data, bars)]
            want = [
                (r["time"], r["open"], r["high"], r["low"], r["close"], r["volume"])
                for r in reference_bars(trades, resolution)
            ]
            assert got == want, res

    again = ops(["import", *files, "--block-bytes", "8192"], data)
    assert again.returncode == 0, again.stderr
    assert "BTCUSDT, 1,504 rows: 0 stored, 1,500 already stored, 4 rejected" in again.stderr
    assert "ETHUSDT, 800 rows: 0 stored, 800 already stored" in again.stderr
    assert "- .. -" not in again.stderr  # a re-import still says which span the file covers
    first = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(btc[0]["time"] / 1000))
    last = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(btc[-1]["time"] / 1000))
    assert f"trades from {first} to {last} UTC" in again.stderr, again.stderr
    assert len(trade_rows(data, "BTCUSDT")) == 1500


def test_overlapping_files_store_each_trade_once_with_unique_timestamps(tmp_path):
    trades = make_trades(3, 1200, 100, T0_MS)
    # New trades in milliseconds that already hold stored ones: they must be numbered
    # after them, not collide with them.
    trades[600]["time"] = trades[599]["time"]
    trades[800]["time"] = trades[799]["time"]
    month = tmp_path / "month.csv"
    month.write_text("\n".join(csv_lines(trades[:600] + trades[601:800])) + "\n")
    day = tmp_path / "day.csv"  # overlaps the month's last 300 trades, adds 401 more
    day.write_text("\n".join(csv_lines(trades[500:])) + "\n")
    data = tmp_path / "data"
    first = ops(["import", str(month), "--symbol", "SOLUSDT", "--no-downsample"], data)
    assert first.returncode == 0, first.stderr
    assert "downsampling:" not in first.stderr
    second = ops(["import", str(day), "--symbol", "SOLUSDT", "--block-bytes", "2048"], data)
    assert second.returncode == 0, second.stderr
    assert "700 rows: 401 stored, 299 already stored, 0 rejected" in second.stderr
    rows = trade_rows(data, "SOLUSDT")
    assert sorted(int(r[0]) for r in rows) == [t["id"] for t in trades]
    assert len({r[1] for r in rows}) == len(rows)


def test_files_that_cannot_be_imported_fail_with_a_reason(tmp_path):
    good = tmp_path / "BTCUSDT-aggTrades-2024-02.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("BTCUSDT-aggTrades-2024-02.csv", "\n".join(csv_lines(make_trades(4, 50, 1, T0_MS))) + "\n")
    (tmp_path / "BTCUSDT-aggTrades-2024-02.zip.CHECKSUM").write_text(
        hashlib.sha256(good.read_bytes()).hexdigest() + "  BTCUSDT-aggTrades-2024-02.zip\n"
    )
    damaged = tmp_path / "ETHUSDT-aggTrades-2024-02.zip"
    damaged.write_bytes(good.read_bytes())
    (tmp_path / "ETHUSDT-aggTrades-2024-02.zip.CHECKSUM").write_text("0" * 64 + "  ETHUSDT-aggTrades-2024-02.zip\n")
    nameless = tmp_path / "trades.csv"
    nameless.write_text("\n".join(csv_lines(make_trades(5, 10, 1, T0_MS))) + "\n")
    other = tmp_path / "LTCUSDT-aggTrades-2024-02.csv"
    other.write_text("time,price\n1,2\n")
    out = ops(
        ["import", str(good), str(damaged), str(nameless), str(other), str(tmp_path / "missing.csv")], tmp_path / "data"
    )
    assert out.returncode == 1
    assert "BTCUSDT-aggTrades-2024-02.csv: BTCUSDT, 50 rows: 50 stored" in out.stderr
    assert "ETHUSDT-aggTrades-2024-02.zip: FAILED: sha256 does not match" in out.stderr
    assert "trades.csv: FAILED: cannot tell the symbol" in out.stderr
    assert "LTCUSDT-aggTrades-2024-02.csv: FAILED:" in out.stderr and "7 or 8" in out.stderr
    assert "missing.csv: FAILED: no such file" in out.stderr
    assert "total: 50 trades stored" in out.stderr


def test_import_while_the_service_holds_the_store_goes_through_it(server_factory, tmp_path):
    """(More in test_while_serving.py.)"""
    server = server_factory(synthetic_rate="0")
    path = tmp_path / "BTCUSDT-aggTrades-2024-01.csv"
    path.write_text("\n".join(csv_lines(make_trades(6, 5, 1, T0_MS))) + "\n")
    out = ops(["import", str(path)], server.data_dir)
    assert out.returncode == 0 and "sending the trades to" in out.stderr and "5 stored" in out.stderr, out.stderr
