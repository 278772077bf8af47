"""The trade writer: accepted trades wait in memory and go to the store in batches.

One append per flush, when ``flush_rows`` trades are waiting or every
``flush_interval_ms``. A failed append is retried with capped exponential backoff and
jitter, the trades staying pending (and visible to history) meanwhile.

With a :class:`~service.runtime.spool.Spool` (the service always has one), every batch is written
to it *before* :meth:`TradeWriter.submit` returns, i.e. before the client's ack: that is
the durability promise. Memory is bounded: past ``max_pending_rows`` new batches live
only in the spool ("spilled") until the store catches up, and are read back from it in
order; past the spool's own bound, :meth:`submit` raises
:class:`~service.core.errors.Overloaded` (429) and nothing is acknowledged. The store commits
the newest spool sequence with each append, so a replay after a crash stores nothing
twice. Spilled trades reach the live bars at once but history only once stored.

History must see every accepted trade exactly once: either in the store or in the
pending list. :attr:`TradeWriter.visibility` is a readers/writer lock: a flush holds it
exclusively from the append to the removal from pending; a history read holds it shared
from its store query to its pending snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

import anyio.to_thread
import numpy as np

from service.core.errors import Overloaded, SpoolUnavailable, TvfluxError
from service.core.instruments import BATCH_ROWS_BOUNDS, WRITE_SECONDS_BOUNDS, Histogram, LagClock
from service.core.models import TradeColumns
from service.runtime.spool import Spool
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
        spool: Spool | None = None,
        flush_interval_ms: int = 200,
        flush_rows: int = 50_000,
        max_pending_rows: int = 2_000_000,
        retry_base_s: float = 0.1,
        retry_cap_s: float = 10.0,
    ) -> None:
        self.store = store
        self.spool = spool
        self.committed_seq = 0  # newest submission known to be in the store
        self.spilling = False  # batches beyond memory wait only in the spool
        self.spilled_rows = 0
        self._spill_start = 0
        self.flush_interval_s = flush_interval_ms / 1000
        self.flush_rows = flush_rows
        self.max_pending_rows = max_pending_rows
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.visibility = ReadWriteLock()
        # called with each appended batch list and the new committed_seq, inside the
        # visibility lock (the hot window of history keeps itself current from it)
        self.on_stored: list[Callable[[list[TradeColumns], int], None]] = []
        self._pending: deque[tuple[int, list[TradeColumns]]] = deque()
        self.pending_rows = 0
        self.last_seq = 0  # sequence number of the newest accepted submission
        self.stored_rows = 0
        self.failures = 0
        self.last_error: str | None = None
        # read at scrape time by /metrics and /health/ready; observed per batch or flush
        self.batch_rows = Histogram(BATCH_ROWS_BOUNDS)  # rows per accepted submission
        self.append_seconds = Histogram(WRITE_SECONDS_BOUNDS)  # successful store appends
        self.lag = LagClock()  # age of the oldest submission not yet in the store
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._idle = asyncio.Event()
        self._idle.set()

    def check_capacity(self, rows: int) -> None:
        if self.spool is None and self.pending_rows + rows > self.max_pending_rows:
            raise Overloaded(
                f"the writer has {self.pending_rows} trades waiting for the store; retry later",
                retry_after_s=max(1.0, self.flush_interval_s * 5),
            )

    @property
    def visible_seq(self) -> int:
        """Newest submission that history can see (spilled ones are not, until stored)."""
        return self.last_seq if not self.spilling else max(self.committed_seq, self._spill_start - 1)

    def submit(self, batches: list[TradeColumns]) -> int:
        """Make accepted trades durable (spool) and queue them; returns their sequence
        number. Raises :class:`Overloaded` before anything is kept."""
        rows = sum(len(b) for b in batches)
        self.check_capacity(rows)
        seq = self.last_seq + 1
        if self.spool is not None:
            self.spool.append(seq, batches)  # may raise Overloaded: then nothing happened
        self.last_seq = seq
        self.batch_rows.observe(rows)
        self.lag.mark(seq, time.monotonic())
        self._idle.clear()
        if self.spool is not None and (self.spilling or self.pending_rows + rows > self.max_pending_rows):
            if not self.spilling:
                self.spilling, self._spill_start = True, seq
                log.warning(
                    "writer: %d trades wait for the store; spilling new batches to the spool only", self.pending_rows
                )
            self.spilled_rows += rows
            self._wake.set()
            return seq
        self._pending.append((seq, batches))
        self.pending_rows += rows
        if self.pending_rows >= self.flush_rows:
            self._wake.set()
        return seq

    async def recover(self) -> int:
        """On start, after the store: schedule spool records the store lacks; returns how
        many trades wait to be replayed (call :meth:`drain` to replay them now)."""
        if self.spool is None:
            return 0
        last = self.spool.open()
        self.committed_seq = await self._store_committed_seq()
        self.last_seq = max(last, self.committed_seq)
        waiting = sum(len(b) for _, group in self.spool.read_after(self.committed_seq, 2**62) for b in group)
        if waiting:
            self.spilling, self._spill_start = True, self.committed_seq + 1
            self.spilled_rows = waiting
            self._idle.clear()
            log.info("spool: %d trades acknowledged before the last stop are not in the store yet; replaying", waiting)
        return waiting

    async def _store_committed_seq(self) -> int:
        if self.store.commits_spool_seq:
            return int(await self.store.committed_spool_seq())
        # Stores that cannot commit it atomically: a marker file (replays are idempotent there),
        # read and written in a worker thread: a busy disk must not stall the event loop.
        return await asyncio.to_thread(self._read_marker)

    def _read_marker(self) -> int:
        try:
            with open(self._marker_path()) as f:
                return int(f.read().strip() or 0)
        except FileNotFoundError:
            return 0

    def _marker_path(self) -> str:
        assert self.spool is not None
        return os.path.join(self.spool.directory, "committed")

    async def _append(self, batches: list[TradeColumns], max_seq: int) -> None:
        if self.spool is not None and self.store.commits_spool_seq:
            await self.store.append(batches, spool_seq=max_seq)
            return
        await self.store.append(batches)
        if self.spool is not None:
            await asyncio.to_thread(self._write_marker, max_seq)

    def _write_marker(self, max_seq: int) -> None:
        tmp = self._marker_path() + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.write(str(max_seq))
            os.replace(tmp, self._marker_path())
        except OSError as exc:  # retried: appending the same batch again is idempotent there
            raise SpoolUnavailable(f"cannot record the stored spool position in {tmp}: {exc}") from exc

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
        failed: str | None = None
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            if self.spool is not None and self.spool.sync_due():
                await anyio.to_thread.run_sync(self.spool.sync)
            try:
                await self.flush()
            except TvfluxError as exc:  # e.g. the spool unreadable for want of file descriptors
                self.failures += 1
                self.last_error = failed = exc.message
                log.warning("writer: %s; retrying", exc.message)
                await asyncio.sleep(self.retry_base_s * 10)
            except Exception as exc:  # never let the writer die: what it holds is acknowledged
                self.failures += 1
                self.last_error = failed = f"unexpected error: {exc!r}"
                log.exception("writer: unexpected error; retrying")
                await asyncio.sleep(self.retry_base_s * 10)
            else:
                if self.last_error is not None and self.last_error == failed:
                    self.last_error = None

    async def flush(self) -> int:
        """Append everything pending now, retrying until the store takes it. Flushes are
        serialised: two at once would append the same pending batches twice."""
        async with self._flush_lock:
            return await self._flush()

    async def _flush(self) -> int:
        from_spool = False
        if self._pending:
            taken: list[tuple[int, list[TradeColumns]]] = list(self._pending)
        elif self.spilling and self.spool is not None:
            taken = self.spool.read_after(self.committed_seq, self.flush_rows)
            if not taken:  # caught up: nothing is spilled any more (no await since the read)
                self.spilling, self.spilled_rows = False, 0
                self.lag.clear()
                self._idle.set()
                return 0
            from_spool = True
        else:
            self._idle.set()
            return 0
        batches = _coalesce([b for _, group in taken for b in group])
        rows = sum(len(b) for b in batches)
        max_seq = taken[-1][0]
        attempt = 0
        while True:
            try:
                async with self.visibility.write():
                    append_started = time.perf_counter()
                    await self._append(batches, max_seq)
                    self.append_seconds.observe(time.perf_counter() - append_started)
                    if from_spool:
                        self.spilled_rows = max(0, self.spilled_rows - rows)
                        if self.spilled_rows == 0:  # every spilled batch is stored now
                            self.spilling = False
                    else:
                        for _ in taken:
                            self._pending.popleft()
                        self.pending_rows -= rows
                    self.committed_seq = max_seq
                    for hook in self.on_stored:
                        hook(batches, max_seq)
                break
            except TvfluxError as exc:
                attempt += 1
                self.failures += 1
                self.last_error = exc.message
                delay = min(self.retry_cap_s, self.retry_base_s * 2 ** min(attempt, 20)) * random.uniform(0.5, 1.0)
                if attempt == 1 or attempt % 10 == 0:
                    log.warning(
                        "store append failed (attempt %d, %d trades kept pending): %s; retrying in %.2fs",
                        attempt,
                        rows,
                        exc.message,
                        delay,
                    )
                await asyncio.sleep(delay)
        self.last_error = None
        self.stored_rows += rows
        if self.spool is not None:
            self.spool.release(self.committed_seq)
        self.lag.done_through(self.committed_seq)
        if not self._pending and not self.spilling:
            self.lag.clear()
            self._idle.set()
        return rows

    async def drain(self) -> None:
        """Flush until nothing is pending or spilled (start-up replay, shutdown)."""
        while self._pending or self.spilling:
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
        out.append(
            TradeColumns(
                symbol,
                np.concatenate([p.ts_ns for p in parts]),
                np.concatenate([p.price for p in parts]),
                np.concatenate([p.size for p in parts]),
                ids,
            )
        )
    return out
