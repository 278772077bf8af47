"""One fed symbol of an exchange source: its tracker, its instrument, and the figures
``/api/sources`` and ``/metrics`` show; and the ordered sink that hands its trades to
ingest."""

from __future__ import annotations

import asyncio
import logging
import time

from service.core.errors import InvalidTrade, Overloaded, PayloadTooLarge, TvfluxError
from service.core.models import Trade
from service.core.sources import GapRecord, SourceSpec, SymbolFeed
from service.core.venues.common import Instrument, VenueTrade
from service.core.venues.tracker import Tracker
from service.runtime.clock import now_ms
from service.runtime.exchanges.gaplog import GapLog
from service.runtime.ingest import Ingestor
from service.runtime.sources import RateMeter

log = logging.getLogger(__name__)


class Feed:
    def __init__(self, spec: SourceSpec, tracker: Tracker, instrument: Instrument) -> None:
        self.spec = spec
        self.tracker = tracker
        self.instrument = instrument
        self.instrument_known = False  # from the venue's instrument data (not a fallback)
        self.rate = RateMeter()
        self.trades = 0
        self.last_trade_s: float | None = None  # monotonic, when the newest trade was accepted

    def status(self) -> SymbolFeed:
        t = self.tracker
        instrument = self.instrument if self.instrument_known else None
        return SymbolFeed(
            symbol=self.spec.symbol,
            venue_symbol=self.spec.venue_symbol,
            state=t.state,
            last_trade_id=t.last_id,
            last_trade_time=t.last_time_ms,
            last_trade_age_s=None if self.last_trade_s is None else round(time.monotonic() - self.last_trade_s, 3),
            trades_per_s=round(self.rate.per_second(), 3),
            trades=self.trades,
            trades_backfilled=t.backfilled,
            gaps_found=t.gaps_found,
            gaps_open=t.gaps_open,
            pricescale=instrument.pricescale if instrument else None,
            volume_precision=instrument.volume_precision if instrument else None,
        )


class Sink:
    """Trades into ingest in the order the trackers passed them on, one batch at a time
    (a bounded queue: a full one makes the reader wait, and TCP slows the venue). Ingest
    makes every write idempotent by id. A full writer is waited out; trades ingest refuses
    (a time too far ahead of this clock) are reported as an open gap, never retried."""

    def __init__(self, ingestor: Ingestor, gaps: GapLog, *, max_batches: int = 1000) -> None:
        self.ingestor = ingestor
        self.gaps = gaps
        self._queue: asyncio.Queue[tuple[Feed, list[VenueTrade]]] = asyncio.Queue(max_batches)

    async def put(self, feed: Feed, trades: list[VenueTrade]) -> None:
        if trades:
            await self._queue.put((feed, trades))

    async def run(self) -> None:
        while True:
            feed, trades = await self._queue.get()
            batch = [Trade(feed.spec.symbol, t.price, t.size, t.time_ms, str(t.id)) for t in trades]
            step = self.ingestor.max_batch_trades
            for i in range(0, len(batch), step):
                await self._accept(feed, batch[i : i + step])

    async def _accept(self, feed: Feed, batch: list[Trade]) -> None:
        delay_s = 0.2
        while batch:
            try:
                result = await self.ingestor.accept(batch, now_ms(), history=True)
            except Overloaded as exc:
                log.warning("%s: ingest is full; waiting %.1f s", feed.spec.symbol, exc.retry_after_s)
                await asyncio.sleep(exc.retry_after_s)
                continue
            except InvalidTrade as exc:
                batch = self._without_refused(feed, batch, exc)
                continue
            except PayloadTooLarge:  # cannot happen: batches are cut to the limit
                raise
            except TvfluxError as exc:  # the spool cannot be written: nothing was taken
                log.error("%s: ingest failed (%s); retrying in %.1f s", feed.spec.symbol, exc.message, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 10.0)
                continue
            feed.trades += result.accepted
            feed.rate.add(result.accepted)
            feed.last_trade_s = time.monotonic()
            return

    def _without_refused(self, feed: Feed, batch: list[Trade], exc: InvalidTrade) -> list[Trade]:
        bad = {d["index"] for d in exc.details or [] if isinstance(d, dict) and d.get("index") is not None}
        if not bad:
            bad = set(range(len(batch)))
        refused = [batch[i] for i in sorted(bad)]
        ids = [int(t.id) for t in refused if t.id is not None]
        reasons = {d.get("reason") for d in exc.details or [] if isinstance(d, dict)}
        self.gaps.add(
            [
                GapRecord(
                    source=feed.tracker.source,
                    symbol=feed.spec.symbol,
                    venue_symbol=feed.spec.venue_symbol,
                    from_id=min(ids),
                    to_id=max(ids),
                    from_time=refused[0].time,
                    to_time=refused[-1].time,
                    state="open",
                    cause="refused by ingest",
                    reason=f"{len(refused)} trade(s) refused: {'; '.join(sorted(str(r) for r in reasons))[:300]}",
                    detected_at=now_ms(),
                    resolved_at=now_ms(),
                )
            ]
        )
        feed.tracker.gaps_found += 1
        feed.tracker.gaps_open += 1
        return [t for i, t in enumerate(batch) if i not in bad]
