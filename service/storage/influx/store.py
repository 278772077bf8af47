"""The InfluxDB 2 store: trades written in gzip'd line-protocol batches with retries,
bars downsampled by Flux tasks inside InfluxDB, history read back with streamed Flux.

Trade-offs, plainly:

* Writes are one logical write per :meth:`append` but several HTTP requests (about 5,000
  lines each, a few in flight). A failure after some requests succeeded raises anyway; the
  writer retries the whole call, which is harmless: the same points overwrite themselves.
* Downsampling runs in InfluxDB's task scheduler (see :mod:`service.storage.influx.flux_render`);
  :meth:`run_downsampling` only asks for manual runs and watches their result, so a run can
  take up to a scheduler tick to start.
* Late trades: when a trade lands in a first-tier bar that may already be closed, a dirty
  marker goes to the status bucket; the tasks rebuild those windows and pass the marker up
  the chain. Watermarks are cached for ``WATERMARK_TTL_S``; a stale watermark only means a
  little more is read from the tier below (still exact), never a gap.
* ``known_ids`` scans the ``id`` field of the symbol over all time (with the ids in the
  storage predicate); fine for retries, not for millions of historical ids.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence

import anyio

from service.core.errors import InvalidTrade, NotSupported, RunTimeout, StoreUnavailable
from service.core.models import Bar, TierRun, TierStatus, TradeColumns
from service.core.plan import RAW, Plan
from service.core.resolution import Resolution
from service.core.schedule import late_window
from service.core.segments import Segment
from service.core.settings import Settings
from service.core.symbols import SymbolSpec
from service.core.timestamps import NS_PER_MS
from service.storage.base import NEWEST_IDS_SPAN_NS, ChangedWindow, Deletion, Health, Manifest, RunReport
from service.storage.countback import SeriesHints, bars_before_by_jumps
from service.storage.influx import flux_queries as fq
from service.storage.influx import flux_render as fr
from service.storage.influx import influxql as ql
from service.storage.influx import symbols as registry
from service.storage.influx.admin import Admin, RunInfo, bucket_specs
from service.storage.influx.compose import Rows, compose, plan_segments, roll_up
from service.storage.influx.connection import Connection
from service.storage.influx.corrections import delete_trades
from service.storage.influx.lineproto import encode_trades, series_prefix, split_lines, unique_ns
from service.storage.influx.retry import RetryPolicy
from service.storage.influx.seconds import TradeRow, seconds_before

log = logging.getLogger(__name__)

WATERMARK_TTL_S = 1.0


class InfluxStore:
    kind = "influx"
    retry_start = True  # a server that may come up after the service: retried, unready meanwhile
    downsampling_in_database = True  # the Flux tasks run on InfluxDB's own schedule
    # Line protocol writes have no transaction to commit a spool position in; a replayed
    # batch is harmless anyway (equal points overwrite themselves).
    commits_spool_seq = False

    def __init__(
        self,
        settings: Settings,
        plan: Plan,
        *,
        retry: RetryPolicy = RetryPolicy(),
        batch_lines: int = 5_000,
        gzip_level: int = 1,  # level 1: ~2.5x faster than 5 for 10% more bytes; CPU is the limit
        write_concurrency: int = 4,
        auto_setup: bool = True,
        schedule_tasks: bool = True,
        run_timeout_s: float = 300.0,
    ) -> None:
        """``auto_setup``: create missing buckets and install or update the tasks in
        :meth:`start` (what ``tvflux influx setup`` does). ``schedule_tasks=False`` installs
        the tasks for manual runs only, so only :meth:`run_downsampling` moves watermarks —
        for tests that pass their own ``now_ms``."""
        self._settings = settings
        self._plan = plan
        self._url = settings.influx_url
        self._org = settings.influx_org
        self._names = fr.Names(settings.influx_bucket, settings.influx_bars_bucket, settings.influx_status_bucket)
        self._conn = Connection(self._url, self._org, str(settings.influx_token), retry)
        self._batch_lines = batch_lines
        self._gzip_level = gzip_level
        self._write_concurrency = write_concurrency
        self._auto_setup = auto_setup
        self._schedule_tasks = schedule_tasks
        self._run_timeout_s = run_timeout_s
        self._task_ids: dict[str, str] = {}
        self._status: dict[tuple[str, str, str], tuple[int, int]] = {}  # (m, tier, f) -> (t_ns, v)
        # tier -> {"count", "start_ms" (least), "end_ms" (greatest)} of its unconsumed markers
        self._dirty: dict[str, dict[str, int]] = {}
        self._status_at = -1e9  # negative: never read, or markers written since (see _status_stale)
        self._status_gen = 0  # bumped by _status_stale: a read that overlapped it is not fresh
        self._status_refresh: asyncio.Task[None] | None = None
        self._run_lock = asyncio.Lock()
        self._marker_ns = 0
        self._appends = 0  # append() calls so far; a tier that found no data waits for one
        self._found_empty: dict[str, int] = {}
        # per (symbol, second resolution): buckets per bar its last countback saw (``seconds``)
        self._second_hints = SeriesHints()
        self._pending_changes: list[tuple[int, ChangedWindow]] = []  # (marker time ns, window)

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        if not self._url:
            raise StoreUnavailable("TVFLUX_INFLUX_URL is not set")
        admin = self._conn.open()  # here, inside the running loop, as the async client requires
        try:
            await self._conn.ping()
            specs = bucket_specs(self._names, self._settings.influx_raw_retention_s)
            missing = await admin.missing_buckets(specs)
            if self._auto_setup:
                try:
                    report = await admin.setup(
                        self._plan, self._names, self._settings.influx_raw_retention_s, scheduled=self._schedule_tasks
                    )
                except StoreUnavailable as exc:
                    if missing:
                        raise StoreUnavailable(
                            f"buckets {missing} are missing in org {self._org!r} and could not be created "
                            f"({exc.message}); run `tvflux influx setup` with an operator token"
                        ) from None
                    log.warning("could not install the downsampling tasks: %s", exc.message)
                    self._task_ids = await admin.task_ids(self._plan, self._names)
                else:
                    self._task_ids = report.task_ids
            elif missing:
                raise StoreUnavailable(
                    f"buckets {missing} are missing in org {self._org!r} at {self._url}; run `tvflux influx setup`"
                )
            else:
                self._task_ids = await admin.task_ids(self._plan, self._names)
            await self._read_status(force=True)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        refresh, self._status_refresh = self._status_refresh, None
        if refresh is not None and not refresh.done():
            refresh.cancel()
            await asyncio.gather(refresh, return_exceptions=True)
        await self._conn.close()

    async def destroy(self) -> None:
        """Delete this store's tasks and buckets (test teardown)."""
        try:
            await self._conn.admin.delete(self._plan, self._names)
        finally:
            await self.close()

    def _api(self) -> Admin:
        return self._conn.admin  # StoreUnavailable until started

    async def health(self) -> Health:
        if not self._conn.is_open:
            return Health(False, "the InfluxDB store is not started")
        try:
            admin = self._api()
            await self._conn.ping()
            if await admin.find_bucket(self._names.raw_bucket) is None:
                return Health(False, f"bucket {self._names.raw_bucket!r} is missing; run `tvflux influx setup`")
        except StoreUnavailable as exc:
            return Health(False, exc.message)
        return Health(True)

    # --- writes -------------------------------------------------------------------

    def _prepare(self, batches: Sequence[TradeColumns], now_ms: int) -> tuple[list[bytes], list[ChangedWindow]]:
        """Encode, split and gzip (in a worker thread: this is CPU work). Also finds the
        trades late enough that their first-tier bar may already be closed."""
        first = self._plan.tiers[0]
        # The watermark lives in InfluxDB; the furthest it can be is the tier's edge now.
        late_edge_ms = self._plan.edge_ms(first, source_watermark_ms=None, now_ms=now_ms)
        payload = []
        changes = []
        for batch in batches:
            if len(batch) == 0:
                continue
            ts = unique_ns(batch.ts_ns)
            payload.append(encode_trades(batch.symbol, ts, batch.price, batch.size, batch.ids))
            late = late_window(first, ts, late_edge_ms)
            if late is not None:
                changes.append(ChangedWindow(batch.symbol, late.start_ms, late.end_ms))
        chunks = split_lines(b"".join(payload), self._batch_lines)
        gz = [gzip.compress(chunk, compresslevel=self._gzip_level) for chunk in chunks]
        return gz, changes

    def _marker_lines(self, changes: list[ChangedWindow]) -> tuple[bytes, list[tuple[int, ChangedWindow]]]:
        """Dirty markers for the first tier. Point time = now, strictly increasing: the
        tasks consume markers in time order (the cursor is the newest one consumed)."""
        prefix = series_prefix(fr.DIRTY, [("tier", self._plan.tiers[0].name)])
        lines = []
        stamped = []
        for change in changes:
            self._marker_ns = max(self._marker_ns + 1, time.time_ns())
            lines.append(f"{prefix} start_ms={change.start_ms}i,end_ms={change.end_ms}i {self._marker_ns}\n")
            stamped.append((self._marker_ns, change))
        return "".join(lines).encode(), stamped

    async def append(self, batches: Sequence[TradeColumns], *, spool_seq: int | None = None) -> None:
        """``spool_seq`` is ignored (``commits_spool_seq`` is ``False``)."""
        self._api()
        self._appends += 1
        now_ms = time.time_ns() // NS_PER_MS
        try:
            gz, changes = await anyio.to_thread.run_sync(self._prepare, batches, now_ms)
        except ValueError as exc:  # a value line protocol cannot carry (see lineproto)
            raise InvalidTrade(f"cannot store these trades in InfluxDB: {exc}") from None
        if not gz:
            return
        limit = asyncio.Semaphore(self._write_concurrency)

        async def one(body: bytes) -> None:
            async with limit:
                await self._write(self._names.raw_bucket, body, gzipped=True)

        results = await asyncio.gather(*(one(body) for body in gz), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if changes:
            # after the trades: a marker must never point at trades that are not there yet
            await self._mark_dirty(changes)

    async def _mark_dirty(self, changes: list[ChangedWindow]) -> None:
        """Write dirty markers for ``changes``: the tasks rebuild those windows up the chain,
        and history reads them from raw trades until then."""
        body, stamped = self._marker_lines(changes)
        await self._write(self._names.status_bucket, body, gzipped=False)
        # bounded: if no run ever consumes them, the oldest are forgotten (resets only)
        self._pending_changes = (self._pending_changes + stamped)[-10_000:]
        self._status_stale()  # history must see the new markers (dirty spans) at once

    async def delete_trades(
        self, symbol: str, *, ids: Sequence[str] | None = None, from_ns: int | None = None, to_ns: int | None = None
    ) -> Deletion:
        """A dirty marker, then InfluxDB's delete API: see :mod:`service.storage.influx.corrections`."""
        return await delete_trades(
            self._conn, self._names, self._plan, self._mark_dirty, symbol, ids=ids, from_ns=from_ns, to_ns=to_ns
        )

    async def committed_spool_seq(self) -> int:
        return 0  # not kept here: the writer keeps its own marker (commits_spool_seq is False)

    async def _write(self, bucket: str, body: bytes, *, gzipped: bool) -> None:
        await self._conn.write(bucket, body, gzipped=gzipped)

    # --- queries ------------------------------------------------------------------

    def _rows(self, flux: str, columns: tuple[str, ...]) -> AsyncIterator[tuple[str, ...]]:
        """The named columns of every row of a Flux query, streamed (:meth:`Connection.rows`)."""
        return self._conn.rows(flux, columns)

    def _segment_statement(self, symbol: str, segment: Segment) -> str:
        if segment.tier is not None:
            return ql.tier_rows(
                self._names.bars_bucket, fr.measurement(segment.tier), symbol, segment.start_ms, segment.stop_ms
            )
        assert segment.every_ms is not None
        return ql.raw_rows(
            self._names.raw_bucket, fr.TRADES, symbol, segment.start_ms, segment.stop_ms, segment.every_ms
        )

    async def _segments_rows(self, symbol: str, segments: Sequence[Segment]) -> list[Rows]:
        """Every segment's rows, ascending, in one InfluxQL request (see ``influxql``)."""
        if not segments:
            return []
        return await self._conn.influxql.bar_rows([self._segment_statement(symbol, s) for s in segments])

    async def bars(self, symbol: str, resolution: Resolution, from_ms: int, to_ms: int) -> list[Bar]:
        await self._status_for_history()
        tier = self._plan.serving_tier(resolution)
        chain = self._plan.chain(tier) if tier is not None else []
        segments = plan_segments(
            self._plan, resolution, from_ms, to_ms, self._watermarks(), self._dirty_span([t.name for t in chain])
        )
        parts = await self._segments_rows(symbol, segments)
        sizes = [self._plan.tier(s.tier).size_ms if s.tier is not None else s.every_ms or 0 for s in segments]
        # bit-identical to the bars the tasks will store (see roll_up), whatever the lag
        rows = roll_up(parts, sizes, [t.size_ms for t in chain])
        return compose([rows], resolution, from_ms, to_ms)

    async def bars_before(self, symbol: str, resolution: Resolution, to_ms: int, count: int) -> list[Bar]:
        if self._plan.serving_tier(resolution) is not None or to_ms <= 0 or count <= 0:
            # a tier serves it: windows of stored bars, and one last() per series across a gap
            return await bars_before_by_jumps(self, symbol, resolution, to_ms, count)
        # second resolutions: the newest raw trades, one request a page (see ``seconds``)

        def newest(lo_ms: int, hi_ms: int, limit: int) -> Awaitable[list[TradeRow]]:
            statement = ql.newest_trades(self._names.raw_bucket, fr.TRADES, symbol, lo_ms, hi_ms, limit)
            return self._conn.influxql.trade_rows(statement)

        bars, learnt = await seconds_before(
            resolution,
            to_ms,
            count,
            self._second_hints.get(symbol, resolution, count),
            newest,
            lambda before_ms, missing: bars_before_by_jumps(self, symbol, resolution, before_ms, missing),
        )
        self._second_hints.learn(symbol, resolution, count, learnt)
        return bars

    async def previous_bar_time(self, symbol: str, resolution: Resolution, before_ms: int) -> int | None:
        if before_ms <= 0:
            return None
        tier = self._plan.serving_tier(resolution)
        chain = [t.name for t in self._plan.chain(tier)] if tier is not None else []
        statements = [ql.last_time(self._names.raw_bucket, fr.TRADES, "price", symbol, None, before_ms)]
        statements += [
            ql.last_time(self._names.bars_bucket, fr.measurement(t), "close", symbol, None, before_ms) for t in chain
        ]
        times = await self._conn.influxql.times(statements)
        return resolution.bucket_start_ms(max(times)) if times else None

    async def symbols(self) -> list[str]:
        found = {v async for (v,) in self._rows(fq.symbols_query(self._names), ("v",))}
        return sorted(found)

    async def trade_span(self, symbol: str) -> tuple[int, int] | None:
        ends = []
        for flux in fq.trade_span_queries(self._names, symbol):
            ends += [int(t) async for (t,) in self._rows(flux, ("t",))]
        return None if not ends else (min(ends), max(ends))

    async def last_ts_ns(self, symbol: str, from_ns: int, to_ns: int) -> int | None:
        if to_ns <= from_ns:
            return None
        statement = ql.last_time(self._names.raw_bucket, fr.TRADES, "price", symbol, from_ns, to_ns, "ns")
        times = await self._conn.influxql.times([statement], epoch="ns")
        return max(times) if times else None

    async def known_ids(
        self, symbol: str, ids: Sequence[str], from_ns: int | None = None, to_ns: int | None = None
    ) -> set[str]:
        wanted = sorted(set(ids))
        found: set[str] = set()
        for i in range(0, len(wanted), 200):  # keeps each predicate a sane size
            flux = fq.known_ids_query(self._names, symbol, wanted[i : i + 200], from_ns, to_ns)
            found.update([v async for (v,) in self._rows(flux, ("id",))])
        return found

    async def recent_ids(self, limit: int) -> list[tuple[str, str]]:
        """None: an "ids of the newest trades" scan would read every series of the raw
        bucket at start; :meth:`known_ids` answers duplicates by their own time span."""
        return []

    async def newest_ids(self, symbol: str, limit: int) -> list[tuple[str, int]]:
        newest = None
        async for (t,) in self._rows(fq.newest_id_time_query(self._names, symbol), ("t",)):
            newest = int(t) if newest is None else max(newest, int(t))
        if newest is None:
            return []
        flux = fq.newest_ids_query(self._names, symbol, newest - NEWEST_IDS_SPAN_NS, newest + 1, limit)
        return [(i, int(t)) async for i, t in self._rows(flux, ("id", "t"))]

    # --- the symbol registry (service/storage/influx/symbols.py) ----------------------------

    async def symbol_specs(self) -> list[SymbolSpec]:
        return await registry.read_specs(self._conn, self._names)

    async def save_symbol(self, spec: SymbolSpec) -> None:
        self._marker_ns = max(self._marker_ns + 1, time.time_ns())
        await registry.save_spec(self._conn, self._names, spec, self._marker_ns)

    async def purge_symbol(self, symbol: str) -> int:
        self._second_hints.forget(symbol)
        return await registry.purge(self._conn, self._names, symbol)

    async def trade_count(self) -> int | None:
        """None: counting a bucket's points is a scan of all of them."""
        return None

    async def snapshot(self, directory: str) -> Manifest:
        raise NotSupported(
            "the InfluxDB store is backed up with `influx backup`: see scripts/influx-backup.sh and docs/backup.md"
        )

    # --- downsampling -------------------------------------------------------------

    def _status_stale(self) -> None:
        """The cached status misses something history must see at once (dirty markers
        just written): the next request re-reads it before answering."""
        self._status_at = -1e9
        self._status_gen += 1

    async def _status_for_history(self) -> None:
        """History answers from the cached status and refreshes it in the background once
        it is ``WATERMARK_TTL_S`` old, so no request waits for that read — a stale watermark
        is safe (it only ever lags: more is read from the tier below, still exact). Only a
        status never read, or made stale by markers this store wrote, is read first."""
        if self._status_at < 0:
            await self._read_status(force=True)
        elif time.monotonic() - self._status_at >= WATERMARK_TTL_S and (
            self._status_refresh is None or self._status_refresh.done()
        ):
            self._status_refresh = asyncio.create_task(self._refresh_status())

    async def _refresh_status(self) -> None:
        try:
            await self._read_status(force=True)
        except StoreUnavailable as exc:  # the next request tries again; history stays exact
            log.warning("could not refresh the downsampling status: %s", exc.message)

    async def _read_status(self, *, force: bool = False) -> None:
        if not force and 0 <= time.monotonic() - self._status_at < WATERMARK_TTL_S:
            return
        gen = self._status_gen
        # bounded: latest point per series and an aggregate of the unconsumed markers per
        # tier, however many runs and markers the status bucket holds (see status_query)
        status: dict[tuple[str, str, str], tuple[int, int]] = {}
        dirty: dict[str, dict[str, int]] = {}
        tiers = [t.name for t in self._plan.tiers]
        async for m, tier, f, t, v in self._rows(fq.status_query(self._names, tiers), ("m", "tier", "f", "t", "v")):
            if m == fr.DIRTY:
                dirty.setdefault(tier, {})[f] = int(v)
            else:
                status[(m, tier, f)] = (int(t), int(v))
        self._status, self._dirty = status, dirty
        # markers written while this read ran may be missing from it: not fresh then
        self._status_at = time.monotonic() if gen == self._status_gen else -1e9

    def _dirty_span(self, tiers: list[str]) -> tuple[int, int] | None:
        """Envelope of the dirty markers (any symbol: markers carry none) that a tier of
        ``tiers`` has not consumed yet: late trades not yet in every tier serving a
        request, so that span is read from raw trades meanwhile (exact, only slower)."""
        lo = hi = None
        for tier in tiers:
            span = self._dirty.get(tier, {})
            start, end = span.get("start_ms"), span.get("end_ms")
            if not span.get("count") or start is None or end is None:
                continue
            lo = start if lo is None else min(lo, start)
            hi = end if hi is None else max(hi, end)
        return None if lo is None or hi is None or hi <= lo else (lo, hi)

    def _value(self, measurement: str, tier: str, field: str) -> int | None:
        hit = self._status.get((measurement, tier, field))
        return None if hit is None else hit[1]

    def _watermarks(self) -> dict[str, int | None]:
        return {t.name: self._value(fr.WATERMARK, t.name, "watermark_ms") for t in self._plan.tiers}

    def _pending_markers(self, tier: str) -> int:
        return self._dirty.get(tier, {}).get("count", 0)

    async def downsampling_status(self, now_ms: int) -> list[TierStatus]:
        await self._read_status(force=True)
        admin = self._api()
        out = []
        for tier in self._plan.tiers:
            wm = self._value(fr.WATERMARK, tier.name, "watermark_ms")
            run = self._status.get((fr.RUN, tier.name, "rows"))
            error = None
            task_id = self._task_ids.get(tier.name)
            if task_id is None:
                error = f"task {self._names.task_name(tier)!r} is missing; run `tvflux influx setup`"
            else:
                runs = await admin.recent_runs(task_id, limit=1)
                if runs and runs[0].status == "failed":
                    lines = runs[0].log or await admin.run_log(task_id, runs[0].id)
                    error = "; ".join(lines[-2:]) or "last run failed"
            out.append(
                TierStatus(
                    tier=tier.name,
                    source=tier.source,
                    watermark=wm,
                    lag_ms=None if wm is None else max(0, now_ms - wm),
                    last_run=None if run is None else run[0] // NS_PER_MS,
                    last_duration_ms=_float(self._value(fr.RUN, tier.name, "took_ms")),
                    rows=0 if run is None else run[1],
                    error=error,
                    dirty_windows=self._pending_markers(tier.name),
                )
            )
        return out

    async def task_runs(self, limit: int = 3) -> dict[str, list[RunInfo]]:
        """tier -> its task's latest runs, newest first (for ``tvflux influx status``)."""
        admin = self._api()
        return {tier: await admin.recent_runs(task_id, limit=limit) for tier, task_id in self._task_ids.items()}

    async def run_log(self, tier: str, run_id: str) -> list[str]:
        return await self._api().run_log(self._task_ids[tier], run_id)

    async def run_downsampling(
        self, now_ms: int, *, max_windows: int | None = None, timeout_s: float | None = None
    ) -> RunReport:
        """Trigger the tasks tier by tier (manual runs ``scheduledFor`` ``now_ms``) until
        each has no window left, waiting for each run. Serialised per store. Past
        ``timeout_s`` the wait is abandoned (remote work over HTTP: a task run already
        started finishes or fails inside InfluxDB on its own)."""
        if timeout_s is None:
            return await self._run_downsampling(now_ms, max_windows)
        try:
            return await asyncio.wait_for(self._run_downsampling(now_ms, max_windows), timeout_s)
        except TimeoutError:
            raise RunTimeout(f"downsampling run took longer than {timeout_s}s; retried next time") from None

    async def _run_downsampling(self, now_ms: int, max_windows: int | None) -> RunReport:
        admin = self._api()
        ran: list[TierRun] = []
        # a run's now() has whole seconds; decide on the same instant the task will see
        now_ms = now_ms // 1000 * 1000
        async with self._run_lock:
            await self._read_status(force=True)  # and again after every run, below
            for tier in self._plan.tiers:
                task_id = self._task_ids.get(tier.name)
                if task_id is None:
                    raise StoreUnavailable(f"task for tier {tier.name} is missing; run `tvflux influx setup`")
                while max_windows is None or len(ran) < max_windows:
                    wm = self._value(fr.WATERMARK, tier.name, "watermark_ms")
                    cursor = self._value(fr.DIRTY_CURSOR, tier.name, "marker_ns")
                    src = None if tier.source == RAW else self._value(fr.WATERMARK, tier.source, "watermark_ms")
                    if tier.source != RAW and src is None:
                        break  # the source has nothing final yet
                    # earliest is unknown here: a tier without a watermark is simply run
                    # (its task finds the earliest source row itself)
                    due = self._plan.next_window(
                        tier, watermark_ms=wm, source_watermark_ms=src, earliest_ms=None, now_ms=now_ms
                    )
                    if wm is not None and due is None and not self._pending_markers(tier.name):
                        break  # at the live edge
                    if wm is None and self._found_empty.get(tier.name) == self._appends:
                        break  # its last run found no data, and nothing was written since
                    appends = self._appends
                    began = time.perf_counter()
                    run_id = await admin.start_run(task_id, now_ms // 1000)
                    if run_id is None:
                        break  # someone else queued this very run; it will do the work
                    info = await admin.wait_run(task_id, run_id, timeout_s=self._run_timeout_s)
                    if info.status != "success":
                        detail = "; ".join(info.log[-2:]) or info.status
                        raise StoreUnavailable(f"downsampling run of tier {tier.name} did not succeed: {detail}")
                    await self._read_status(force=True)
                    new_wm = self._value(fr.WATERMARK, tier.name, "watermark_ms")
                    rows = self._value(fr.RUN, tier.name, "rows") or 0
                    ran.append(
                        TierRun(
                            tier.name,
                            rows,
                            (time.perf_counter() - began) * 1000,
                            self._value(fr.RUN, tier.name, "from_ms"),
                            new_wm,
                        )
                    )
                    if new_wm == wm and self._value(fr.DIRTY_CURSOR, tier.name, "marker_ns") == cursor:
                        if wm is None:
                            self._found_empty[tier.name] = appends
                        break  # no progress: no data yet, or another run holds the lease
        return RunReport(ran=ran, changed=self._consumed_changes())

    def _consumed_changes(self) -> list[ChangedWindow]:
        """Late-data windows whose markers the first tier has consumed since."""
        cursor = self._value(fr.DIRTY_CURSOR, self._plan.tiers[0].name, "marker_ns")
        if cursor is None:
            return []
        done = [c for at, c in self._pending_changes if at <= cursor]
        self._pending_changes = [(at, c) for at, c in self._pending_changes if at > cursor]
        return done


def _float(value: int | None) -> float | None:
    return None if value is None else float(value)
