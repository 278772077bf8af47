"""The ingest path with a real DuckDB store, writer and hub."""

from __future__ import annotations

import pytest

from service.core.errors import InvalidTrade, PayloadTooLarge
from service.core.models import Trade
from service.core.plan import default_plan
from service.runtime.history import SymbolSet
from service.runtime.hub import Hub
from service.runtime.ingest import Ingestor
from service.runtime.writer import TradeWriter
from service.storage.embedded.store import EmbeddedStore

NOW = 1_700_000_000_000


@pytest.fixture
async def parts(tmp_path):
    store = EmbeddedStore(str(tmp_path / "i.duckdb"), default_plan())
    await store.start()
    writer = TradeWriter(store)

    async def no_history(*_):
        return [], 0

    ingestor = Ingestor(
        store,
        writer,
        Hub(no_history, lambda: NOW),
        SymbolSet(("BTCUSD",)),
        max_batch_trades=100,
        max_future_ms=1000,
        id_cache_size=1,
    )
    await ingestor.start()
    yield ingestor, writer, store
    await store.close()


async def test_ids_evicted_from_memory_are_found_in_the_store(parts):
    ingestor, writer, store = parts
    trades = [Trade("BTCUSD", 1.0 + i, 1.0, NOW - 1000 + i, f"id{i}") for i in range(10)]
    assert (await ingestor.accept(trades, NOW)).accepted == 10
    await writer.flush()
    # the cache holds one id; the other nine are looked up in the store, near their time
    result = await ingestor.accept(trades, NOW)
    assert (result.accepted, result.duplicates) == (0, 10)
    assert await store.trade_count() == 10


async def test_same_millisecond_trades_get_distinct_ordered_timestamps(parts):
    ingestor, writer, store = parts
    await ingestor.accept([Trade("BTCUSD", p, 1.0, NOW - 10) for p in (1.0, 2.0, 3.0)], NOW)
    await writer.flush()
    await ingestor.accept([Trade("BTCUSD", 4.0, 1.0, NOW - 10)], NOW)
    await writer.flush()
    last = await store.last_ts_ns("BTCUSD", (NOW - 10) * 1_000_000, (NOW - 9) * 1_000_000)
    assert last == (NOW - 10) * 1_000_000 + 3


async def test_refusals_are_whole_and_specific(parts):
    ingestor, _, store = parts
    with pytest.raises(PayloadTooLarge):
        await ingestor.accept([Trade("BTCUSD", 1.0, 1.0, NOW)] * 101, NOW)
    with pytest.raises(InvalidTrade) as info:
        await ingestor.accept(
            [
                Trade("BTCUSD", 1.0, 1.0, NOW),
                Trade("BTCUSD", float("inf"), 1.0, NOW),
                Trade("XRPUSD", 1.0, 1.0, NOW),
                Trade("BTCUSD", 1.0, 1.0, NOW + 5000),
            ],
            NOW,
        )
    assert [d["index"] for d in info.value.details] == [1, 2, 3]
    assert ingestor.accepted == 0 and await store.trade_count() == 0
