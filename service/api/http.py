"""HTTP endpoints: UDF protocol, JSON API, health and metrics.

Query parameters are taken as strings and validated by :mod:`service.runtime.history`, so every
bad value gets tvflux's own error shape and message.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Request, Response, delete, get, post
from litestar.params import FromQuery, QueryParameter

from service.api.auth import admin_guard, client_address, ingest_guard
from service.api.metrics import render_metrics
from service.api.ops import OPS_ROUTES, readiness, ready_body
from service.api.services import Services, ServicesDep
from service.api.symbols import EXCHANGE, symbols_response, udf_search_items, udf_symbol, who_of
from service.core.errors import InvalidMessage, InvalidRange, MissingParameter, TvfluxError
from service.core.models import DownsamplingResponse, TierStatus, TradesAccepted, TradesDecoder
from service.core.readiness import max_tier_lags_ms, scheduler_period_ms
from service.core.resolution import SUPPORTED
from service.core.symbols import SymbolsResponse
from service.runtime.clock import now_ms

_trades_decoder = TradesDecoder("json")
_trades_msgpack = TradesDecoder("msgpack")

# Parameters arrive as strings; `from` is a Python keyword, hence the aliases.
Query = FromQuery[str | None]
From = Annotated[str | None, QueryParameter(name="from")]
To = Annotated[str | None, QueryParameter(name="to")]
QueryText = Annotated[str | None, QueryParameter(name="query")]  # `query` itself is reserved by Litestar


def required_params(**params: str | None) -> None:
    """A missing parameter is the client's omission (400 ``missing_parameter``), not an
    unknown symbol or a bad range."""
    for name, value in params.items():
        if not value:
            raise MissingParameter(f"missing query parameter '{name}'", details={"parameter": name})


# --- UDF ------------------------------------------------------------------------------


@get("/udf/config", sync_to_thread=False)
def udf_config() -> dict[str, Any]:
    return {
        "supported_resolutions": list(SUPPORTED),
        "supports_group_request": False,
        "supports_marks": False,
        "supports_search": True,
        "supports_timescale_marks": False,
        "supports_time": True,
        "exchanges": [
            {"value": "", "name": "All", "desc": ""},
            {"value": "tvflux", "name": "tvflux", "desc": "tvflux"},
        ],
        "symbols_types": [{"name": "crypto", "value": "crypto"}],
    }


def _udf_symbol(symbol: str | None) -> str | None:
    """A symbol as UDF clients send it: the ticker (``BTCUSD``) or the ``full_name`` this
    server hands out (``tvflux:BTCUSD``). Other prefixes are not stripped: ``:`` is a
    legal character of a symbol."""
    prefix = EXCHANGE + ":"
    if symbol and symbol.startswith(prefix) and len(symbol) > len(prefix):
        return symbol[len(prefix) :]
    return symbol


@get("/udf/symbols", sync_to_thread=False)
def udf_symbols(services: ServicesDep, symbol: Query = None) -> dict[str, Any]:
    return udf_symbol(services, _udf_symbol(symbol) or "")


@get("/udf/search", sync_to_thread=False)
def udf_search(services: ServicesDep, text: QueryText = None, limit: Query = None) -> list[dict[str, Any]]:
    try:
        max_items = int(limit) if limit else 30
    except ValueError:
        raise InvalidMessage(f"'limit' must be an integer, got {limit!r}") from None
    if not 1 <= max_items <= 100:
        raise InvalidMessage(f"'limit' must be between 1 and 100, got {max_items}", details={"limit": max_items})
    return udf_search_items(services, text or "", max_items)


@get("/udf/history")
async def udf_history(
    services: ServicesDep,
    symbol: Query = None,
    resolution: Query = None,
    from_s: From = None,
    to_s: To = None,
    countback: Query = None,
) -> dict[str, Any]:
    required_params(symbol=symbol, resolution=resolution)
    services.require_ready()
    req = services.history.parse(_udf_symbol(symbol), resolution, from_s, to_s, countback, now_ms=now_ms())
    result = await services.history.query(req)
    if result.noData:
        body: dict[str, Any] = {"s": "no_data"}
        if result.nextTime is not None:
            body["nextTime"] = result.nextTime // 1000
        return body
    bars = result.bars
    return {
        "s": "ok",
        "t": [b.time // 1000 for b in bars],
        "o": [b.open for b in bars],
        "h": [b.high for b in bars],
        "l": [b.low for b in bars],
        "c": [b.close for b in bars],
        "v": [b.volume for b in bars],
    }


@get("/udf/time", sync_to_thread=False, media_type="text/plain")
def udf_time() -> str:
    return str(now_ms() // 1000)


# --- JSON API -----------------------------------------------------------------------------


@get("/api/bars")
async def api_bars(
    services: ServicesDep,
    symbol: Query = None,
    resolution: Query = None,
    from_s: From = None,
    to_s: To = None,
    countback: Query = None,
) -> Response:
    required_params(symbol=symbol, resolution=resolution)
    services.require_ready()
    req = services.history.parse(symbol, resolution, from_s, to_s, countback, now_ms=now_ms())
    return Response(await services.history.query(req))


@get("/api/symbols", sync_to_thread=False)
def api_symbols(services: ServicesDep) -> SymbolsResponse:
    return symbols_response(services)


@post("/api/trades", status_code=200, guards=[ingest_guard])
async def api_trades(request: Request, services: ServicesDep) -> TradesAccepted:
    services.require_ready()
    trades = _trades_decoder.decode_batch(await request.body())
    return await services.ingestor.accept(trades, now_ms())


@post("/api/admin/trades", status_code=200, guards=[admin_guard])
async def api_admin_trades(request: Request, services: ServicesDep) -> TradesAccepted:
    """Bulk history (``tvflux import`` while the service holds the store): the rules of
    ``POST /api/trades`` without the live horizon (``TVFLUX_MAX_PAST_MS``), new symbols
    welcome. JSON, or msgpack with ``Content-Type: application/msgpack``."""
    services.require_ready()
    msgpack = "msgpack" in request.headers.get("content-type", "")
    trades = (_trades_msgpack if msgpack else _trades_decoder).decode_batch(await request.body())
    await services.registry.ensure(sorted({t.symbol for t in trades}), who=f"bulk history, {who_of(request, services)}")
    return await services.ingestor.accept(trades, now_ms(), history=True)


Ids = Annotated[list[str] | None, QueryParameter(name="id")]


def _ms(text: str | None, name: str) -> int | None:
    if text in (None, ""):
        return None
    try:
        value = int(text)
    except ValueError:
        raise InvalidRange(f"'{name}' must be epoch milliseconds, got {text!r}", details={name: text}) from None
    if value < 0:
        raise InvalidRange(f"'{name}' must be epoch milliseconds >= 0", details={name: value})
    return value


@delete("/api/trades", status_code=200, guards=[admin_guard])
async def api_delete_trades(
    request: Request,
    services: ServicesDep,
    symbol: Query = None,
    from_ms: From = None,
    to_ms: To = None,
    ids: Ids = None,
) -> dict[str, int]:
    """Trade corrections: ``?symbol=S&from=MS&to=MS`` (epoch **ms**, ``to`` exclusive) or
    ``&id=…`` repeated (both: those ids within the range). Admin."""
    required_params(symbol=symbol)
    assert symbol is not None
    services.symbols.require(symbol)
    lo, hi = _ms(from_ms, "from"), _ms(to_ms, "to")
    if (lo is None) != (hi is None):
        raise InvalidRange("give both 'from' and 'to' (epoch ms), or neither with 'id'")
    if lo is not None and hi is not None and lo >= hi:
        raise InvalidRange("'from' must be before 'to'", details={"from": lo, "to": hi})
    if lo is None and not ids:
        raise MissingParameter("give 'from' and 'to' (epoch ms), or one or more 'id'", details={"parameter": "id"})
    for trade_id in ids or ():
        if not 1 <= len(trade_id) <= 64:
            raise InvalidMessage(f"a trade id has 1-64 characters, got {len(trade_id)}")
    address = client_address(request)
    who = f"{'admin token' if services.settings.admin_token else 'no admin token set'} from {address}"
    deleted = await services.delete_trades(
        symbol,
        ids=sorted(set(ids)) if ids else None,
        from_ms=lo,
        to_ms=hi,
        who=who,
        actor=request.headers.get("x-tvflux-actor"),
    )
    return {"deleted": deleted}


@get("/api/admin/audit", guards=[admin_guard])
async def api_admin_audit(services: ServicesDep, limit: Query = None) -> dict[str, Any]:
    """The audit log of corrections, newest first (``limit``, default 100, at most 1000)."""
    try:
        count = int(limit) if limit else 100
    except ValueError:
        raise InvalidMessage(f"'limit' must be an integer, got {limit!r}") from None
    if not 1 <= count <= 1000:
        raise InvalidMessage("'limit' must be between 1 and 1000", details={"limit": count})
    entries = await anyio.to_thread.run_sync(services.audit.recent, count)
    return {"entries": [msgspec.to_builtins(e) for e in entries]}


@get("/api/downsampling")
async def api_downsampling(services: ServicesDep) -> DownsamplingResponse:
    services.require_ready()
    tiers = await services.store.downsampling_status(now_ms())
    return DownsamplingResponse(_with_normal_lag(services, services.downsampler.runlog.annotate(tiers, now_ms())))


def _with_normal_lag(services: Services, tiers: list[TierStatus]) -> list[TierStatus]:
    """Each tier with the lag its plan makes normal (a 1d tier trails the clock by up to a
    day and more: its nature, not a fault), as readiness judges it, without the slack."""
    settings = services.settings
    period_ms = scheduler_period_ms(services.store.downsampling_in_database, settings.downsample_interval_ms)
    if period_ms is None:
        return tiers
    normal = max_tier_lags_ms(settings.plan, period_ms, 0)
    return [msgspec.structs.replace(t, normalLagMs=normal.get(t.tier)) for t in tiers]


@post("/api/downsampling/run", status_code=200, guards=[admin_guard])
async def api_downsampling_run(services: ServicesDep) -> DownsamplingResponse:
    services.require_ready()
    # "Run now" should include what was just posted: flush the writer first (bounded, so a
    # store outage doesn't hang the request; the run then works on what is stored).
    with contextlib.suppress(asyncio.TimeoutError):
        # shield: a timed-out wait must not cancel an append half-way
        await asyncio.wait_for(asyncio.shield(services.writer.flush()), timeout=10)
    report = await services.downsampler.run_once()
    tiers = await services.store.downsampling_status(now_ms())
    annotated = _with_normal_lag(services, services.downsampler.runlog.annotate(tiers, now_ms()))
    return DownsamplingResponse(annotated, ran=report.ran)


async def _store_trades(services: Services) -> int | None:
    """Trades in the store, where it counts them cheaply (``Store.trade_count``)."""
    if not services.ready:
        return None
    try:
        return await services.store.trade_count()
    except TvfluxError:
        return None


def _client_counts(services: Services) -> dict[str, int]:
    """Clients and subscriptions: this process's own, plus those its edges hold (``serve
    --workers``, ``tvflux edge``), which report them; an edge's own connection to the core is
    not a client."""
    edges = [c for c in services.hub.clients if c.edge_stats is not None]
    direct = len(services.hub.clients) - len(edges)
    direct_subs = services.hub.subscription_count - sum(len(c.subs) for c in edges)
    return {
        "wsClients": direct + sum(c.edge_stats[0] for c in edges if c.edge_stats is not None),
        "subscriptions": direct_subs + sum(c.edge_stats[1] for c in edges if c.edge_stats is not None),
        "edges": len(edges),
    }


@get("/api/stats")
async def api_stats(services: ServicesDep) -> dict[str, Any]:
    health = await services.store.health()
    return {
        "ingestRatePerS": services.ingest_rate.per_second(),
        "tradesAccepted": services.ingestor.accepted,  # since this process started
        "storeTrades": await _store_trades(services),  # all the store holds (None: not counted)
        "duplicates": services.ingestor.duplicates,
        **_client_counts(services),
        "store": {"kind": services.store.kind, "healthy": health.ok, "error": health.error},
        "writer": {
            "pendingRows": services.writer.pending_rows,
            "storedRows": services.writer.stored_rows,
            "spilledRows": services.writer.spilled_rows,
            "spoolBytes": services.spool.size_bytes,
            "lastError": services.writer.last_error,
        },
        "downsampler": {"runs": services.downsampler.runs, "lastError": services.downsampler.last_error},
        "uptimeS": round(now_ms() / 1000 - services.started_at, 1),
        "adminTokenRequired": bool(services.settings.admin_token),  # /admin asks for it before admin reads
    }


# --- health and metrics ---------------------------------------------------------------------


@get("/health/live", sync_to_thread=False)
def health_live() -> dict[str, Any]:
    return {"status": "ok"}


@get("/health/ready")
async def health_ready(services: ServicesDep) -> Response:
    # store reachable, writer and spool lag, downsampling lag per tier: service/core/readiness.py
    verdict, _ = await readiness(services)
    return Response(ready_body(services, verdict), status_code=200 if verdict.ready else 503)


@get("/metrics", media_type="text/plain; version=0.0.4")
async def metrics(services: ServicesDep) -> bytes:
    verdict, tiers = await readiness(services)
    return render_metrics(services, tiers, verdict)


ROUTES = [
    udf_config,
    udf_symbols,
    udf_search,
    udf_history,
    udf_time,
    api_bars,
    api_symbols,
    api_trades,
    api_admin_trades,
    api_delete_trades,
    api_admin_audit,
    api_downsampling,
    api_downsampling_run,
    api_stats,
    health_live,
    health_ready,
    metrics,
    *OPS_ROUTES,
]
