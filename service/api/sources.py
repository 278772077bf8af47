"""``GET /api/sources`` (every trade source, its fed symbols and its gap records) and what a
fed symbol's metadata takes from its venue (price scale and volume precision)."""

from __future__ import annotations

from litestar import get

from service.api.services import Services, ServicesDep
from service.core.models import SymbolInfo
from service.core.sources import SourcesResponse

DEFAULT_PRICESCALE = 100
DEFAULT_VOLUME_PRECISION = 6


@get("/api/sources", sync_to_thread=False)
def api_sources(services: ServicesDep) -> SourcesResponse:
    return services.sources.status()


def symbol_info(services: Services, symbol: str) -> SymbolInfo:
    """A symbol as ``/api/symbols`` and ``/udf`` describe it: a fed symbol takes its price
    scale from its venue's tick size (once the venue's instrument data has answered)."""
    feed = next((f for f in services.settings.feeds if f.symbol == symbol), None)
    instrument = services.sources.instrument(symbol)
    description = f"{symbol} (tvflux)" if feed is None else f"{feed.venue_symbol} on {feed.venue.capitalize()}"
    pricescale = DEFAULT_PRICESCALE if instrument is None else instrument.pricescale
    return SymbolInfo(symbol=symbol, description=description, pricescale=pricescale)


def udf_precision(services: Services, symbol: str) -> tuple[int, int]:
    """``minmov`` and ``volume_precision`` of ``/udf/symbols``."""
    instrument = services.sources.instrument(symbol)
    if instrument is None:
        return 1, DEFAULT_VOLUME_PRECISION
    return instrument.minmov, instrument.volume_precision


SOURCE_ROUTES = [api_sources]
