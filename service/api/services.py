"""``Services``: everything a request handler may need, built once per app by
:func:`service.api.app.create_app` and handed to handlers as a typed dependency
(``services: Services``), and the lifetimes of its parts (:meth:`Services.running`).

Start order: store → ingest (learns what is stored) → writer → hub ticker → downsampler
→ synthetic source. Shutdown is the reverse, and the writer drains before the store
closes, so nothing accepted is left behind on a clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency

from service.core.errors import Overloaded, StoreUnavailable
from service.core.models import Bar
from service.core.resolution import Resolution
from service.core.settings import Settings
from service.core.synthetic import SyntheticMarket
from service.runtime.audit import AuditEntry, AuditLog
from service.runtime.clock import now_ms
from service.runtime.descriptors import DescriptorWatch
from service.runtime.downsampler import Downsampler
from service.runtime.fanout import LiveHub
from service.runtime.history import History, SymbolSet
from service.runtime.hotwindow import HotWindow
from service.runtime.hub import Hub
from service.runtime.ingest import Ingestor
from service.runtime.sources import RateMeter, backfill_synthetic, run_synthetic
from service.runtime.spool import Spool
from service.runtime.symbols import SymbolRegistry
from service.runtime.writer import TradeWriter
from service.storage.base import Store

if TYPE_CHECKING:
    from service.runtime.broker import BrokerBridge

log = logging.getLogger(__name__)


def services_of(conn: ASGIConnection[Any, Any, Any, Any]) -> Services:
    """For guards, which get the connection only (handlers declare ``services: Services``)."""
    services: Services = conn.app.state.services
    return services


class LiveServices:
    """What the live endpoints (``/ws``, ``/api/stream``) need: the core's :class:`Services`
    and an edge's :class:`~service.edge.app.EdgeServices` are both one."""

    settings: Settings
    hub: LiveHub
    symbols: SymbolSet
    connections: ConnectionLimiter

    def require_ready(self) -> None:
        raise NotImplementedError


