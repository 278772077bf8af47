"""The trade writer: accepted trades wait in memory and go to the store in batches.

One append per flush, when ``flush_rows`` trades are waiting or every
``flush_interval_ms``. A failed append is retried with capped exponential backoff and
jitter, the trades staying pending (and visible to history) meanwhile. Memory is
bounded: past ``max_pending_rows`` :meth:`TradeWriter.submit` raises
:class:`~service.errors.Overloaded` and the client is told to retry — nothing accepted
is ever dropped.

History must see every accepted trade exactly once: either in the store or in the
pending list. :attr:`TradeWriter.visibility` is a readers/writer lock: a flush holds it
exclusively from the append to the removal from pending; a history read holds it shared
from its store query to its pending snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import AsyncIterator

import numpy as np

from service.errors import Overloaded, TvfluxError
from service.models import TradeColumns
from service.storage.base import Store

log = logging.getLogger(__name__)


class ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers (no starvation)."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._writer and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            async with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        async with self._cond:
            self._writers_waiting += 1
            try:
                await self._cond.wait_for(lambda: not self._writer and self._readers == 0)
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            async with self._cond:
                self._writer = False
                self._cond.notify_all()


class TradeWriter:
    def __init__(
        self,
        store: Store,
        *,
        flush_interval_ms: int = 200,
        flush_rows: int = 50_000,
        max_pending_rows: int = 2_000_000,
        retry_base_s: float = 0.1,
        retry_cap_s: float = 10.0,
    ) -> None:
        self.store = store
        self.flush_interval_s = flush_interval_ms / 1000
        self.flush_rows = flush_rows
        self.max_pending_rows = max_pending_rows
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.visibility = ReadWriteLock()
        self._pending: deque[tuple[int, list[TradeColumns]]] = deque()
        self.pending_rows = 0
        self.last_seq = 0  # sequence number of the newest accepted submission
        self.stored_rows = 0
        self.failures = 0
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._idle = asyncio.Event()
        self._idle.set()

    def check_capacity(self, rows: int) -> None:
        if self.pending_rows + rows > self.max_pending_rows:
            retry_after_s = max(1.0, self.flush_interval_s * 5)
            raise Overloaded(
                f"the writer has {self.pending_rows} trades waiting for the store; retry later",
                retry_after_s=retry_after_s,
            )

    def submit(self, batches: list[TradeColumns]) -> int:
        """Queue accepted trades; returns their sequence number."""
        rows = sum(len(b) for b in batches)
        self.check_capacity(rows)
        self.last_seq += 1
        self._pending.append((self.last_seq, batches))
        self.pending_rows += rows
        self._idle.clear()
        if self.pending_rows >= self.flush_rows:
            self._wake.set()
        return self.last_seq

    def pending_for(self, symbol: str) -> list[TradeColumns]:
        """Trades of ``symbol`` not yet in the store (call under ``visibility.read()``)."""
        return [b for _, batches in self._pending for b in batches if b.symbol == symbol]

    def pending_last_ts_ns(self, symbol: str, from_ns: int, to_ns: int) -> int | None:
        best = None
        for b in self.pending_for(symbol):
            inside = b.ts_ns[(b.ts_ns >= from_ns) & (b.ts_ns < to_ns)]
            if inside.size and (best is None or int(inside.max()) > best):
                best = int(inside.max())
        return best

    async def run(self) -> None:
        """Flush forever (until cancelled)."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> int:
        """Append everything pending now, retrying until the store takes it. Flushes are
        serialised: two at once would append the same pending batches twice."""
        async with self._flush_lock:
            return await self._flush()

    async def _flush(self) -> int:
        if not self._pending:
            self._idle.set()
            return 0
        taken = list(self._pending)
        batches = _coalesce([b for _, group in taken for b in group])
        rows = sum(len(b) for b in batches)
        attempt = 0
        while True:
            try:
                async with self.visibility.write():
                    await self.store.append(batches)
                    for _ in taken:
                        self._pending.popleft()
                    self.pending_rows -= rows
                break
            except TvfluxError as exc:
                attempt += 1
                self.failures += 1
                self.last_error = exc.message
                delay = min(self.retry_cap_s, self.retry_base_s * 2 ** min(attempt, 20)) * random.uniform(0.5, 1.0)
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("store append failed (attempt %d, %d trades kept pending): %s; retrying in %.2fs",
                                attempt, rows, exc.message, delay)
                await asyncio.sleep(delay)
        self.last_error = None
        self.stored_rows += rows
        if not self._pending:
            self._idle.set()
        return rows

    async def drain(self) -> None:
        """Flush until nothing is pending (used at shutdown)."""
        while self._pending:
            await self.flush()


def _coalesce(batches: list[TradeColumns]) -> list[TradeColumns]:
    """One batch per symbol, in arrival order, so the store appends one table."""
    by_symbol: dict[str, list[TradeColumns]] = {}
    for b in batches:
        by_symbol.setdefault(b.symbol, []).append(b)
    out = []
    for symbol, parts in by_symbol.items():
        if len(parts) == 1:
            out.append(parts[0])
            continue
        ids = None
        if any(p.ids is not None for p in parts):
            ids = [i for p in parts for i in (p.ids if p.ids is not None else [None] * len(p))]
        out.append(TradeColumns(
            symbol,
            np.concatenate([p.ts_ns for p in parts]),
            np.concatenate([p.price for p in parts]),
            np.concatenate([p.size for p in parts]),
            ids,
        ))
    return out
