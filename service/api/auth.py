"""Bearer tokens for ingest and admin actions.

When ``TVFLUX_INGEST_TOKEN`` / ``TVFLUX_ADMIN_TOKEN`` are set, ingest (``POST /api/trades``,
``/ws/ingest``) and admin actions (manual downsampling runs, backup, restore) need
``Authorization: Bearer <token>``; WebSocket clients that cannot set headers (browsers)
may pass ``?token=`` instead. The admin token also works for ingest. Tokens are compared
in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from service.api.services import services_of
from service.core.errors import Unauthorized


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
