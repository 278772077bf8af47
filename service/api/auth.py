"""Bearer tokens for ingest and admin actions.

When ``TVFLUX_INGEST_TOKEN`` / ``TVFLUX_ADMIN_TOKEN`` are set, ingest (``POST /api/trades``,
``/ws/ingest``) and admin actions (manual downsampling runs, backup, restore) need
``Authorization: Bearer <token>``; WebSocket clients that cannot set headers (browsers)
may pass ``?token=`` instead. The admin token also works for ingest. Tokens are compared
in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from service.api.services import services_of
from service.core.errors import Unauthorized


def client_address(conn: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The client's address. Behind an edge on this host (``tvflux serve --workers``) the
    peer is the edge on loopback, which puts the client's address in ``X-Forwarded-For``
    (replacing any the client sent); that header is believed from a loopback peer only, so
    a remote client cannot pass itself off as local."""
    peer = conn.client.host if conn.client else None
    if peer is None:
        return "unknown"
    forwarded = conn.headers.get("x-forwarded-for")
    if forwarded and _is_loopback(peer):
        return forwarded.split(",")[-1].strip() or peer
    return peer


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_local(conn: ASGIConnection[Any, Any, Any, Any]) -> bool:
    return _is_loopback(client_address(conn))


def presented_token(conn: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return conn.query_params.get("token", "")


def _matches(presented: str, *expected: str) -> bool:
    return any(e and hmac.compare_digest(presented.encode(), e.encode()) for e in expected)


def check_ingest(conn: ASGIConnection[Any, Any, Any, Any]) -> None:
    settings = services_of(conn).settings
    if not settings.ingest_token and not settings.admin_token:
        return
    if not _matches(presented_token(conn), settings.ingest_token, settings.admin_token):
        raise Unauthorized("ingest needs a valid bearer token (TVFLUX_INGEST_TOKEN)")


def check_admin(conn: ASGIConnection[Any, Any, Any, Any]) -> None:
    settings = services_of(conn).settings
    if not settings.admin_token:
        return
    if not _matches(presented_token(conn), settings.admin_token):
        raise Unauthorized("this admin action needs a valid bearer token (TVFLUX_ADMIN_TOKEN)")


def ingest_guard(conn: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    check_ingest(conn)


def admin_guard(conn: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    check_admin(conn)
