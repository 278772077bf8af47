"""History's answers beyond what the store contract pins (service/runtime/history.py)."""

from __future__ import annotations

from service.core.models import BarsResponse
from service.core.plan import default_plan
from service.core.resolution import Resolution
from service.runtime.history import History, SymbolSet
from service.runtime.writer import TradeWriter
from service.storage.embedded.store import EmbeddedStore
from tests.service.storage.test_contract import NOW_MS, synthetic


class CountedStore(EmbeddedStore):
    """The real store, counting previous_bar_time lookups."""

    lookups = 0

    async def previous_bar_time(self, symbol: str, resolution: Resolution, before_ms: int) -> int | None:
        self.lookups += 1
        return await super().previous_bar_time(symbol, resolution, before_ms)


async def test_an_empty_countback_is_no_data_without_a_second_lookup(tmp_path):
    """An empty countback already says that nothing lies before ``to``: noData, no nextTime,
    and no previous_bar_time (one more store round trip: an InfluxQL request on InfluxDB).
    An empty ``from``/``to`` range still looks up where the older bars are."""
    store = CountedStore(str(tmp_path / "t.duckdb"), default_plan())
    await store.start()
    try:
        trades = synthetic(("BTCUSD",), days=1)
        await store.append(trades)
        history = History(store, TradeWriter(store), SymbolSet(("BTCUSD",)), max_bars=10_000)
        first_s = min(int(b.ts_ns.min()) for b in trades) // 1_000_000_000
        for countback in ("1", "300"):
            request = history.parse("BTCUSD", "1", None, str(first_s - 3600), countback, now_ms=NOW_MS)
            assert await history.query(request) == BarsResponse(bars=[], no_data=True, next_time=None)
        assert store.lookups == 0
        request = history.parse("BTCUSD", "1", str(NOW_MS // 1000 + 60), str(NOW_MS // 1000 + 600), None, now_ms=NOW_MS)
        last_ms = max(int(b.ts_ns.max()) for b in trades) // 1_000_000
        assert await history.query(request) == BarsResponse(bars=[], no_data=True, next_time=last_ms // 60_000 * 60_000)
        assert store.lookups == 1
    finally:
        await store.close()
