"""Every trade source of the service behind one interface: the synthetic market for the
symbols no exchange feeds, and one :class:`~service.runtime.exchanges.source.ExchangeSource`
per venue named in ``TVFLUX_SOURCES``. A source runs as one task; a failing source never
stops another, nor ingest from publishers."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Protocol

from service.core.settings import Settings
from service.core.sources import VENUES, SourcesResponse, SourceStatus, SymbolFeed
from service.core.synthetic import SyntheticMarket
from service.core.venues.common import Instrument
from service.runtime.exchanges.gaplog import GapLog
from service.runtime.exchanges.source import ExchangeSource
from service.runtime.ingest import Ingestor
from service.runtime.sources import RateMeter, run_synthetic

log = logging.getLogger(__name__)


class TradeSource(Protocol):
    name: str
    kind: str

    async def run(self) -> None:
        """Feed trades into ingest until cancelled."""

    def status(self) -> SourceStatus: ...

    def instrument(self, symbol: str) -> Instrument | None:
        """The venue's trading rules for a symbol this source feeds, when it knows them."""


def synthetic_symbols(settings: Settings) -> tuple[str, ...]:
    """The listed symbols no exchange feeds: the synthetic market's."""
    fed = {f.symbol for f in settings.feeds}
    return tuple(s for s in settings.symbols if s not in fed)


def all_symbols(settings: Settings) -> tuple[str, ...]:
    """``TVFLUX_SYMBOLS`` and every symbol ``TVFLUX_SOURCES`` feeds."""
    return tuple(dict.fromkeys((*settings.symbols, *(f.symbol for f in settings.feeds))))


class SyntheticSource:
    kind = "synthetic"
    name = "synthetic"

    def __init__(self, ingestor: Ingestor, market: SyntheticMarket, rate_per_s: float) -> None:
        self.ingestor = ingestor
        self.market = market
        self.rate_per_s = rate_per_s
        self.start_ms = 0  # set by SourceSet.start: where the first-start history ended
        self._rates = {s: RateMeter() for s in market.symbols}
        self._trades = dict.fromkeys(market.symbols, 0)
        self._last_s: dict[str, float] = {}

    def _accepted(self, symbol: str, n: int) -> None:
        self._trades[symbol] += n
        self._rates[symbol].add(n)
        self._last_s[symbol] = time.monotonic()

    async def run(self) -> None:
        await run_synthetic(self.ingestor, self.market, self.rate_per_s, self.start_ms, self._accepted)

    def instrument(self, symbol: str) -> Instrument | None:
        return None

    def status(self) -> SourceStatus:
        now = time.monotonic()
        feeds = [
            SymbolFeed(
                symbol=s,
                venue_symbol=None,
                state="live",
                last_trade_id=None,
                last_trade_time=None,
                last_trade_age_s=round(now - self._last_s[s], 3) if s in self._last_s else None,
                trades_per_s=round(self._rates[s].per_second(), 3),
                trades=self._trades[s],
                trades_backfilled=0,
                gaps_found=0,
                gaps_open=0,
            )
            for s in self.market.symbols
        ]
        return SourceStatus(name=self.name, kind="synthetic", connected=True, symbols=feeds)


class SourceSet:
    def __init__(self, settings: Settings, ingestor: Ingestor, market: SyntheticMarket | None) -> None:
        self.gaps = GapLog(os.path.join(settings.data_dir, "gaps.jsonl"))
        self.sources: list[TradeSource] = []
        if market is not None and settings.synthetic_rate > 0:
            self.sources.append(SyntheticSource(ingestor, market, settings.synthetic_rate))
        feeds = settings.feeds
        for venue in VENUES:
            specs = [f for f in feeds if f.venue == venue]
            if specs:
                self.sources.append(ExchangeSource(venue, specs, settings, ingestor, self.gaps))
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def synthetic(self) -> SyntheticSource | None:
        return next((s for s in self.sources if isinstance(s, SyntheticSource)), None)

    def start(self, synthetic_start_ms: int) -> list[asyncio.Task[None]]:
        """One task per source (the caller cancels them at shutdown)."""
        self.gaps.load()
        synthetic = self.synthetic
        if synthetic is not None:
            synthetic.start_ms = synthetic_start_ms
        self._tasks = [asyncio.create_task(self._guard(s), name=f"source-{s.name}") for s in self.sources]
        return self._tasks

    async def _guard(self, source: TradeSource) -> None:
        """A source that crashes on a bug is logged and restarted, never taking others down."""
        while True:
            try:
                await source.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("trade source %s failed; restarting it in 5 s", source.name)
                await asyncio.sleep(5)

    def instrument(self, symbol: str) -> Instrument | None:
        for source in self.sources:
            found = source.instrument(symbol)
            if found is not None:
                return found
        return None

    def status(self) -> SourcesResponse:
        in_progress = [r for s in self.sources if isinstance(s, ExchangeSource) for r in s.in_progress()]
        return SourcesResponse(sources=[s.status() for s in self.sources], gaps=in_progress + self.gaps.recent())
