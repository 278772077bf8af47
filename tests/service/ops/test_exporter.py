"""``tvflux export``: the same bars as ``/api/bars``, from a running service or the file."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from service.core.errors import UsageError
from service.core.models import Bar
from service.core.resolution import parse_resolution
from service.ops.exporter import PageTooLarge, export, pages, parse_time_arg
from tests.reference import reference_bars

HOUR_MS = 3_600_000


def ops(args, data_dir, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TVFLUX_")}
    full_env.update({"TVFLUX_DATA_DIR": str(data_dir), "TVFLUX_LOG_LEVEL": "WARNING", **env})
    return subprocess.run(
        [sys.executable, "-m", "service.ops.commands", *args], env=full_env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "text, ms",
    [
        ("1704067200", 1_704_067_200_000),  # the magnitude names the unit: seconds
        ("1704067200000", 1_704_067_200_000),  # milliseconds
        ("1704067200000000", 1_704_067_200_000),  # microseconds
        ("2024-01-01", 1_704_067_200_000),
        ("2024-01-01T12:30:00Z", 1_704_112_200_000),
        ("2024-01-01T12:30:00.999+00:00", 1_704_112_200_000),  # whole seconds, like /api/bars
        ("2024-01-01T13:30:00+01:00", 1_704_112_200_000),
    ],
)
def test_time_arguments(text, ms):
    assert parse_time_arg(text, "from") == ms


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01", "-5", "", "0", "5000", "17040672000"])
def test_bad_time_arguments(text):
    with pytest.raises(UsageError, match="--to"):
        parse_time_arg(text, "to")


@pytest.mark.parametrize(
    "res, from_ms, to_ms, size, expected",
    [
        ("1", 30_000, 5 * 60_000, 2, [(0, 120_000), (120_000, 240_000), (240_000, 300_000)]),
        ("1", 0, 60_000, 5, [(0, 60_000)]),
        ("1", 0, 60_001, 1, [(0, 60_000), (60_000, 60_001)]),
        (
            "1M",
            1_704_067_200_000,
            1_711_929_600_000,
            2,  # 2024-01 .. 2024-04
            [(1_704_067_200_000, 1_709_251_200_000), (1_709_251_200_000, 1_711_929_600_000)],
        ),
    ],
)
def test_pages_cut_at_bucket_starts(res, from_ms, to_ms, size, expected):
    assert list(pages(parse_resolution(res), from_ms, to_ms, size)) == expected


def test_export_shrinks_pages_when_the_server_allows_fewer_bars():
    class Source:
        page_buckets = 100
        calls: list[tuple[int, int]] = []

        async def bars(self, symbol, resolution, lo, hi):
            if resolution.bucket_count(lo, hi) > 7:
                raise PageTooLarge(7)
            self.calls.append((lo, hi))
            return [Bar(t, 1, 1, 1, 1, 1) for t in range(lo, hi, 60_000)]

    class Sink:
        bars: list[Bar] = []

        def write(self, bars):
            self.bars.extend(bars)

        def close(self):
            pass

    source, sink = Source(), Sink()
    n = asyncio.run(export(source, sink, "X", parse_resolution("1"), 0, 20 * 60_000))
    assert n == 20 and [b.time for b in sink.bars] == [i * 60_000 for i in range(20)]
    assert source.page_buckets == 7 and source.calls[0] == (0, 7 * 60_000)


def read_csv(text: str) -> list[dict]:
    return [
        {k: (int(v) if k == "time" else float(v)) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))
    ]


def test_export_online_and_offline_equals_api_bars(server_factory, tmp_path):
    server = server_factory(synthetic_rate="0", max_bars="50", downsample_interval_ms="500", grace_ms="1000")
    t0 = (int(time.time() * 1000) - 3 * 86_400_000) // HOUR_MS * HOUR_MS
    trades = [
        {
            "symbol": "ETHUSD",
            "price": 2000 + (i * 7919) % 503 / 10,
            "size": 0.5 + i % 4,
            "time": t0 + (i * 7_777) % (6 * HOUR_MS) + i // 7,
        }
        for i in range(3000)
    ]
    server.post_trades(trades[:1000])
    server.post("/api/downsampling/run?wait=600")
    server.post_trades(trades[1000:])  # some stored tiers, some raw: history composes them
    trades.sort(key=lambda t: t["time"])  # the reference takes arrival order for ties; times here are distinct
    frm, to = t0 // 1000, (t0 + 6 * HOUR_MS) // 1000

    args = ["export", "--symbol", "ETHUSD", "--resolution", "1", "--from", str(frm), "--to", str(to)]
    online = ops(args, server.data_dir, TVFLUX_PORT=str(server.port))
    assert online.returncode == 0, online.stderr
    rows = read_csv(online.stdout)
    assert len(rows) == 360  # 6 hours of minutes, more than one page of 50
    want = reference_bars(trades, parse_resolution("1"))
    assert [r["time"] for r in rows] == [w["time"] for w in want]
    assert rows == [dict(w, volume=pytest.approx(w["volume"])) for w in want]
    api = []
    for lo in range(frm, to, 50 * 60):
        status, body = server.get(f"/api/bars?symbol=ETHUSD&resolution=1&from={lo}&to={min(to, lo + 50 * 60)}")
        assert status == 200, body
        api.extend(body["bars"])
    assert rows == api  # exactly, floats included

    out_file = tmp_path / "eth.parquet"
    parquet = ops(
        [
            *args[:-4],
            "--from",
            dt.datetime.fromtimestamp(frm, tz=dt.UTC).isoformat(),
            "--to",
            str(to),
            "--resolution",
            "60",
            "--format",
            "parquet",
            "--out",
            str(out_file),
        ],
        server.data_dir,
        TVFLUX_PORT=str(server.port),
    )
    assert parquet.returncode == 0, parquet.stderr
    table = pq.read_table(out_file)
    assert table.column_names == ["time", "open", "high", "low", "close", "volume"]
    assert table.schema.metadata[b"resolution"] == b"60"
    status, hourly = server.get(f"/api/bars?symbol=ETHUSD&resolution=60&from={frm}&to={to}")
    assert table.to_pylist() == hourly["bars"] and len(hourly["bars"]) == 6

    server.stop()
    offline = ops(args, server.data_dir, TVFLUX_MAX_BARS="50")
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout == online.stdout
    unknown = ops(["export", "--symbol", "NOPE", "--resolution", "1", "--from", str(frm)], server.data_dir)
    assert unknown.returncode == 1 and "no trades of 'NOPE'" in unknown.stderr
    bad = ops(["export", "--symbol", "ETHUSD", "--resolution", "7", "--from", str(frm)], server.data_dir)
    assert bad.returncode == 1 and "resolution" in bad.stderr


def test_export_progress_reads_in_days_of_range(tmp_path):
    import numpy as np

    from service.core.models import TradeColumns
    from service.core.plan import default_plan
    from service.storage.embedded.store import EmbeddedStore

    async def fill():
        store = EmbeddedStore(str(tmp_path / "tvflux.duckdb"), default_plan())
        await store.start()
        ts = np.array([1_700_000_000_000, 1_700_000_060_000], dtype=np.int64) * 1_000_000
        await store.append([TradeColumns("BTCUSD", ts, np.array([1.0, 2.0]), np.array([0.5, 0.5]))])
        await store.close()

    asyncio.run(fill())
    out = ops(
        ["export", "--symbol", "BTCUSD", "--resolution", "1D", "--from", "2000-01-01", "--to", "2024-01-01"], tmp_path
    )
    assert out.returncode == 0, out.stderr
    progress = [ln for ln in out.stderr.splitlines() if ln.startswith("export [")]
    assert len(progress) == 1, out.stderr  # printed once, not twice
    assert "8,766/8,766 days of range" in progress[0] and "ms of range" not in out.stderr, progress
