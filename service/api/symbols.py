"""Symbols over HTTP: what ``/api/symbols`` and the UDF endpoints say about each listed
symbol (from the registry, :mod:`service.runtime.symbols`), and the admin endpoints that
add, update, list and remove symbols (``tvflux symbols`` calls them while the service runs).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, delete, get, post
from litestar.params import QueryParameter

from service.api.auth import admin_guard, client_address
from service.api.services import Services, ServicesDep
from service.api.sources import fed_spec
from service.core.answers import UdfSearchItem, UdfSymbol
from service.core.errors import InvalidMessage, MissingParameter
from service.core.symbols import (
    SymbolInfo,
    SymbolRecord,
    SymbolRemoved,
    SymbolRequest,
    SymbolSpec,
    SymbolsResponse,
    info,
    price_scale,
)
from service.runtime.clock import now_ms

EXCHANGE = "tvflux"
# A symbol without a trade for this long is not streaming (UDF ``data_status: endofday``):
# an imported history, a delisted pair, a feed that stopped.
STREAMING_WITHIN_MS = 3_600_000
_request = msgspec.json.Decoder(SymbolRequest)


def symbol_info(services: Services, spec: SymbolSpec) -> SymbolInfo:
    return info(fed_spec(services, spec), services.ingestor.last_trade_ms(spec.symbol))


def symbols_response(services: Services) -> SymbolsResponse:
    return SymbolsResponse([symbol_info(services, spec) for spec in services.symbols.specs()])


def udf_symbol(services: Services, name: str) -> UdfSymbol:
    """``/udf/symbols``: the symbol's own price scale, volume precision and description (a
    fed symbol's from its venue)."""
    spec = fed_spec(services, services.symbols.require(name))
    scale, minmov = price_scale(spec.tick_size)
    last = services.ingestor.last_trade_ms(name)
    streaming = last is not None and now_ms() - last <= STREAMING_WITHIN_MS
    return UdfSymbol(
        name=name,
        ticker=name,
        full_name=f"{EXCHANGE}:{name}",
        description=spec.label,
        type="crypto",
        exchange=EXCHANGE,
        listed_exchange=EXCHANGE,
        minmov=minmov,
        pricescale=scale,
        volume_precision=spec.volume_precision,
        data_status="streaming" if streaming else "endofday",
    )


def udf_search_items(services: Services, text: str, max_items: int) -> list[UdfSearchItem]:
    """Symbols whose name or description holds ``text``: the name itself first, then names
    starting with it, then the rest (a stable sort), so among hundreds of symbols 'ETH'
    finds ETHUSD within the limit."""
    needle = text.upper()
    out = []
    for spec in services.symbols.specs():
        if needle in spec.symbol.upper() or needle in spec.description.upper():
            spec = fed_spec(services, spec)
            out.append(
                UdfSearchItem(spec.symbol, f"{EXCHANGE}:{spec.symbol}", spec.label, EXCHANGE, spec.symbol, "crypto")
            )
    out.sort(key=lambda item: (item.symbol.upper() != needle, not item.symbol.upper().startswith(needle)))
    return out[:max_items]


def who_of(request: Request[Any, Any, Any], services: Services) -> str:
    """The credential and the client address, as the audit log records them."""
    credential = "admin token" if services.settings.admin_token else "no admin token set"
    return f"{credential} from {client_address(request)}"


@get("/api/admin/symbols", guards=[admin_guard])
async def admin_symbols(services: ServicesDep) -> dict[str, list[SymbolRecord]]:
    """Every symbol of the registry, removed ones included, with where its stored trades
    begin and end."""
    services.require_ready()
    return {"symbols": await services.registry.listing()}


@post("/api/admin/symbols", status_code=200, guards=[admin_guard])
async def admin_add_symbol(request: Request[Any, Any, Any], services: ServicesDep) -> SymbolInfo:
    """Add a symbol, or update the metadata of one (``SymbolRequest``); listed at once."""
    services.require_ready()
    try:
        body = _request.decode(await request.body())
    except msgspec.DecodeError as exc:
        raise InvalidMessage(f"the body must be a JSON object of a symbol: {exc}") from None
    spec = await services.registry.upsert(
        body, who=who_of(request, services), actor=request.headers.get("x-tvflux-actor")
    )
    return symbol_info(services, spec)


Data = Annotated[str | None, QueryParameter(name="data")]


@delete("/api/admin/symbols", status_code=200, guards=[admin_guard])
async def admin_remove_symbol(
    request: Request[Any, Any, Any], services: ServicesDep, symbol: str | None = None, with_data: Data = None
) -> SymbolRemoved:
    """``?symbol=S`` unlists the symbol (its data is kept); ``&data=true`` deletes its
    stored trades and bars too."""
    services.require_ready()
    if not symbol:
        raise MissingParameter("missing query parameter 'symbol'", details={"parameter": "symbol"})
    if with_data not in (None, "", "true", "false"):
        raise InvalidMessage(f"'data' must be true or false, got {with_data!r}", details={"data": with_data})
    purge = with_data == "true"
    deleted = await services.registry.remove(
        symbol, purge=purge, who=who_of(request, services), actor=request.headers.get("x-tvflux-actor")
    )
    return SymbolRemoved(removed=symbol, data_deleted=purge, deleted_trades=deleted)


SYMBOL_ROUTES = [admin_symbols, admin_add_symbol, admin_remove_symbol]
