"""The trade writer with a real DuckDB store; failures are injected by a thin wrapper."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.core.errors import Overloaded, StoreUnavailable
from service.core.models import TradeColumns
from service.core.plan import default_plan
from service.runtime.writer import TradeWriter
from service.storage.embedded.store import EmbeddedStore


class Flaky:
    """Delegates to a real store; the first ``failures`` appends fail like an outage."""

    def __init__(self, store, failures):
        self.store, self.failures, self.calls = store, failures, 0

    async def append(self, batches):
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("simulated outage")
        await asyncio.sleep(0.01)  # a slow append widens any race between flushes
        await self.store.append(batches)


def batch(n, start=0, symbol="BTCUSD"):
    ts = (np.arange(n, dtype=np.int64) + start) * 1_000_000
    return TradeColumns(symbol, ts, np.full(n, 1.0), np.full(n, 1.0))


@pytest.fixture
async def store(tmp_path):
    s = EmbeddedStore(str(tmp_path / "w.duckdb"), default_plan())
    await s.start()
    yield s
    await s.close()


async def test_concurrent_flushes_never_append_twice(store):
    writer = TradeWriter(Flaky(store, 0))
    for i in range(5):
        writer.submit([batch(100, start=i * 100)])
    await asyncio.gather(writer.flush(), writer.flush(), writer.flush())
    assert await store.trade_count() == 500 and writer.pending_rows == 0


async def test_failed_appends_are_retried_and_stay_visible(store):
    flaky = Flaky(store, failures=3)
    writer = TradeWriter(flaky, retry_base_s=0.001, retry_cap_s=0.01)
    writer.submit([batch(10)])
    task = asyncio.create_task(writer.flush())
    await asyncio.sleep(0)
    assert len(writer.pending_for("BTCUSD")[0]) == 10  # history still sees them
    assert await task == 10
    assert flaky.calls == 4 and writer.failures == 3 and writer.last_error is None
    assert await store.trade_count() == 10


async def test_bounded_memory_refuses_with_retry_hint(store):
    writer = TradeWriter(store, max_pending_rows=100)
    writer.submit([batch(60)])
    with pytest.raises(Overloaded) as info:
        writer.submit([batch(60, start=60)])
    assert info.value.status == 429 and info.value.retry_after_s >= 1
    assert writer.pending_rows == 60


async def test_flush_by_size_and_interval(store):
    writer = TradeWriter(store, flush_interval_ms=50, flush_rows=100)
    runner = asyncio.create_task(writer.run())
    try:
        writer.submit([batch(150)])  # over flush_rows: flushed at once
        for _ in range(50):
            await asyncio.sleep(0.01)
            if writer.pending_rows == 0:
                break
        assert writer.pending_rows == 0
        writer.submit([batch(5, start=1000, symbol="ETHUSD")])  # small: flushed by the interval
        await asyncio.sleep(0.3)
        assert writer.pending_rows == 0 and await store.trade_count() == 155
    finally:
        runner.cancel()
