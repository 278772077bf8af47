"""HTTP endpoints: UDF protocol, JSON API, health and metrics.

Query parameters are taken as strings and validated by :mod:`service.runtime.history`, so every
bad value gets tvflux's own error shape and message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Annotated

import anyio.to_thread
import msgspec
from litestar import Request, Response, delete, get, post
from litestar.params import FromQuery, QueryParameter
from litestar.response import Stream

from service.api.auth import admin_guard, client_address, ingest_guard
from service.api.metrics import render_metrics
from service.api.ops import OPS_ROUTES, readiness, ready_body
from service.api.services import Services, ServicesDep
from service.api.sources import SOURCE_ROUTES
from service.api.symbols import EXCHANGE, symbols_response, udf_search_items, udf_symbol, who_of
from service.core.answers import (
    Deleted,
    DownsamplerStats,
    Liveness,
    Readiness,
    Stats,
    StoreStats,
    UdfBars,
    UdfConfig,
    UdfNoData,
    UdfSearchItem,
    UdfSymbol,
    WriterStats,
)
from service.core.errors import InvalidMessage, InvalidRange, MissingParameter, NotFound, TvfluxError
from service.core.models import (
    Bar,
    BarsResponse,
    DownsamplingResponse,
    ManualRun,
    TierStatus,
    TradesAccepted,
    TradesDecoder,
)
from service.core.readiness import max_tier_lags_ms, scheduler_period_ms
from service.core.symbols import SymbolsResponse
from service.runtime.audit import AuditPage
from service.runtime.clock import now_ms
from service.runtime.corrections import Correction
from service.runtime.downsampler import KEEP_MANUAL_RUNS

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
def udf_config() -> UdfConfig:
    return UdfConfig()


def _udf_symbol(symbol: str | None) -> str | None:
    """A symbol as UDF clients send it: the ticker (``BTCUSD``) or the ``full_name`` this
    server hands out (``tvflux:BTCUSD``). Other prefixes are not stripped: ``:`` is a
    legal character of a symbol."""
    prefix = EXCHANGE + ":"
    if symbol and symbol.startswith(prefix) and len(symbol) > len(prefix):
        return symbol[len(prefix) :]
    return symbol


@get("/udf/symbols", sync_to_thread=False)
def udf_symbols(services: ServicesDep, symbol: Query = None) -> UdfSymbol:
    return udf_symbol(services, _udf_symbol(symbol) or "")


@get("/udf/search", sync_to_thread=False)
def udf_search(services: ServicesDep, text: QueryText = None, limit: Query = None) -> list[UdfSearchItem]:
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
) -> UdfBars | UdfNoData:
    required_params(symbol=symbol, resolution=resolution)
    services.require_ready()
    req = services.history.parse(_udf_symbol(symbol), resolution, from_s, to_s, countback, now_ms=now_ms())
    result = await services.history.query(req)
    if result.no_data:
        return UdfNoData(None if result.next_time is None else result.next_time // 1000)
    bars = result.bars
    if len(bars) > services.settings.max_bars:
        return _udf_stream(bars, services.settings.max_bars)  # type: ignore[return-value]
    return UdfBars(
        t=[b.time // 1000 for b in bars],
        o=[b.open for b in bars],
        h=[b.high for b in bars],
        l=[b.low for b in bars],
        c=[b.close for b in bars],
        v=[b.volume for b in bars],
    )


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
) -> Response[BarsResponse]:
    required_params(symbol=symbol, resolution=resolution)
    services.require_ready()
    req = services.history.parse(symbol, resolution, from_s, to_s, countback, now_ms=now_ms())
    result = await services.history.query(req)
    if len(result.bars) > services.settings.max_bars:
        return _bars_stream(result, services.settings.max_bars)  # type: ignore[return-value]
    return Response(result)


# A countback beyond TVFLUX_MAX_BARS (read in pages, service.runtime.history) is written out
# page by page, so the answer is never held twice (bars and their whole JSON): the same JSON
# as the Structs give, streamed.


def _bars_stream(result: BarsResponse, page: int) -> Stream:
    bars = result.bars

    def chunks() -> Iterator[bytes]:
        yield b'{"bars":['
        for i in range(0, len(bars), page):
            yield (b"," if i else b"") + msgspec.json.encode(bars[i : i + page])[1:-1]
        yield b'],"noData":false,"nextTime":' + msgspec.json.encode(result.next_time) + b"}"

    return Stream(chunks(), media_type="application/json")


def _udf_stream(bars: list[Bar], page: int) -> Stream:
    columns: list[tuple[bytes, Callable[[Bar], float | int]]] = [
        (b"t", lambda b: b.time // 1000),
        (b"o", lambda b: b.open),
        (b"h", lambda b: b.high),
        (b"l", lambda b: b.low),
        (b"c", lambda b: b.close),
        (b"v", lambda b: b.volume),
    ]

    def chunks() -> Iterator[bytes]:
        yield b'{"s":"ok"'
        for name, value in columns:
            yield b',"' + name + b'":['
            for i in range(0, len(bars), page):
                yield (b"," if i else b"") + msgspec.json.encode([value(b) for b in bars[i : i + page]])[1:-1]
            yield b"]"
        yield b"}"

    return Stream(chunks(), media_type="application/json")


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
) -> Deleted:
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
    correction = Correction(
        symbol,
        who,
        ids=sorted(set(ids)) if ids else None,
        from_ms=lo,
        to_ms=hi,
        actor=request.headers.get("x-tvflux-actor"),
    )
    deleted = await services.delete_trades(correction)
    return Deleted(deleted)


@get("/api/admin/audit", guards=[admin_guard])
async def api_admin_audit(services: ServicesDep, limit: Query = None) -> AuditPage:
    """The audit log of corrections, newest first (``limit``, default 100, at most 1000)."""
    try:
        count = int(limit) if limit else 100
    except ValueError:
        raise InvalidMessage(f"'limit' must be an integer, got {limit!r}") from None
    if not 1 <= count <= 1000:
        raise InvalidMessage("'limit' must be between 1 and 1000", details={"limit": count})
    entries = await anyio.to_thread.run_sync(services.audit.recent, count)
    return AuditPage(entries)


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
    return [msgspec.structs.replace(t, normal_lag_ms=normal.get(t.tier)) for t in tiers]


MAX_WAIT_S = 600.0


def _wait_s(wait: str | None) -> float:
    if wait in (None, ""):
        return 0.0
    try:
        seconds = float(wait)
    except ValueError:
        raise InvalidMessage(f"'wait' must be a number of seconds, got {wait!r}") from None
    if not 0 <= seconds <= MAX_WAIT_S:
        raise InvalidMessage(f"'wait' must be between 0 and {MAX_WAIT_S:g} seconds", details={"wait": seconds})
    return seconds


async def _run_answer(services: Services, run: ManualRun) -> Response[ManualRun]:
    """The run with where every tier stands now; 202 while it is still running."""
    tiers = await services.store.downsampling_status(now_ms())
    tiers = _with_normal_lag(services, services.downsampler.runlog.annotate(tiers, now_ms()))
    run = msgspec.structs.replace(run, tiers=tiers)
    return Response(run, status_code=202 if run.state == "running" else 200)


@post("/api/downsampling/run", guards=[admin_guard])
async def api_downsampling_run(services: ServicesDep, wait: Query = None) -> Response[ManualRun]:
    """Starts a run and answers at once (202) with its id; ``?wait=S`` waits up to S seconds
    for it to finish (200 once it has). A run already going is answered, not doubled."""
    services.require_ready()
    wait_s = _wait_s(wait)

    async def flush() -> None:
        # "Run now" should include what was just posted: flush the writer first (bounded, so a
        # store outage doesn't hang the run; it then works on what is stored).
        with contextlib.suppress(asyncio.TimeoutError):
            # shield: a timed-out wait must not cancel an append half-way
            await asyncio.wait_for(asyncio.shield(services.writer.flush()), timeout=10)

    run = services.downsampler.start_manual(flush)
    if wait_s > 0:
        run = await services.downsampler.wait_manual(run.id, wait_s) or run
    return await _run_answer(services, run)


@get("/api/downsampling/runs/{run_id:str}")
async def api_downsampling_run_status(services: ServicesDep, run_id: str, wait: Query = None) -> Response[ManualRun]:
    """A run started with ``POST /api/downsampling/run``; ``?wait=S`` as there."""
    services.require_ready()
    run = await services.downsampler.wait_manual(run_id, _wait_s(wait))
    if run is None:
        raise NotFound(f"no downsampling run {run_id!r} (only the latest {KEEP_MANUAL_RUNS} are kept)")
    return await _run_answer(services, run)


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
async def api_stats(services: ServicesDep) -> Stats:
    health = await services.store.health()
    writer = services.writer
    clients = _client_counts(services)
    return Stats(
        ingest_rate_per_s=services.ingest_rate.per_second(),
        trades_accepted=services.ingestor.accepted,
        store_trades=await _store_trades(services),
        duplicates=services.ingestor.duplicates,
        ws_clients=clients["wsClients"],
        subscriptions=clients["subscriptions"],
        edges=clients["edges"],
        store=StoreStats(services.store.kind, health.ok, health.error),
        writer=WriterStats(
            writer.pending_rows, writer.stored_rows, writer.spilled_rows, services.spool.size_bytes, writer.last_error
        ),
        downsampler=DownsamplerStats(services.downsampler.runs, services.downsampler.last_error),
        uptime_s=round(now_ms() / 1000 - services.started_at, 1),
        admin_token_required=bool(services.settings.admin_token),
    )


# --- health and metrics ---------------------------------------------------------------------


@get("/health/live", sync_to_thread=False)
def health_live() -> Liveness:
    return Liveness("ok")


@get("/health/ready")
async def health_ready(services: ServicesDep) -> Response[Readiness]:
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
    api_downsampling_run_status,
    api_stats,
    health_live,
    health_ready,
    metrics,
    *OPS_ROUTES,
    *SOURCE_ROUTES,
]
