"""``create_app(settings)``: the Litestar application. What it serves lives in
:mod:`service.api.services` (the parts and their lifetimes) and the handler modules;
handlers receive the one :class:`~service.api.services.Services` as a typed dependency.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from service.api.errors import EXCEPTION_HANDLERS
from service.api.http import ROUTES
from service.api.services import Services
from service.api.static import static_routes
from service.api.streams import STREAM_ROUTES
from service.api.symbols import SYMBOL_ROUTES
from service.core.settings import Settings, load_settings
from service.storage.base import Store
from service.storage.factory import build_store

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> Litestar:
    settings = settings if settings is not None else load_settings(os.environ)
    services = Services(settings, store if store is not None else build_store(settings))

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with services.running():
            yield

    def provide_services() -> Services:
        return services

    app = Litestar(
        route_handlers=[*ROUTES, *SYMBOL_ROUTES, *STREAM_ROUTES, *static_routes()],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        dependencies={"services": Provide(provide_services, use_cache=True, sync_to_thread=False)},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="tvflux", version="0.1.0", path="/schema"),
        cors_config=CORSConfig(allow_origins=list(settings.cors_origins)) if settings.cors_origins else None,
        debug=False,
        logging_config=None,  # logging is configured once, by the CLI
    )
    app.state.services = services  # for guards (services_of), which get no dependencies
    return app
