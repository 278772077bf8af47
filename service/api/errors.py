"""The one place where errors become HTTP answers (and WebSocket error messages).

Every error body is ``{"error": {"code", "message", "details"?}}``. Anything a client
sent wrongly is a 4xx; only a bug in tvflux itself is a 500, and it is logged.
"""

from __future__ import annotations

import logging

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from service.core.errors import InvalidMessage, PayloadTooLarge, TvfluxError, Unauthorized, error_payload
from service.core.models import ErrorBody, ErrorMessage
from service.core.ws import CloseCode

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "overloaded",
    503: "unavailable",
}


def _tvflux_error(_: Request, exc: TvfluxError) -> Response:
    headers = {}
    if exc.retry_after_s is not None:  # 429 Overloaded, 503 StoreUnavailable, 507 DiskFull
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    elif isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="tvflux"'
    return Response(exc.payload(), status_code=exc.status, headers=headers)


def _http_error(_: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    code = "invalid_parameter" if isinstance(exc, ValidationException) else _HTTP_CODES.get(status, "error")
    details = exc.extra if isinstance(exc, ValidationException) and exc.extra else None
    if status >= 500:
        log.error("HTTP %d: %s", status, exc.detail)
    return Response(error_payload(code, str(exc.detail), details), status_code=status, headers=exc.headers)


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(error_payload("internal", "internal error"), status_code=500)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    TvfluxError: _tvflux_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}


def ws_error(
    exc: TvfluxError | msgspec.DecodeError | msgspec.ValidationError,
    sub_id: str | None = None,
    *,
    seq: int | None = None,
) -> ErrorMessage:
    """The WebSocket form of an error: a message on the open connection (``sub_id``: the
    ``/ws`` subscription it concerns; ``seq``: the ``/ws/ingest`` frame it answers)."""
    if isinstance(exc, msgspec.ValidationError):
        exc = InvalidMessage(f"invalid message: {exc}")
    elif not isinstance(exc, TvfluxError):
        exc = InvalidMessage(f"malformed message: {exc}")
    details = exc.details
    if exc.retry_after_s is not None:  # the WebSocket form of Retry-After
        details = {**(details or {}), "retryAfterS": float(exc.retry_after_s)}
    return ErrorMessage(ErrorBody(exc.code, exc.message, details), id=sub_id, seq=seq)


def frame_too_large(size_bytes: int | None, limit_bytes: int) -> bytes:
    """The error message a client gets before the server closes with 1009 (message too
    big, :attr:`CloseCode.MESSAGE_TOO_BIG`): which limit its frame broke, so it can split
    the batch."""
    size = "a frame" if size_bytes is None else f"a frame of {size_bytes} bytes"
    exc = PayloadTooLarge(
        f"{size} is over the limit of {limit_bytes} bytes per WebSocket message "
        f"(TVFLUX_MAX_FRAME_BYTES); closing with {int(CloseCode.MESSAGE_TOO_BIG)}. Send smaller batches.",
        details={"maxFrameBytes": limit_bytes},
    )
    return msgspec.json.encode(ws_error(exc))
