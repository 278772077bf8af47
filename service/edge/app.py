"""An edge process's application: ``/ws`` and ``/api/stream`` served from its own
:class:`~service.edge.hub.EdgeHub` (the same handlers as the core's), the chart page and
its static files, its own ``/health/*``; every other request (history, ingest, admin,
metrics) is proxied to the core.

History goes through the core on purpose, for both stores: the embedded DuckDB file can be
open in one process only (DuckDB locks it; a second process cannot even read it while the
core writes), and the core's history path is the one that adds the trades still waiting
for the writer and the hot window (exact answers at the live edge). An edge adds one
loopback hop (about a millisecond) to a history request, which is small next to the
query itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import msgspec
from litestar import Litestar, Response, get
from litestar.di import NamedDependency, Provide
from litestar.types import LifeSpanScope, Receive, Scope, Send

from service.api.errors import EXCEPTION_HANDLERS
from service.api.services import ConnectionLimiter, LiveServices
from service.api.static import static_routes
from service.api.streams import sse_stream, ws_bars
from service.core.answers import EdgeReadiness, Liveness, SymbolsState, UpstreamState
from service.core.errors import StoreUnavailable
from service.core.models import ErrorBody
from service.core.settings import Settings
from service.core.symbols import SymbolSpec, SymbolsResponse
from service.edge.hub import EdgeHub
from service.edge.proxy import CoreProxy
from service.edge.upstream import Upstream
from service.runtime.descriptors import DescriptorWatch
from service.runtime.history import SymbolSet

log = logging.getLogger(__name__)

SYMBOLS_REFRESH_S = 5.0
STARTUP_WAIT_S = 10.0  # then serve anyway, unready: the core may be down for long


class EdgeServices(LiveServices):
    hub: EdgeHub

    def __init__(self, settings: Settings, upstream: Upstream, core_url: str) -> None:
        self.settings = settings
        self.upstream = upstream
        self.core_url = core_url.rstrip("/")
        self.hub = EdgeHub(upstream)
        upstream.stats = lambda: (len(self.hub.clients), self.hub.subscription_count)
        self.symbols = SymbolSet(settings.symbols)
        self.connections = ConnectionLimiter(settings.max_connections_per_client)
        self.symbols_error: str | None = "not fetched yet"
        self.symbols_known = False
        self._symbols_fetched = asyncio.Event()
        self.descriptors = DescriptorWatch()  # each edge process has its own limit

    def require_ready(self) -> None:
        # Only until the edge knows the core's symbols (else a valid one would be refused as
        # unknown). A lost upstream does not refuse subscriptions: the hub takes them and
        # says `status` live false; /health/ready reports it.
        if not self.symbols_known:
            raise StoreUnavailable(f"not ready: starting ({self.symbols_error})")

    async def _refresh_symbols(self) -> None:
        async with httpx.AsyncClient(base_url=self.core_url, timeout=5) as http:
            while True:
                try:
                    response = await http.get("/api/symbols")
                    response.raise_for_status()
                    known = msgspec.json.decode(response.content, type=SymbolsResponse)
                    gone = self.symbols.replace([SymbolSpec(symbol=s.symbol) for s in known.symbols])
                    for symbol in gone if self.symbols_known else ():  # removed at the core
                        self.hub.drop_symbol(symbol, ErrorBody("unknown_symbol", f"symbol {symbol!r} was removed"))
                    self.symbols_error = None
                    self.symbols_known = True
                    self._symbols_fetched.set()
                except (httpx.HTTPError, msgspec.DecodeError) as exc:
                    self.symbols_error = f"core unreachable: {exc}"
                await asyncio.sleep(SYMBOLS_REFRESH_S if self.symbols_known else 0.5)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        refresher = asyncio.create_task(self._refresh_symbols(), name="edge-symbols")
        watch = asyncio.create_task(self.descriptors.run(), name="descriptors")
        await self.upstream.start()
        # Startup waits (a while) for the core's symbols and the upstream: connections
        # meanwhile wait in the listen backlog instead of being refused as unknown/not ready.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(self._symbols_fetched.wait(), self.upstream.is_live.wait()), STARTUP_WAIT_S
            )
        try:
            yield
        finally:
            for task in (refresher, watch):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.upstream.close()


@get("/health/live", sync_to_thread=False)
def edge_live() -> Liveness:
    return Liveness("ok", role="edge")


@get("/health/ready", sync_to_thread=False)
def edge_ready(services: EdgeServicesDep) -> Response[EdgeReadiness]:
    edge = services
    descriptors = edge.descriptors.reason()
    ready = edge.upstream.live and edge.symbols_known and descriptors is None
    body = EdgeReadiness(
        ready=ready,
        descriptors=descriptors,
        upstream=UpstreamState(edge.upstream.live, edge.upstream.reason),
        symbols=SymbolsState(edge.symbols_error),
        clients=len(edge.hub.clients),
        subscriptions=edge.hub.subscription_count,
        frames_sent=edge.hub.frames_sent,
        clients_cut=edge.hub.clients_cut,
    )
    return Response(body, status_code=200 if ready else 503)


EdgeServicesDep = NamedDependency[EdgeServices]


# served by the edge itself; everything else is the core's
_EDGE_PATHS = ("/ws", "/api/stream", "/health/live", "/health/ready", "/", "/admin", "/api/frontend")
_EDGE_PREFIXES = ("/static/", "/vendor/")


class EdgeApp:
    """The edge's ASGI application: Litestar for what the edge serves itself, the proxy to
    the core for the rest."""

    def __init__(self, settings: Settings, upstream: Upstream, core_url: str) -> None:
        self.services = EdgeServices(settings, upstream, core_url)
        self.proxy = CoreProxy(core_url, max_body_bytes=settings.max_body_bytes)
        self.litestar = Litestar(
            route_handlers=[ws_bars, sse_stream, edge_live, edge_ready, *static_routes()],
            lifespan=[self._lifespan],
            exception_handlers=EXCEPTION_HANDLERS,
            dependencies={"services": Provide(self._provide_services, use_cache=True, sync_to_thread=False)},
            request_max_body_size=settings.max_body_bytes,
            openapi_config=None,
            debug=False,
            logging_config=None,
        )
        self.litestar.state.services = self.services

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Litestar) -> AsyncIterator[None]:
        async with self.services.running():
            try:
                yield
            finally:
                await self.proxy.close()

    def _provide_services(self) -> EdgeServices:
        return self.services

    async def __call__(self, scope: LifeSpanScope | Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or scope["path"] in _EDGE_PATHS or scope["path"].startswith(_EDGE_PREFIXES):
            await self.litestar(scope, receive, send)
        else:
            await self.proxy(scope, receive, send)


def create_edge_app(settings: Settings, upstream: Upstream, core_url: str) -> EdgeApp:
    """The edge's ASGI application (Litestar for what it serves, the proxy for the rest)."""
    return EdgeApp(settings, upstream, core_url)