class Services(LiveServices):
    """Everything a request handler may need, built once per app."""

    hub: Hub

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
        self.symbols = SymbolSet(settings.symbols)
        # Not where the database downsamples on its own schedule (InfluxDB tasks): the window's
        # cut must stay at or after every tier watermark, which only the service's own
        # downsampler can promise (service/runtime/hotwindow.py).
        hot = (
            HotWindow(settings.plan, max_bars=settings.hot_window_bars)
            if settings.hot_window_bars and not store.downsampling_in_database
            else None
        )
        self.history = History(
            self.store,
            self.writer,
            self.symbols,
            max_bars=settings.max_bars,
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
        self.connections = ConnectionLimiter(settings.max_connections_per_client)
        self.audit = AuditLog(os.path.join(settings.data_dir, "audit.jsonl"))
        self.registry = SymbolRegistry(
            store, self.symbols, configured=settings.symbols, audit=self.audit, clock_ms=now_ms, writer=self.writer
        )
        self.registry.on_removed.append(self.hub.drop_symbol)  # open subscriptions end with an error
        self.registry.on_purged += [*self.downsampler.on_changed, self.ingestor.forget_symbol]  # caches of its data
        self.market = SyntheticMarket(settings.symbols, seed=settings.synthetic_seed)
        self._synthetic_start_ms = now_ms()
        self.started_at = time.time()
        self.store_error: str | None = None
        self.ready = False
        self.broker: BrokerBridge | None = None
        if settings.broker_url:
            from service.runtime.broker import BrokerBridge

            self.broker = BrokerBridge(self.hub, settings.broker_url, require_symbol=self.symbols.require)

    async def _live_history(
        self, symbol: str, resolution: Resolution, from_ms: int, to_ms: int
    ) -> tuple[list[Bar], int]:
        snapshot = await self.history.bars(symbol, resolution, from_ms, to_ms)
        return snapshot.bars, snapshot.seq

    def require_ready(self) -> None:
        """Refuse work that needs the store while it is not up (503, with the reason)."""
        if not self.ready:
            raise StoreUnavailable(f"not ready: {self.store_error or 'starting'}")

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
        if settings.synthetic_rate <= 0 or settings.synthetic_backfill_s <= 0 or await self.store.symbols():
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
                delay_s = min(delay_s * 2, 30.0)
                continue
            self._start_background()
            return

    def _start_background(self) -> None:
        settings = self.settings
        self._tasks.append(asyncio.create_task(self.writer.run(), name="writer"))
        self._tasks.append(asyncio.create_task(self._tick_forever(), name="hub-ticker"))
        if settings.downsample_interval_ms > 0:
            self._tasks.append(asyncio.create_task(self.downsampler.run_forever(), name="downsampler"))
        if self.broker is not None:
            self._tasks.append(asyncio.create_task(self.broker.start(), name="broker-start"))
        if settings.synthetic_rate > 0:
            self._tasks.append(
                asyncio.create_task(
                    run_synthetic(self.ingestor, self.market, settings.synthetic_rate, self._synthetic_start_ms),
                    name="synthetic",
                )
            )
        self.ready = True
        log.info(
            "tvflux ready: store=%s symbols=%s synthetic=%s trades/s",
            self.store.kind,
            ",".join(self.symbols),
            settings.synthetic_rate,
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self._tasks: list[asyncio.Task[None]] = []
        watch = asyncio.create_task(self.descriptors.run(), name="descriptors")
        starter = None
        try:
            if not self.store.retry_start:
                await self._start_store()  # a local file: fail fast and loud
                self._start_background()
            else:  # a remote store may come up later: retried while unready
                starter = asyncio.create_task(self._start_store_when_reachable(), name="store-starter")
            yield
        finally:
            self.ready = False
            for helper in (starter, watch):
                if helper is not None:
                    helper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await helper
            tasks = self._tasks
            for task in reversed(tasks):
                if task.get_name() != "writer":
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if tasks:
                try:
                    await asyncio.wait_for(asyncio.shield(self.writer.drain()), timeout=30)
                except TimeoutError:
                    log.error(
                        "shutdown: the store did not take %d trades in time; they stay in the spool and are "
                        "replayed at the next start",
                        self.writer.pending_rows + self.writer.spilled_rows,
                    )
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.broker is not None:
                await self.broker.close()
            self.spool.close()
            await self.store.close()

    async def delete_trades(
        self,
        symbol: str,
        *,
        ids: list[str] | None,
        from_ms: int | None,
        to_ms: int | None,
        who: str,
        actor: str | None = None,
    ) -> int:
        """A trade correction, end to end: what was accepted reaches the store first (so
        nothing deleted comes back from the writer), the store deletes and marks the
        windows dirty (the next run rebuilds every tier), duplicates of the ids are
        forgotten, live series of the symbol are rebuilt and their subscribers reset, and
        the correction is recorded in the audit log before the answer."""
        self.require_ready()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.writer.flush()), timeout=10)
        from_ns = None if from_ms is None else from_ms * 1_000_000
        to_ns = None if to_ms is None else to_ms * 1_000_000
        for batch in self.writer.pending_for(symbol):
            hit = batch.ids is not None and ids is not None and bool(set(ids) & set(batch.ids))
            if from_ns is not None and to_ns is not None:
                hit = hit or bool(((batch.ts_ns >= from_ns) & (batch.ts_ns < to_ns)).any())
            if hit:
                raise StoreUnavailable("trades of this correction still wait for the store; retry shortly")
        deletion = await self.store.delete_trades(symbol, ids=ids, from_ns=from_ns, to_ns=to_ns)
        if ids:
            self.ingestor.forget(symbol, ids)
        for hook in getattr(self.downsampler, "on_changed", ()):  # caches of closed history
            hook(symbol)
        await self.hub.rebuild_symbol(symbol)
        entry = AuditEntry(
            time=now_ms(),
            who=who,
            action="delete_trades",
            symbol=symbol,
            deleted=deletion.deleted,
            ids=ids,
            fromMs=from_ms,
            toMs=to_ms,
            actor=actor,
        )
        await anyio.to_thread.run_sync(self.audit.append, entry)
        log.warning(
            "correction: %d trades of %s deleted by %s (%s)",
            deletion.deleted,
            symbol,
            who,
            f"{len(ids)} ids" if ids else f"[{from_ms}, {to_ms})",
        )
        return deletion.deleted

    async def _tick_forever(self) -> None:
        interval_s = max(self.settings.push_interval_ms, 20) / 1000
        while True:
            self.hub.tick(now_ms())
            await asyncio.sleep(interval_s)


class ConnectionLimiter:
    """Open streaming connections per client address, bounded."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, address: str) -> None:
        if self._open.get(address, 0) >= self.limit:
            raise Overloaded(f"more than {self.limit} open connections from {address}", retry_after_s=5)
        self._open[address] = self._open.get(address, 0) + 1

    def release(self, address: str) -> None:
        left = self._open.get(address, 0) - 1
        if left > 0:
            self._open[address] = left
        else:
            self._open.pop(address, None)


# How handlers ask for the services: an explicit named dependency (``create_app``
# provides "services"), which Litestar 3 requires and 2.x warns about when inferred.
ServicesDep = NamedDependency[Services]
LiveServicesDep = NamedDependency[LiveServices]
