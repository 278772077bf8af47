"""``Node``: the parts of one tvflux core process and their lifetimes (:meth:`Node.running`).

Start order: store → ingest (learns what is stored) → writer → hub ticker → downsampler
→ trade sources (the synthetic market, exchanges). A store reached over the network (``Store.retry_start``) may be down at
start: it is retried with capped backoff while the node stays unready; a local file fails
at once. Shutdown is the reverse, and the writer drains before the store closes, so
nothing accepted is left behind on a clean stop.

The web layer (:class:`service.api.services.Services`) serves a node; nothing here knows
about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from service.core.errors import StoreUnavailable
from service.core.models import Bar
from service.core.resolution import Resolution
from service.core.settings import Settings
from service.core.synthetic import SyntheticMarket
from service.runtime.audit import audit_log
from service.runtime.clock import now_ms
from service.runtime.corrections import Correction, LiveParts, delete_trades
from service.runtime.descriptors import DescriptorWatch
from service.runtime.downsampler import Downsampler
from service.runtime.history import History, SymbolSet
from service.runtime.hotwindow import HotWindow
from service.runtime.hub import Hub
from service.runtime.ingest import Ingestor
from service.runtime.source_set import SourceSet, all_symbols, synthetic_symbols
from service.runtime.sources import RateMeter, backfill_synthetic
from service.runtime.spool import Spool
from service.runtime.symbols import SymbolRegistry
from service.runtime.tasks import TaskSet
from service.runtime.writer import TradeWriter
from service.storage.base import Store

if TYPE_CHECKING:
    from service.runtime.broker import BrokerBridge

log = logging.getLogger(__name__)

START_RETRY_MAX_S = 30.0  # the longest wait between two attempts to reach the store
DRAIN_TIMEOUT_S = 30.0  # how long a clean stop waits for the store to take what was accepted


class Node:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.spool = Spool(
            os.path.join(settings.data_dir, "spool"),
            max_bytes=settings.spool_max_bytes,
            fsync_interval_ms=settings.spool_fsync_interval_ms,
        )
        self.writer = TradeWriter(
            self.store,
            spool=self.spool,
            flush_interval_ms=settings.flush_interval_ms,
            flush_rows=settings.flush_rows,
            max_pending_rows=settings.writer_max_pending_rows,
        )
        self.symbols = SymbolSet(all_symbols(settings))  # TVFLUX_SYMBOLS and what TVFLUX_SOURCES feeds
        # on every store: its loads do not depend on who runs the downsampling, or when
        # (service/runtime/hotwindow.py)
        hot = HotWindow(settings.plan, max_bars=settings.hot_window_bars) if settings.hot_window_bars else None
        self.history = History(
            self.store,
            self.writer,
            self.symbols,
            max_bars=settings.max_bars,
            max_countback=max(settings.max_countback, settings.max_bars),
            timeout_s=settings.history_timeout_s,
            hot=hot,
        )
        self.hub = Hub(self._live_history, now_ms, push_interval_ms=settings.push_interval_ms)
        self.ingest_rate = RateMeter()
        self.descriptors = DescriptorWatch()  # new connections fail silently at RLIMIT_NOFILE: watch the count
        self.ingestor = Ingestor(
            self.store,
            self.writer,
            self.hub,
            self.symbols,
            max_batch_trades=settings.max_batch_trades,
            max_future_ms=settings.max_future_ms,
            max_past_ms=settings.max_past_ms,
            price_band_pct=settings.price_band_pct,
            price_band_window_ms=settings.price_band_window_ms,
            on_accepted=self.ingest_rate.add,
        )
        self.downsampler = Downsampler(
            self.store,
            self.hub,
            interval_ms=settings.downsample_interval_ms,
            clock_ms=now_ms,
            timeout_s=settings.downsample_timeout_s,
        )
        if hot is not None:
            self.downsampler.on_changed.append(hot.invalidate)
        self.audit = audit_log(settings.data_dir)
        self.registry = SymbolRegistry(
            store, self.symbols, configured=all_symbols(settings), audit=self.audit, clock_ms=now_ms, writer=self.writer
        )
        self.registry.on_removed.append(self.hub.drop_symbol)  # open subscriptions end with an error
        self.registry.on_purged += [*self.downsampler.on_changed, self.ingestor.forget_symbol]  # caches of its data
        unfed = synthetic_symbols(settings)  # the synthetic market trades what no exchange feeds
        self.market = SyntheticMarket(unfed or settings.symbols, seed=settings.synthetic_seed)
        self.sources = SourceSet(settings, self.ingestor, self.market if unfed else None)
        self._synthetic_start_ms = now_ms()
        self.started_at = time.time()
        self.store_error: str | None = None
        self.ready = False
        self.broker: BrokerBridge | None = None
        if settings.broker_url:
            from service.runtime.broker import BrokerBridge

            self.broker = BrokerBridge(self.hub, settings.broker_url, require_symbol=self.symbols.require)
        self._background = TaskSet()  # the writer, ticker, downsampler, … (_start_background)
        self._writer_task: asyncio.Task[None] | None = None

    async def _live_history(
        self, symbol: str, resolution: Resolution, from_ms: int, to_ms: int
    ) -> tuple[list[Bar], int]:
        snapshot = await self.history.bars(symbol, resolution, from_ms, to_ms)
        return snapshot.bars, snapshot.seq

    def require_ready(self) -> None:
        """Refuse work that needs the store while it is not up (503, with the reason)."""
        if not self.ready:
            raise StoreUnavailable(f"not ready: {self.store_error or 'starting'}")

    # --- lifecycle ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The node running: the store started (or being retried), the background tasks
        going; on exit everything stops in reverse order."""
        self._background = TaskSet()  # this run's
        helpers = TaskSet()
        helpers.start(self.descriptors.run(), "descriptors")
        try:
            if not self.store.retry_start:
                await self._start_store()  # a local file: fail fast and loud
                self._start_background()
            else:  # a remote store may come up later: retried while unready
                helpers.start(self._start_store_when_reachable(), "store-starter")
            yield
        finally:
            self.ready = False
            await helpers.stop()
            await self._stop_background()
            if self.broker is not None:
                await self.broker.close()
            self.spool.close()
            await self.store.close()

    async def _start_store(self) -> None:
        await self.store.start()
        # Replay what was acknowledged but not stored before the last stop, before
        # anything reads the store (timestamps, ids, live bars start from it).
        if await self.writer.recover():
            await self.writer.drain()
        await self._seed_synthetic_history()
        await self.registry.load()
        await self.ingestor.start()
        self.store_error = None

    async def _seed_synthetic_history(self) -> None:
        settings = self.settings
        if self.sources.synthetic is None or settings.synthetic_backfill_s <= 0 or await self.store.symbols():
            return
        self._synthetic_start_ms = now_ms()
        written = await backfill_synthetic(
            self.store,
            self.market,
            settings.synthetic_rate,
            settings.synthetic_backfill_s * 1000,
            self._synthetic_start_ms,
        )
        log.info(
            "empty store: wrote %d synthetic trades of history (%d h) so the chart has something to show",
            written,
            settings.synthetic_backfill_s // 3600,
        )

    async def _start_store_when_reachable(self) -> None:
        """A remote store may be down at start: retry with capped backoff, staying
        unready (never crashing) until it answers."""
        delay_s = 1.0
        while True:
            try:
                await self._start_store()
            except StoreUnavailable as exc:
                self.store_error = exc.message
                log.error("store unavailable: %s; retrying in %.0fs", exc.message, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, START_RETRY_MAX_S)
                continue
            self._start_background()
            return

    def _start_background(self) -> None:
        settings = self.settings
        tasks = self._background
        self._writer_task = tasks.start(self.writer.run(), "writer")
        tasks.start(self._tick_forever(), "hub-ticker")
        if settings.downsample_interval_ms > 0:
            tasks.start(self.downsampler.run_forever(), "downsampler")
        if self.broker is not None:
            tasks.start(self.broker.start(), "broker-start")
        tasks.adopt(self.sources.start(self._synthetic_start_ms))
        self.ready = True
        log.info(
            "tvflux ready: store=%s symbols=%s sources=%s",
            self.store.kind,
            ",".join(self.symbols),
            ",".join(s.name for s in self.sources.sources) or "none",
        )

    async def _stop_background(self) -> None:
        """Everything but the writer first, then the writer once it drained (bounded)."""
        tasks = self._background
        await self.downsampler.close()  # a manual run in progress
        await tasks.stop(sparing=self._writer_task)
        if tasks:
            try:
                await asyncio.wait_for(asyncio.shield(self.writer.drain()), timeout=DRAIN_TIMEOUT_S)
            except TimeoutError:
                log.error(
                    "shutdown: the store did not take %d trades in time; they stay in the spool and are "
                    "replayed at the next start",
                    self.writer.pending_rows + self.writer.spilled_rows,
                )
        await tasks.stop()

    async def _tick_forever(self) -> None:
        interval_s = max(self.settings.push_interval_ms, 20) / 1000
        while True:
            self.hub.tick(now_ms())
            await asyncio.sleep(interval_s)

    # --- corrections -------------------------------------------------------------------------

    async def delete_trades(self, correction: Correction) -> int:
        """A trade correction on the running node (:func:`service.runtime.corrections.delete_trades`
        with the node's live parts); returns how many trades were deleted."""
        self.require_ready()
        live = LiveParts(self.writer, self.ingestor, self.hub, self.downsampler.on_changed)
        deletion = await delete_trades(self.store, self.audit, correction, live=live)
        log.warning(
            "correction: %d trades of %s deleted by %s (%s)",
            deletion.deleted,
            correction.symbol,
            correction.who,
            f"{len(correction.ids)} ids" if correction.ids else f"[{correction.from_ms}, {correction.to_ms})",
        )
        return deletion.deleted
