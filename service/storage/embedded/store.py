"""The embedded store: one DuckDB file, the same downsampling plan the InfluxDB tasks run.

Tables::

    trades(symbol, ts_ns, price, size, id)           raw trades, appended in batches
    bars_<tier>(symbol, time_ms, open, high, low,   one table per plan tier
                close, volume, trades)
    tier_state(tier, watermark_ms, …)                progress, survives restarts
    dirty(tier, symbol, start_ms, end_ms)            closed windows that late trades touched

A tier run rewrites the bars of its window (DELETE + INSERT in one transaction, so a run
is idempotent and an interrupted run leaves nothing half-done) and advances the
watermark in the same transaction. DuckDB calls block, so they run in worker threads;
writes are serialised by one lock (DuckDB's optimistic concurrency would otherwise abort
one of two transactions touching the same rows), reads run concurrently on their own
cursors and each sees one consistent snapshot.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio.to_thread
import duckdb
import numpy as np

from service.core.errors import RunTimeout, StoreUnavailable
from service.core.models import Bar, TierRun, TierStatus, TradeColumns
from service.core.plan import RAW, Plan, Tier, Window
from service.core.resolution import Resolution, Unit
from service.core.schedule import DirtyWindow, closed_part, dirty_dependents, late_window, watermark_after
from service.core.segments import Segment, history_segments
from service.core.symbols import SymbolSpec
from service.core.timestamps import NS_PER_MS
from service.storage.base import NEWEST_IDS_SPAN_NS, ChangedWindow, Deletion, Health, Manifest, RunReport
from service.storage.embedded import symbols as registry
from service.storage.embedded.backup import snapshot
from service.storage.embedded.countback import CountbackMemory, newest_bars, nth_row_before
from service.storage.embedded.sql import bars_table, bucket_sql, tier_select_sql, trades_arrow

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trades (symbol VARCHAR NOT NULL, ts_ns BIGINT NOT NULL,
    price DOUBLE NOT NULL, size DOUBLE NOT NULL, id VARCHAR);
CREATE TABLE IF NOT EXISTS tier_state (tier VARCHAR PRIMARY KEY, watermark_ms BIGINT,
    last_run_ms BIGINT, last_duration_ms DOUBLE, rows BIGINT NOT NULL DEFAULT 0, error VARCHAR);
CREATE TABLE IF NOT EXISTS dirty (tier VARCHAR NOT NULL, symbol VARCHAR NOT NULL,
    start_ms BIGINT NOT NULL, end_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS writer_state (key VARCHAR PRIMARY KEY, value BIGINT NOT NULL);
"""

_BARS_SCHEMA = """
CREATE TABLE IF NOT EXISTS {table} (symbol VARCHAR NOT NULL, time_ms BIGINT NOT NULL,
    open DOUBLE NOT NULL, high DOUBLE NOT NULL, low DOUBLE NOT NULL, close DOUBLE NOT NULL,
    volume DOUBLE NOT NULL, trades BIGINT NOT NULL)
"""


