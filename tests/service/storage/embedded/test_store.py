"""Embedded-store specifics beyond the contract: abandoned runs leave no partial tier,
abandoned reads stop, and requests before a symbol's first trade read nothing."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

import duckdb
import pytest

from service.core.errors import RunTimeout
from service.core.plan import default_plan
from service.core.resolution import parse_resolution
from service.storage.embedded.store import EmbeddedStore
from service.storage.faults import slow_reads
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
        assert (report.ran[0].tier, report.ran[0].from_ms) == ("1m", earliest_ms // 60_000 * 60_000)
        assert all(s.watermark is not None for s in await store.downsampling_status(NOW_MS))
        # the cursor interrupted at the deadline is usable again
        assert await store.trade_count() > 0
    finally:
        await store.close()


async def test_a_read_its_caller_gave_up_on_is_interrupted(tmp_path):
    """A slow history read (the fault hook's real DuckDB work) whose caller times out stops
    at once instead of running on in its worker thread; the store answers the next read."""
    trigger = tmp_path / "slow"
    trigger.touch()
    ended: list[tuple[float, str]] = []
    stall = slow_reads(str(trigger))

    def observed(cursor: duckdb.DuckDBPyConnection) -> None:
        try:
            stall(cursor)
        finally:
            ended.append((time.monotonic(), type(sys.exc_info()[1]).__name__))

    store = EmbeddedStore(str(tmp_path / "t.duckdb"), default_plan(), before_read=observed)
    await store.start()
    try:
        await store.append(synthetic(days=1))
        minute = parse_resolution("1")
        for read in (
            store.bars("BTCUSD", minute, NOW_MS - 3_600_000, NOW_MS),
            store.bars_before("BTCUSD", minute, NOW_MS, 300),
            store.previous_bar_time("BTCUSD", minute, NOW_MS),
        ):
            ended.clear()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(read, 0.3)
            gave_up = time.monotonic()
            await wait_for_condition(lambda: bool(ended), 5)
            ((at, exc),) = ended
            assert exc == "InterruptException" and at - gave_up < 1.0
        trigger.unlink()
        assert len(await store.bars_before("BTCUSD", minute, NOW_MS, 300)) == 300
    finally:
        await store.close()


async def test_requests_before_the_first_trade_read_nothing(tmp_path):
    """Once a symbol's first stored trade is known, a countback or previous_bar_time ending
    at or before it answers without a read (it was two statements, one a top-N over every
    older tier row); after a delete that reaches the first trade the store reads it again."""
    reads: list[int] = []
    store = EmbeddedStore(str(tmp_path / "t.duckdb"), default_plan(), before_read=lambda c: reads.append(1))
    await store.start()
    try:
        trades = synthetic(days=1)
        await store.append(trades)
        await store.run_downsampling(NOW_MS)
        minute = parse_resolution("1")
        assert len(await store.bars_before("BTCUSD", minute, NOW_MS, 300)) == 300  # the first trade is read
        first_ms = min(int(b.ts_ns.min()) for b in trades if b.symbol == "BTCUSD") // 1_000_000
        reads.clear()
        for text in ("1S", "1", "60", "1D", "1W", "1M"):
            res = parse_resolution(text)
            edge = res.bucket_start_ms(first_ms)
            assert await store.bars_before("BTCUSD", res, edge, 300) == []
            assert await store.previous_bar_time("BTCUSD", res, edge) is None
        assert reads == []
        await store.delete_trades("BTCUSD", from_ns=first_ms * 1_000_000, to_ns=(first_ms + 60_000) * 1_000_000)
        assert await store.bars_before("BTCUSD", minute, minute.bucket_start_ms(first_ms), 300) == []
        assert len(reads) == 1  # the first trade read anew
    finally:
        await store.close()


async def wait_for_condition(pred: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
