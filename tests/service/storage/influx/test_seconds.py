"""Second-resolution countback on a real influxd (``service/storage/influx/seconds.py``):
raw trades folded in Python must give exactly the bars InfluxDB's own aggregation gives
(``InfluxStore.bars``, ``GROUP BY time(...)``), bit for bit, volumes included, whether a
read covers the page, is cut by the row limit, or leaves the rest to the general countback,
and whatever the series' hint learnt from the pages before."""

from __future__ import annotations

import pytest

from service.core.resolution import parse_resolution
from service.core.settings import load_settings
from service.storage.influx import seconds
from service.storage.influx.store import InfluxStore
from tests.service.storage.influx.test_real_server import MINUTE_MS, deployment_env
from tests.service.storage.test_contract import synthetic

NOW_MS = 1_790_000_000_000 // MINUTE_MS * MINUTE_MS
HOUR_MS = 3_600_000


@pytest.fixture
async def store(influx_server):
    settings = load_settings(deployment_env(influx_server, "secs"))
    store = InfluxStore(settings, settings.plan, schedule_tasks=False)
    await store.start()
    yield store
    await store.destroy()


def market():
    """Dense, then sparse for hours, then a quiet hour, then dense again."""
    return [
        *synthetic(("BTCUSD",), days=0.4 / 24, rate=20, seed=1, end_ms=NOW_MS - 7 * HOUR_MS),
        *synthetic(("BTCUSD",), days=5 / 24, rate=0.05, seed=2, end_ms=NOW_MS - HOUR_MS),
        *synthetic(("BTCUSD",), days=0.2 / 24, rate=20, seed=3, end_ms=NOW_MS),
    ]


@pytest.mark.parametrize("raw_rows", [seconds.RAW_ROWS, 150])
async def test_second_bars_before_equal_influxdbs_own_aggregation(store, monkeypatch, raw_rows):
    monkeypatch.setattr(seconds, "RAW_ROWS", raw_rows)  # 150: reads cut by the limit
    await store.append(market())
    count = 120
    for text in ("1S", "5S", "30S"):
        res = parse_resolution(text)
        everything = await store.bars("BTCUSD", res, NOW_MS - 8 * HOUR_MS, NOW_MS + MINUTE_MS)
        for to_ms in (NOW_MS + 1, NOW_MS - HOUR_MS + 500, NOW_MS - 7 * HOUR_MS + 1_500):
            for _ in range(12):  # a chart scrolling back: each page before the previous one
                want = [b for b in everything if b.time < to_ms][-count:]
                got = await store.bars_before("BTCUSD", res, to_ms, count)
                assert got == want, (text, to_ms, len(got), len(want))
                if len(got) < count:
                    break
                to_ms = got[0].time


def test_fold_trades_keeps_influxdbs_order_of_sums():
    rows = [(1_000, 10.0, 0.1), (1_400, 12.0, 0.2), (1_999, 9.0, 0.3), (3_000, 11.0, 0.7)]
    first, second = seconds.fold_trades(rows, 1_000)
    assert (first.time, first.open, first.high, first.low, first.close) == (1_000, 10.0, 12.0, 9.0, 9.0)
    assert first.volume == (0.0 + 0.1) + 0.2 + 0.3  # in time order from 0, not math.fsum
    assert (second.time, second.open, second.volume) == (3_000, 11.0, 0.7)