class EmbeddedStore:
    kind = "duckdb"
    retry_start = False  # a local file: if it cannot be opened, say so at once
    downsampling_in_database = False  # the service's downsampler runs the plan as SQL
    commits_spool_seq = True  # in the append's own transaction

    def __init__(
        self,
        path: str,
        plan: Plan,
        *,
        memory_limit: str = "1GB",
        threads: int = 2,
        before_read: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    ) -> None:
        self.path = path
        # fault injection only (service.storage.faults.slow_reads): runs in a history read's
        # cursor before its query, interruptible like it
        self._before_read = before_read
        self.plan = plan
        self._memory_limit = memory_limit
        self._threads = threads
        self._con: duckdb.DuckDBPyConnection | None = None
        self._local = threading.local()
        self._write_lock = threading.RLock()  # re-entered by the dirty pass
        self._run_lock = threading.Lock()  # one downsampling run at a time
        self._deadline: float | None = None  # monotonic deadline of the run in progress
        # Committed watermarks, cached so reads can plan their segments without a query.
        # Only ever raised after a commit, so a reader never trusts a watermark too far.
        self._watermarks: dict[str, int | None] = {t.name: None for t in plan.tiers}
        # Per symbol, the envelope [lo, hi) of windows late trades made dirty and no run has
        # rebuilt yet: history reads that span from raw trades, so it is exact meanwhile.
        self._dirty_span: dict[str, tuple[int, int]] = {}
        # first trades (requests before them answer without a query) and sparse series' hints
        self._countbacks = CountbackMemory(self._write_lock)
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursor_lock = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self._open)

    def _open(self) -> None:
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        try:
            self._con = duckdb.connect(self.path, config={"memory_limit": self._memory_limit, "threads": self._threads})
        except duckdb.Error as exc:
            raise StoreUnavailable(f"cannot open DuckDB file {self.path}: {exc}") from exc
        con = self._con
        con.execute(_SCHEMA)
        con.execute(registry.SCHEMA)
        for tier in self.plan.tiers:
            con.execute(_BARS_SCHEMA.format(table=bars_table(tier)))
            con.execute("INSERT INTO tier_state (tier) VALUES (?) ON CONFLICT DO NOTHING", [tier.name])
        for name, wm in con.execute("SELECT tier, watermark_ms FROM tier_state").fetchall():
            if name in self._watermarks:
                self._watermarks[name] = wm
        self._load_dirty_spans(con)

    def _load_dirty_spans(self, cursor: duckdb.DuckDBPyConnection) -> None:
        rows = cursor.execute("SELECT symbol, min(start_ms), max(end_ms) FROM dirty GROUP BY symbol").fetchall()
        self._dirty_span = {symbol: (int(lo), int(hi)) for symbol, lo, hi in rows}

    async def close(self) -> None:
        def _close() -> None:
            with self._cursor_lock:
                for cursor in self._cursors:
                    try:
                        cursor.close()
                    except duckdb.Error:
                        pass
                self._cursors.clear()
            if self._con is not None:
                self._con.close()
                self._con = None

        await anyio.to_thread.run_sync(_close)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for the calling worker thread (DuckDB connections are not shared
        between threads)."""
        cursor = getattr(self._local, "cursor", None)
        if cursor is None or getattr(self._local, "con", None) is not self._con:
            if self._con is None:
                raise StoreUnavailable("the DuckDB store is closed")
            cursor = self._con.cursor()
            self._local.cursor, self._local.con = cursor, self._con
            with self._cursor_lock:
                self._cursors.append(cursor)
        return cursor

    async def _run(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        def call() -> T:
            try:
                return fn(self._cursor())
            except duckdb.Error as exc:
                raise StoreUnavailable(f"DuckDB: {exc}") from exc

        return await anyio.to_thread.run_sync(call)

    async def _read(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """A history read that its caller can give up on: when the awaiting task is
        cancelled (the history timeout), the query is interrupted, so it does not go on
        holding a worker thread and CPU for nobody. Without this, each timed-out request
        of a slow query left one running; a few dozen of them took every worker thread
        and stalled the writer's appends behind them."""
        guard = threading.Lock()
        running: list[duckdb.DuckDBPyConnection] = []
        abandoned = False

        def call() -> T:
            cursor = self._cursor()
            with guard:
                if abandoned:
                    raise StoreUnavailable("history read abandoned before it started")
                running.append(cursor)
            try:
                if self._before_read is not None:
                    self._before_read(cursor)
                return fn(cursor)
            except duckdb.InterruptException as exc:
                raise StoreUnavailable("history read interrupted: its caller gave up") from exc
            except duckdb.Error as exc:
                raise StoreUnavailable(f"DuckDB: {exc}") from exc
            finally:
                with guard:
                    running.clear()

        try:
            return await anyio.to_thread.run_sync(call)
        except asyncio.CancelledError:
            with guard:
                abandoned = True
                for cursor in running:
                    cursor.interrupt()
            raise

    async def health(self) -> Health:
        try:
            await self._run(lambda c: c.execute("SELECT 1").fetchall())
        except StoreUnavailable as exc:
            return Health(False, exc.message)
        return Health(True)

    # --- writes -----------------------------------------------------------------------

    async def append(self, batches: Sequence[TradeColumns], *, spool_seq: int | None = None) -> None:
        """``spool_seq``: the newest spool record in ``batches``, committed in the same
        transaction, so a replay after a crash never stores a batch twice."""
        batches = [b for b in batches if len(b)]
        if batches or spool_seq is not None:
            await self._run(lambda c: self._append(c, batches, spool_seq))

    async def committed_spool_seq(self) -> int:
        row = await self._run(lambda c: _first(c.execute("SELECT value FROM writer_state WHERE key = 'spool_seq'")))
        return 0 if row is None else int(row[0])

    def _append(
        self, cursor: duckdb.DuckDBPyConnection, batches: Sequence[TradeColumns], spool_seq: int | None = None
    ) -> None:
        table = trades_arrow(batches) if batches else None
        first = self.plan.tiers[0]
        dirty: list[tuple[str, str, int, int]] = []
        with self._write_lock:
            wm = self._watermarks[first.name]
            if wm is not None:
                for b in batches:
                    late = late_window(first, b.ts_ns, wm)
                    if late is not None:
                        dirty.append((first.name, b.symbol, late.start_ms, late.end_ms))
            cursor.execute("BEGIN")
            try:
                if spool_seq is not None:
                    row = _first(cursor.execute("SELECT value FROM writer_state WHERE key = 'spool_seq'"))
                    if row is not None and row[0] >= spool_seq:
                        cursor.execute("ROLLBACK")  # already stored (a retried or replayed batch)
                        return
                if table is not None:
                    cursor.register("incoming_trades", table)
                    cursor.execute("INSERT INTO trades SELECT * FROM incoming_trades")
                    cursor.unregister("incoming_trades")
                if spool_seq is not None:
                    cursor.execute("INSERT OR REPLACE INTO writer_state VALUES ('spool_seq', ?)", [spool_seq])
                if dirty:
                    cursor.executemany("INSERT INTO dirty VALUES (?, ?, ?, ?)", dirty)
                cursor.execute("COMMIT")
            except BaseException:
                _rollback(cursor)
                raise
            self._countbacks.appended(batches)
            for _, symbol, lo, hi in dirty:
                old = self._dirty_span.get(symbol)
                self._dirty_span[symbol] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))

    async def delete_trades(
        self, symbol: str, *, ids: Sequence[str] | None = None, from_ns: int | None = None, to_ns: int | None = None
    ) -> Deletion:
        """One transaction: DELETE … RETURNING the deleted times, and dirty rows for the
        first-tier bars they were in (below its watermark; above it the regular run
        rebuilds them anyway), exactly like an append of late trades."""
        return await self._run(lambda c: self._delete(c, symbol, ids, from_ns, to_ns))

    def _delete(
        self,
        cursor: duckdb.DuckDBPyConnection,
        symbol: str,
        ids: Sequence[str] | None,
        from_ns: int | None,
        to_ns: int | None,
    ) -> Deletion:
        where = "symbol = ?"
        params: list[object] = [symbol]
        if ids is not None:
            where += " AND id IN (SELECT unnest(?))"
            params.append(list(ids))
        if from_ns is not None and to_ns is not None:
            where += " AND ts_ns >= ? AND ts_ns < ?"
            params += [from_ns, to_ns]
        first = self.plan.tiers[0]
        with self._write_lock:
            cursor.execute("BEGIN")
            try:
                rows = cursor.execute(f"DELETE FROM trades WHERE {where} RETURNING ts_ns", params).fetchall()
                wm = self._watermarks[first.name]
                late = None
                if rows and wm is not None:
                    late = late_window(first, np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)), wm)
                if late is not None:
                    cursor.execute(
                        "INSERT INTO dirty VALUES (?, ?, ?, ?)", [first.name, symbol, late.start_ms, late.end_ms]
                    )
                cursor.execute("COMMIT")
            except BaseException:
                _rollback(cursor)
                raise
            self._countbacks.deleted(symbol, min(r[0] for r in rows) // NS_PER_MS if rows else None)
            if late is None:
                return Deletion(len(rows), [])
            old = self._dirty_span.get(symbol)
            self._dirty_span[symbol] = (
                (late.start_ms, late.end_ms) if old is None else (min(old[0], late.start_ms), max(old[1], late.end_ms))
            )
        return Deletion(len(rows), [ChangedWindow(symbol, late.start_ms, late.end_ms)])

    # --- downsampling -----------------------------------------------------------------

    async def run_downsampling(
        self, now_ms: int, *, max_windows: int | None = None, timeout_s: float | None = None
    ) -> RunReport:
        """``timeout_s``: past it the window in progress is rolled back (its watermark stays,
        so the next run retries it) and :class:`RunTimeout` is raised; windows already
        committed stay. A statement still running at the deadline is interrupted."""
        return await self._run(lambda c: self._run_all(c, now_ms, max_windows, timeout_s))

    def _run_all(
        self, cursor: duckdb.DuckDBPyConnection, now_ms: int, max_windows: int | None, timeout_s: float | None = None
    ) -> RunReport:
        ran: list[TierRun] = []
        changed: list[ChangedWindow] = []
        budget = max_windows
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        watchdog = None
        if timeout_s is not None:
            watchdog = threading.Timer(timeout_s, cursor.interrupt)
            watchdog.daemon = True
            watchdog.start()
        try:
            return self._run_tiers(cursor, now_ms, budget, ran, changed)
        except duckdb.InterruptException as exc:
            raise RunTimeout(f"downsampling run interrupted after {timeout_s}s; retried from its watermark") from exc
        finally:
            if watchdog is not None:
                watchdog.cancel()
            self._deadline = None

    def _run_tiers(
        self,
        cursor: duckdb.DuckDBPyConnection,
        now_ms: int,
        budget: int | None,
        ran: list[TierRun],
        changed: list[ChangedWindow],
    ) -> RunReport:
        with self._run_lock:
            for tier in self.plan.tiers:
                changed.extend(self._run_dirty(cursor, tier, now_ms, ran))
                while budget is None or budget > 0:
                    run = self._run_next_window(cursor, tier, now_ms)
                    if run is None:
                        break
                    ran.append(run)
                    if budget is not None:
                        budget -= 1
            with self._write_lock:
                self._load_dirty_spans(cursor)
        return RunReport(ran, _merge_changed(changed))

    def _earliest_ms(self, cursor: duckdb.DuckDBPyConnection, tier: Tier) -> int | None:
        if tier.source == RAW:
            (value,) = cursor.execute(f"SELECT min(ts_ns) // {NS_PER_MS} FROM trades").fetchall()[0]
        else:
            (value,) = cursor.execute(f"SELECT min(time_ms) FROM {bars_table(tier.source)}").fetchall()[0]
        return None if value is None else int(value)

    def _run_next_window(self, cursor: duckdb.DuckDBPyConnection, tier: Tier, now_ms: int) -> TierRun | None:
        wm = self._watermarks[tier.name]
        source_wm = None if tier.source == RAW else self._watermarks[tier.source]
        earliest = self._earliest_ms(cursor, tier) if wm is None else None
        window = self.plan.next_window(
            tier, watermark_ms=wm, source_watermark_ms=source_wm, earliest_ms=earliest, now_ms=now_ms
        )
        if window is None:
            return None
        started = time.perf_counter()
        # A first run starts at the earliest source row, so only later ones may find a gap.
        has_rows = wm is None or self._source_has_rows(cursor, tier, wm, window.end_ms)
        new_wm = watermark_after(
            self.plan,
            tier,
            window,
            source_has_rows=has_rows,
            next_source_ms=None if has_rows else self._next_source_ms(cursor, tier, window.end_ms),
            source_watermark_ms=source_wm,
            now_ms=now_ms,
        )
        try:
            rows = self._rebuild(
                cursor, tier, window, symbol=None, new_watermark_ms=new_wm, now_ms=now_ms, started=started
            )
        except (duckdb.Error, RunTimeout) as exc:
            if not isinstance(exc, duckdb.InterruptException):
                with self._write_lock:
                    cursor.execute(
                        "UPDATE tier_state SET error = ?, last_run_ms = ? WHERE tier = ?", [str(exc), now_ms, tier.name]
                    )
            raise
        self._watermarks[tier.name] = new_wm
        return TierRun(tier.name, rows, (time.perf_counter() - started) * 1000, window.start_ms, new_wm)

    def _source_has_rows(self, cursor: duckdb.DuckDBPyConnection, tier: Tier, lo_ms: int, hi_ms: int) -> bool:
        if tier.source == RAW:
            sql = "SELECT 1 FROM trades WHERE ts_ns >= ? AND ts_ns < ? LIMIT 1"
            params = [lo_ms * NS_PER_MS, hi_ms * NS_PER_MS]
        else:
            sql = f"SELECT 1 FROM {bars_table(tier.source)} WHERE time_ms >= ? AND time_ms < ? LIMIT 1"
            params = [lo_ms, hi_ms]
        return _first(cursor.execute(sql, params)) is not None

    def _next_source_ms(self, cursor: duckdb.DuckDBPyConnection, tier: Tier, from_ms: int) -> int | None:
        if tier.source == RAW:
            (value,) = cursor.execute(
                f"SELECT min(ts_ns) // {NS_PER_MS} FROM trades WHERE ts_ns >= ?", [from_ms * NS_PER_MS]
            ).fetchall()[0]
        else:
            (value,) = cursor.execute(
                f"SELECT min(time_ms) FROM {bars_table(tier.source)} WHERE time_ms >= ?", [from_ms]
            ).fetchall()[0]
        return None if value is None else int(value)

    def _rebuild(
        self,
        cursor: duckdb.DuckDBPyConnection,
        tier: Tier,
        window: Window,
        *,
        symbol: str | None,
        new_watermark_ms: int | None,
        now_ms: int,
        started: float,
        extra: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    ) -> int:
        """Rewrite ``tier`` bars in ``window`` (for one symbol or all) in one transaction."""
        table = bars_table(tier)
        params: dict[str, int | str] = {"lo": window.start_ms, "hi": window.end_ms}
        symbol_filter = ""
        if symbol is not None:
            symbol_filter, params["symbol"] = "AND symbol = $symbol", symbol
        select = tier_select_sql(tier).format(symbol_filter=symbol_filter)
        with self._write_lock:
            cursor.execute("BEGIN")
            try:
                cursor.execute(f"DELETE FROM {table} WHERE time_ms >= $lo AND time_ms < $hi {symbol_filter}", params)
                (rows,) = cursor.execute(f"INSERT INTO {table} {select}", params).fetchall()[0]
                if extra is not None:
                    extra(cursor)
                if self._deadline is not None and time.monotonic() > self._deadline:
                    raise RunTimeout(
                        f"downsampling {tier.name} [{window.start_ms}, {window.end_ms}) ran past its "
                        "deadline; rolled back, retried from its watermark"
                    )
                duration_ms = (time.perf_counter() - started) * 1000
                if new_watermark_ms is not None:
                    cursor.execute(
                        "UPDATE tier_state SET watermark_ms = ?, last_run_ms = ?, last_duration_ms = ?, "
                        "rows = rows + ?, error = NULL WHERE tier = ?",
                        [new_watermark_ms, now_ms, duration_ms, rows, tier.name],
                    )
                cursor.execute("COMMIT")
            except BaseException:
                _rollback(cursor)
                raise
        return int(rows)

    def _run_dirty(
        self, cursor: duckdb.DuckDBPyConnection, tier: Tier, now_ms: int, ran: list[TierRun]
    ) -> list[ChangedWindow]:
        """Rebuild the closed windows of ``tier`` that late trades touched, and pass them
        on to the tiers built from it. Each rebuild is a run of the tier in ``ran`` (as an
        InfluxDB task run that consumes late-data markers is), so the run log shows it.
        Holds the write lock throughout, so a dirty row appended meanwhile is never
        deleted unprocessed."""
        changed = []
        with self._write_lock:
            rows = cursor.execute(
                "SELECT symbol, min(start_ms), max(end_ms) FROM dirty WHERE tier = ? GROUP BY symbol", [tier.name]
            ).fetchall()
            wm = self._watermarks[tier.name]
            for symbol, lo, hi in rows:
                closed = closed_part(tier, lo, hi, wm)
                handed_on = dirty_dependents(self.plan, tier, closed, self._watermarks)

                def forward(
                    c: duckdb.DuckDBPyConnection, symbol: str = symbol, handed_on: list[DirtyWindow] = handed_on
                ) -> None:
                    c.execute("DELETE FROM dirty WHERE tier = ? AND symbol = ?", [tier.name, symbol])
                    for d in handed_on:
                        c.execute("INSERT INTO dirty VALUES (?, ?, ?, ?)", [d.tier, symbol, d.start_ms, d.end_ms])

                if closed.end_ms <= closed.start_ms:
                    forward(cursor)
                    continue
                started = time.perf_counter()
                rebuilt = self._rebuild(
                    cursor,
                    tier,
                    closed,
                    symbol=symbol,
                    new_watermark_ms=None,
                    now_ms=now_ms,
                    started=started,
                    extra=forward,
                )
                duration_ms = (time.perf_counter() - started) * 1000
                ran.append(TierRun(tier.name, rebuilt, duration_ms, closed.start_ms, closed.end_ms))
                changed.append(ChangedWindow(symbol, closed.start_ms, closed.end_ms))
        return changed

    async def downsampling_status(self, now_ms: int) -> list[TierStatus]:
        def read(c: duckdb.DuckDBPyConnection) -> list[TierStatus]:
            rows = {
                r[0]: r
                for r in c.execute(
                    "SELECT tier, watermark_ms, last_run_ms, last_duration_ms, rows, error FROM tier_state"
                ).fetchall()
            }
            dirty = dict(c.execute("SELECT tier, count(*) FROM dirty GROUP BY tier").fetchall())
            counts = c.execute(
                " UNION ALL ".join(f"SELECT {i}, count(*) FROM {bars_table(t)}" for i, t in enumerate(self.plan.tiers))
            ).fetchall()
            held = {self.plan.tiers[i].name: int(n) for i, n in counts}
            out = []
            for tier in self.plan.tiers:
                _, wm, last_run, duration, n, error = rows.get(tier.name, (tier.name, None, None, None, 0, None))
                out.append(
                    TierStatus(
                        tier=tier.name,
                        source=tier.source,
                        watermark=wm,
                        lag_ms=None if wm is None else max(0, now_ms - wm),
                        last_run=last_run,
                        last_duration_ms=duration,
                        rows=int(n or 0),
                        error=error,
                        dirty_windows=int(dirty.get(tier.name, 0)),
                        bars=held.get(tier.name),
                    )
                )
            return out

        return await self._run(read)

    # --- reads ------------------------------------------------------------------------

    def _rows_are_bars(self, resolution: Resolution, segments: list[Segment]) -> bool:
        """Whether every segment is rows of a tier whose buckets are exactly ``resolution``'s
        (same size, both aligned to the epoch; weeks are not)."""
        size = resolution.size_ms
        return resolution.unit is not Unit.WEEK and all(
            s.tier is not None and self.plan.tier(s.tier).size_ms == size for s in segments
        )

    async def bars(self, symbol: str, resolution: Resolution, from_ms: int, to_ms: int) -> list[Bar]:
        return await self._read(lambda c: self._read_bars(c, symbol, resolution, from_ms, to_ms))

    def _read_bars(
        self,
        cursor: duckdb.DuckDBPyConnection,
        symbol: str,
        resolution: Resolution,
        from_ms: int,
        to_ms: int,
        last: int | None = None,
    ) -> list[Bar]:
        """Bars in ``[from_ms, to_ms)``, ascending; only the newest ``last`` when given."""
        segments = history_segments(
            self.plan, resolution, from_ms, to_ms, self._watermarks, self._dirty_span.get(symbol)
        )
        if not segments:
            return []
        if self._rows_are_bars(resolution, segments):
            # the tier's rows are the bars asked for: no regrouping (a GROUP BY over 2,160
            # hourly rows was most of a 3-month request), the same values
            sql = (
                " UNION ALL ".join(
                    f"SELECT time_ms AS b, open, high, low, close, volume FROM {bars_table(s.tier)} "
                    f"WHERE symbol = $symbol AND time_ms >= {s.start_ms} AND time_ms < {s.stop_ms}"
                    for s in segments
                    if s.tier is not None
                )
                + " ORDER BY b"
            )
        else:
            bucket = bucket_sql(resolution, f"k // {NS_PER_MS}")
            sql = (
                f"SELECT {bucket} AS b, arg_min(open, k), max(high), min(low), arg_max(close, k), fsum(volume) "
                f"FROM ({' UNION ALL '.join(_segment_sql(s) for s in segments)}) GROUP BY b ORDER BY b"
            )
        if last is not None:
            sql += f" DESC LIMIT {int(last)}"
        # columns as numpy, then plain lists: a third cheaper than rows of tuples at 2,000 bars
        arrays = list(cursor.execute(sql, {"symbol": symbol}).fetchnumpy().values())
        arrays[0] = arrays[0].astype(np.int64, copy=False)  # bar times are ints in every output
        cols = [a.tolist() for a in arrays]
        if last is not None:
            for c in cols:
                c.reverse()
        return list(map(Bar, *cols))

    async def bars_before(self, symbol: str, resolution: Resolution, to_ms: int, count: int) -> list[Bar]:
        """The newest ``count`` bars starting before ``to_ms``: a few statements, each bounded
        by time, in one worker-thread hop (see :mod:`~service.storage.embedded.countback`);
        none at all before the symbol's first trade."""
        if self._countbacks.before_first_trade(symbol, resolution, to_ms):
            return []
        return await self._read(lambda c: self._countback(c, symbol, resolution, to_ms, count))

    def _countback(
        self, cursor: duckdb.DuckDBPyConnection, symbol: str, resolution: Resolution, to_ms: int, count: int
    ) -> list[Bar]:
        memory = self._countbacks
        bars, learnt = newest_bars(
            resolution,
            to_ms,
            count,
            memory.first_trade_ms(cursor, symbol),
            lambda lo, hi, last: self._read_bars(cursor, symbol, resolution, lo, hi, last),
            lambda before, missing: nth_row_before(
                cursor, self.plan, self._watermarks, self._dirty_span.get(symbol), symbol, resolution, before, missing
            ),
            memory.hints.get(symbol, resolution, count),
        )
        memory.hints.learn(symbol, resolution, count, learnt)
        return bars

    async def previous_bar_time(self, symbol: str, resolution: Resolution, before_ms: int) -> int | None:
        """The newest bar before ``before_ms``: the countback of one, so bounded the same way
        (never a scan of the raw trades from the epoch), and none before the first trade."""
        bars = await self.bars_before(symbol, resolution, before_ms, 1)
        return bars[-1].time if bars else None

    async def symbols(self) -> list[str]:
        tables = [bars_table(t) for t in self.plan.tiers]
        union = " UNION ".join(
            [f"SELECT DISTINCT symbol FROM {t}" for t in tables] + ["SELECT DISTINCT symbol FROM trades"]
        )
        rows = await self._run(lambda c: c.execute(f"SELECT symbol FROM ({union}) ORDER BY symbol").fetchall())
        return [r[0] for r in rows]

    async def trade_span(self, symbol: str) -> tuple[int, int] | None:
        lo, hi = await self._run(
            lambda c: c.execute("SELECT min(ts_ns), max(ts_ns) FROM trades WHERE symbol = ?", [symbol]).fetchall()[0]
        )
        return None if lo is None else (int(lo), int(hi))

    async def last_ts_ns(self, symbol: str, from_ns: int, to_ns: int) -> int | None:
        (value,) = await self._run(
            lambda c: c.execute(
                "SELECT max(ts_ns) FROM trades WHERE symbol = ? AND ts_ns >= ? AND ts_ns < ?", [symbol, from_ns, to_ns]
            ).fetchall()[0]
        )
        return None if value is None else int(value)

    async def known_ids(
        self, symbol: str, ids: Sequence[str], from_ns: int | None = None, to_ns: int | None = None
    ) -> set[str]:
        """Which ``ids`` are stored; ``from_ns``/``to_ns`` narrow the scan to where a retry
        of the same trades would be (its own timestamps), which DuckDB prunes by zone maps."""
        if not ids:
            return set()
        where = "symbol = ? AND id IN (SELECT unnest(?))"
        params: list[object] = [symbol, list(ids)]
        if from_ns is not None and to_ns is not None:
            where += " AND ts_ns >= ? AND ts_ns < ?"
            params += [from_ns, to_ns]
        rows = await self._run(lambda c: c.execute(f"SELECT DISTINCT id FROM trades WHERE {where}", params).fetchall())
        return {r[0] for r in rows}

    async def recent_ids(self, limit: int) -> list[tuple[str, str]]:
        """(symbol, id) of the newest trades that carry an id, to warm the duplicate filter."""
        rows = await self._run(
            lambda c: c.execute(
                "SELECT symbol, id FROM trades WHERE id IS NOT NULL ORDER BY ts_ns DESC LIMIT ?", [limit]
            ).fetchall()
        )
        return [(r[0], r[1]) for r in rows]

    async def newest_ids(self, symbol: str, limit: int) -> list[tuple[str, int]]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT id, ts_ns FROM trades WHERE symbol = ? AND id IS NOT NULL AND ts_ns >= "
                "(SELECT max(ts_ns) FROM trades WHERE symbol = ? AND id IS NOT NULL) - ? "
                "ORDER BY ts_ns DESC LIMIT ?",
                [symbol, symbol, NEWEST_IDS_SPAN_NS, limit],
            ).fetchall()
        )
        return [(r[0], int(r[1])) for r in rows]

    # --- the symbol registry (service/storage/embedded/symbols.py) -------------------------

    async def symbol_specs(self) -> list[SymbolSpec]:
        return await self._run(registry.read_specs)

    async def save_symbol(self, spec: SymbolSpec) -> None:
        def save(c: duckdb.DuckDBPyConnection) -> None:
            with self._write_lock:
                registry.save_spec(c, spec)

        await self._run(save)

    async def purge_symbol(self, symbol: str) -> int:
        """One transaction: the symbol's trades, bars of every tier and dirty windows."""

        def purge(c: duckdb.DuckDBPyConnection) -> int:
            with self._write_lock:
                c.execute("BEGIN")
                try:
                    trades, _ = registry.purge(c, self.plan, symbol)
                    c.execute("COMMIT")
                except BaseException:
                    _rollback(c)
                    raise
                self._dirty_span.pop(symbol, None)
                self._countbacks.purged(symbol)
                return trades

        return await self._run(purge)

    async def snapshot(self, directory: str) -> Manifest:
        """EXPORT DATABASE on its own cursor: one statement, so one consistent transaction,
        while ingest and downsampling go on (see :mod:`service.storage.embedded.backup`)."""
        source = os.path.abspath(self.path)  # noqa: ASYNC240 - string work, no disk access
        return await self._run(lambda c: snapshot(c, directory, source))

    async def trade_count(self) -> int:
        (n,) = await self._run(lambda c: c.execute("SELECT count(*) FROM trades").fetchall()[0])
        return int(n)


