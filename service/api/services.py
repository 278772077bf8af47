"""``Services``: everything a request handler may need, built once per app by
:func:`service.api.app.create_app` and handed to handlers as a typed dependency
(``services: Services``). The parts and their lifetimes are the runtime's
(:class:`service.runtime.node.Node`, whose :meth:`~service.runtime.node.Node.running` the
app's lifespan enters); this module adds what only the web layer needs.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.di import NamedDependency

from service.core.errors import Overloaded
from service.core.settings import Settings
from service.runtime.fanout import LiveHub
from service.runtime.history import SymbolSet
from service.runtime.hub import Hub
from service.runtime.node import Node
from service.storage.base import Store


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


class Services(Node, LiveServices):
    """Everything a request handler may need, built once per app: the core's
    :class:`~service.runtime.node.Node` (its parts and their lifetimes) and what only the
    web layer keeps (open streaming connections per client)."""

    hub: Hub

    def __init__(self, settings: Settings, store: Store) -> None:
        super().__init__(settings, store)
        self.connections = ConnectionLimiter(settings.max_connections_per_client)


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
