"""The synthetic market continues from the last stored price after a restart."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from service.core.models import TradeColumns
from service.core.plan import default_plan
from service.core.synthetic import SyntheticMarket, start_price
from service.runtime.sources import resume_prices
from service.storage.embedded.store import EmbeddedStore


def test_resume_prices_sets_each_symbol_to_its_last_stored_close(tmp_path):
    async def run():
        store = EmbeddedStore(str(tmp_path / "tvflux.duckdb"), default_plan())
        await store.start()
        try:
            now = 1_700_000_000_000
            ts = np.array([now - 7_200_000, now - 90_000, now - 30_000], dtype=np.int64) * 1_000_000
            await store.append([TradeColumns("BTCUSD", ts, np.array([10.0, 20.0, 123.5]), np.ones(3))])
            market = SyntheticMarket(("BTCUSD", "ETHUSD"), seed=7)
            assert await resume_prices(store, market, now) == {"BTCUSD": 123.5}  # ETHUSD: nothing stored
            batches = {b.symbol: b for b in market.trades(now, now + 60_000, 50)}
            assert abs(float(batches["BTCUSD"].price[0]) / 123.5 - 1) < 0.05
            assert abs(float(batches["ETHUSD"].price[0]) / start_price("ETHUSD") - 1) < 0.05
        finally:
            await store.close()

    asyncio.run(run())


def test_a_restarted_service_continues_the_synthetic_price(server_factory, tmp_path):
    data = str(tmp_path)
    first = server_factory(data_dir=data, synthetic_rate="0", symbols="BTCUSD")
    now = int(time.time() * 1000)
    first.post_trades([{"symbol": "BTCUSD", "price": 1234.5, "size": 1.0, "time": now - 120_000}])
    first.stop()

    second = server_factory(data_dir=data, synthetic_rate="50", synthetic_backfill_s="0", symbols="BTCUSD")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, body = second.get("/api/bars?symbol=BTCUSD&resolution=1S&countback=5")
        fresh = [b for b in body["bars"] if b["time"] > now]
        if fresh:
            break
        time.sleep(0.2)
    assert fresh, body
    # the seed's level is 60,000: the market carries on from 1,234.5 instead of jumping there
    assert abs(fresh[0]["open"] / 1234.5 - 1) < 0.05, fresh[0]
