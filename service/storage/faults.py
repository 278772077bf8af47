"""Fault injection for the fault tests and drills, each enabled only by its own
``TVFLUX_FAULT_*`` variable and never on by default.

- :class:`FaultInjectingStore` (``TVFLUX_FAULT_STORE_DOWN_FILE``): while the file exists,
  every store write fails as if the store were unreachable. Reads still work (an outage of
  writes is the interesting case: acks must keep their promise).
- :func:`slow_reads` (``TVFLUX_FAULT_SLOW_QUERY_FILE``, embedded store): while the file
  exists, every history read first keeps DuckDB busy with real work, as a query that
  takes seconds would (a huge scan, a cold cache, a starved machine)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from service.core.errors import StoreUnavailable
from service.core.models import Bar, TierStatus, TradeColumns
from service.core.resolution import Resolution
from service.core.symbols import SymbolSpec
from service.storage.base import Deletion, Health, Manifest, RunReport, Store

if TYPE_CHECKING:
    import duckdb

SLOW_READ_MAX_S = 120.0  # a forgotten trigger file cannot stall a read for longer
# Real DuckDB work in slices of ~50 ms, so the file's removal is seen soon and an interrupt
# lands inside a running statement, as it would in a slow query of the service's own.
_SLOW_SLICE_SQL = "SELECT count(*) FROM range(20000000) WHERE range % 7 = 3"


def slow_reads(trigger_path: str) -> Callable[[duckdb.DuckDBPyConnection], None]:
    """A ``before_read`` hook for :class:`~service.storage.embedded.store.EmbeddedStore`:
    while ``trigger_path`` exists, the read's own cursor runs DuckDB work, slice after slice.
    Interrupting the cursor ends it like any query (``duckdb.InterruptException``)."""

    def stall(cursor: duckdb.DuckDBPyConnection) -> None:
        deadline = time.monotonic() + SLOW_READ_MAX_S
        while os.path.exists(trigger_path) and time.monotonic() < deadline:
            cursor.execute(_SLOW_SLICE_SQL).fetchall()

    return stall


class FaultInjectingStore:
    """Forwards the whole :class:`~service.storage.base.Store` contract to ``inner``, method
    by method (so a contract change that is not forwarded fails loudly, not silently)."""

    def __init__(self, inner: Store, trigger_path: str) -> None:
        self._inner = inner
        self.trigger_path = trigger_path
        self.kind = inner.kind
        self.retry_start = inner.retry_start
        self.downsampling_in_database = inner.downsampling_in_database
        self.commits_spool_seq = inner.commits_spool_seq

    def _down(self) -> bool:
        return os.path.exists(self.trigger_path)

    async def start(self) -> None:
        await self._inner.start()

    async def close(self) -> None:
        await self._inner.close()

    async def health(self) -> Health:
        if self._down():
            return Health(False, "injected outage")
        return await self._inner.health()

    async def append(self, batches: Sequence[TradeColumns], *, spool_seq: int | None = None) -> None:
        if self._down():
            raise StoreUnavailable(f"injected outage ({self.trigger_path} exists)")
        await self._inner.append(batches, spool_seq=spool_seq)

    async def committed_spool_seq(self) -> int:
        return await self._inner.committed_spool_seq()

    async def delete_trades(
        self, symbol: str, *, ids: Sequence[str] | None = None, from_ns: int | None = None, to_ns: int | None = None
    ) -> Deletion:
        if self._down():
            raise StoreUnavailable(f"injected outage ({self.trigger_path} exists)")
        return await self._inner.delete_trades(symbol, ids=ids, from_ns=from_ns, to_ns=to_ns)

    async def bars(self, symbol: str, resolution: Resolution, from_ms: int, to_ms: int) -> list[Bar]:
        return await self._inner.bars(symbol, resolution, from_ms, to_ms)

    async def previous_bar_time(self, symbol: str, resolution: Resolution, before_ms: int) -> int | None:
        return await self._inner.previous_bar_time(symbol, resolution, before_ms)

    async def bars_before(self, symbol: str, resolution: Resolution, to_ms: int, count: int) -> list[Bar]:
        return await self._inner.bars_before(symbol, resolution, to_ms, count)

    async def symbols(self) -> list[str]:
        return await self._inner.symbols()

    async def trade_span(self, symbol: str) -> tuple[int, int] | None:
        return await self._inner.trade_span(symbol)

    async def last_ts_ns(self, symbol: str, from_ns: int, to_ns: int) -> int | None:
        return await self._inner.last_ts_ns(symbol, from_ns, to_ns)

    async def known_ids(
        self, symbol: str, ids: Sequence[str], from_ns: int | None = None, to_ns: int | None = None
    ) -> set[str]:
        return await self._inner.known_ids(symbol, ids, from_ns, to_ns)

    async def recent_ids(self, limit: int) -> list[tuple[str, str]]:
        return await self._inner.recent_ids(limit)

    async def newest_ids(self, symbol: str, limit: int) -> list[tuple[str, int]]:
        return await self._inner.newest_ids(symbol, limit)

    async def symbol_specs(self) -> list[SymbolSpec]:
        return await self._inner.symbol_specs()

    async def save_symbol(self, spec: SymbolSpec) -> None:
        if self._down():
            raise StoreUnavailable(f"injected outage ({self.trigger_path} exists)")
        await self._inner.save_symbol(spec)

    async def purge_symbol(self, symbol: str) -> int:
        if self._down():
            raise StoreUnavailable(f"injected outage ({self.trigger_path} exists)")
        return await self._inner.purge_symbol(symbol)

    async def trade_count(self) -> int | None:
        return await self._inner.trade_count()

    async def downsampling_status(self, now_ms: int) -> list[TierStatus]:
        return await self._inner.downsampling_status(now_ms)

    async def run_downsampling(
        self, now_ms: int, *, max_windows: int | None = None, timeout_s: float | None = None
    ) -> RunReport:
        return await self._inner.run_downsampling(now_ms, max_windows=max_windows, timeout_s=timeout_s)

    async def snapshot(self, directory: str) -> Manifest:
        return await self._inner.snapshot(directory)
