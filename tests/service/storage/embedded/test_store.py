"""Embedded-store specifics beyond the contract: abandoned runs leave no partial tier."""

from __future__ import annotations

import pytest

from service.core.errors import RunTimeout
from service.core.plan import default_plan
from service.storage.embedded.store import EmbeddedStore
from tests.service.storage.test_contract import NOW_MS, synthetic


async def test_run_past_its_deadline_is_rolled_back_and_retried(tmp_path):
    store = EmbeddedStore(str(tmp_path / "t.duckdb"), default_plan())
    await store.start()
    try:
        trades = synthetic(days=2)
        await store.append(trades)
        earliest_ms = min(int(b.ts_ns.min()) for b in trades) // 1_000_000
        with pytest.raises(RunTimeout):
            await store.run_downsampling(NOW_MS, timeout_s=0.0)
        status = await store.downsampling_status(NOW_MS)
        assert [s.watermark for s in status] == [None] * 6  # nothing advanced
        count = await store._run(lambda c: c.execute("SELECT count(*) FROM bars_1m").fetchall()[0][0])
        assert count == 0  # and nothing half-written
        report = await store.run_downsampling(NOW_MS, timeout_s=60)  # the retry starts from scratch
        assert (report.ran[0].tier, report.ran[0].fromMs) == ("1m", earliest_ms // 60_000 * 60_000)
        assert all(s.watermark is not None for s in await store.downsampling_status(NOW_MS))
        # the cursor interrupted at the deadline is usable again
        assert await store.trade_count() > 0
    finally:
        await store.close()
