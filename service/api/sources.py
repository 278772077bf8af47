"""``GET /api/sources`` (every trade source, its fed symbols and its gap records) and what a
fed symbol's metadata takes from its venue (price scale and volume precision)."""

from __future__ import annotations

import msgspec
from litestar import get

from service.api.services import Services, ServicesDep
from service.core.sources import SourcesResponse
from service.core.symbols import SymbolSpec


@get("/api/sources", sync_to_thread=False)
def api_sources(services: ServicesDep) -> SourcesResponse:
    return services.sources.status()


def fed_spec(services: Services, spec: SymbolSpec) -> SymbolSpec:
    """A symbol an exchange feeds takes its tick size and volume precision from the venue's
    instrument data (once it has answered), and the venue's name when it has no description."""
    feed = next((f for f in services.settings.feeds if f.symbol == spec.symbol), None)
    if feed is None:
        return spec
    instrument = services.sources.instrument(spec.symbol)
    if instrument is not None:
        spec = msgspec.structs.replace(
            spec, tick_size=float(instrument.tick_size), volume_precision=instrument.volume_precision
        )
    if not spec.description:
        spec = msgspec.structs.replace(spec, description=f"{feed.venue_symbol} on {feed.venue.capitalize()}")
    return spec


SOURCE_ROUTES = [api_sources]