def _segment_sql(segment: Segment) -> str:
    lo, hi = segment.start_ms, segment.stop_ms
    if segment.tier is not None:
        return (
            f"SELECT time_ms * {NS_PER_MS} AS k, open, high, low, close, volume FROM {bars_table(segment.tier)} "
            f"WHERE symbol = $symbol AND time_ms >= {lo} AND time_ms < {hi}"
        )
    # raw trades as one-trade bars: the outer GROUP BY folds them exactly like stored bars
    return (
        "SELECT ts_ns AS k, price AS open, price AS high, price AS low, price AS close, size AS volume "
        f"FROM trades WHERE symbol = $symbol AND ts_ns >= {lo * NS_PER_MS} AND ts_ns < {hi * NS_PER_MS}"
    )


def _rollback(cursor: duckdb.DuckDBPyConnection) -> None:
    """Roll back after a failed statement, keeping the original error: DuckDB may already
    have aborted the transaction itself (a COMMIT that hit a full disk does), and then a
    ROLLBACK fails with "no transaction is active", which would hide the real cause."""
    try:
        cursor.execute("ROLLBACK")
    except duckdb.Error:
        pass


def _first(cursor: duckdb.DuckDBPyConnection) -> tuple[Any, ...] | None:
    """The first row or ``None``, always fetching the whole result: DuckDB refuses more work
    on a cursor whose previous result was left half-read."""
    rows = cursor.fetchall()
    return rows[0] if rows else None


def _merge_changed(windows: list[ChangedWindow]) -> list[ChangedWindow]:
    by_symbol: dict[str, ChangedWindow] = {}
    for w in windows:
        prev = by_symbol.get(w.symbol)
        by_symbol[w.symbol] = (
            w if prev is None else ChangedWindow(w.symbol, min(prev.start_ms, w.start_ms), max(prev.end_ms, w.end_ms))
        )
    return list(by_symbol.values())
