"""The one exception root of tvflux.

::

    TvfluxError                      (500 internal)
    ├── BadRequest                   (400: the client sent something wrong)
    │   ├── InvalidResolution
    │   ├── InvalidRange
    │   ├── InvalidTrade
    │   │   └── OutsidePriceBand     (a live trade's price is outside its symbol's price band)
    │   ├── InvalidMessage           (malformed JSON / unknown WebSocket op)
    │   ├── MissingParameter         (a required query parameter is absent)
    │   └── PayloadTooLarge          (413)
    ├── NotFound                     (404)
    │   ├── UnknownSymbol
    │   └── UnknownSubscription      (a WebSocket unsubscribe of an id this connection does not have)
    ├── Unauthorized                 (401)
    ├── Conflict                     (409: the request contradicts the configuration)
    ├── Overloaded                   (429, retry later)
    ├── NotSupported                 (501: this store cannot do that; the message says what can)
    ├── StoreUnavailable             (503 + Retry-After: the store cannot be reached)
    │   ├── RunTimeout               (a downsampling run was abandoned)
    │   └── SpoolUnavailable         (the spool could not be written: nothing was acknowledged)
    ├── DiskFull                     (507 + Retry-After: the data disk is full; nothing was acknowledged)
    ├── ConfigError                  (bad TVFLUX_* settings; never reaches a client)
    ├── VenueProtocolError           (an exchange sent what its protocol does not allow; never reaches a client)
    └── UsageError                   (a command-line argument is wrong: the CLI says why, exit 2)

Raised outside the core, under the same root (each in the module that raises it):
``BadRequest`` ← ``ImportFormatError`` (service.ops.binance_csv; also a ``ValueError``),
``PageTooLarge`` (service.ops.exporter: the service allows fewer bars per request);
``StoreUnavailable`` ← ``QueryFailed`` (service.storage.influx.compose); ``TvfluxError`` ←
``BackupError`` (service.storage.embedded.backup); ``TvfluxError`` ← ``RestFailed`` ← ``RestPaused``
(service.runtime.exchanges.rest: an exchange's REST API failed, or asked us to wait).

``service.api.errors`` is the only place that turns these into HTTP or WebSocket answers.
"""

from __future__ import annotations

from typing import Any


class TvfluxError(Exception):
    status = 500
    code = "internal"
    # when a retry may succeed, after how many seconds (sent as Retry-After, and as
    # ``retryAfterS`` on a WebSocket); None: retrying the same request will not help
    retry_after_s: float | None = None

    def __init__(self, message: str, *, details: Any = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if retry_after_s is not None:  # else the class's own
            self.retry_after_s = retry_after_s

    def payload(self) -> dict[str, Any]:
        return error_payload(self.code, self.message, self.details)


def error_payload(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """Every HTTP error body, from a :class:`TvfluxError` or not (Litestar's own 404/405,
    an unexpected bug): ``{"error": {"code", "message", "details"?}}``."""
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


class BadRequest(TvfluxError):
    status = 400
    code = "bad_request"


class InvalidResolution(BadRequest):
    code = "invalid_resolution"


class InvalidRange(BadRequest):
    code = "invalid_range"


class InvalidTrade(BadRequest):
    code = "invalid_trade"


class OutsidePriceBand(InvalidTrade):
    code = "outside_price_band"


class InvalidMessage(BadRequest):
    code = "invalid_message"


class MissingParameter(BadRequest):
    code = "missing_parameter"


class PayloadTooLarge(BadRequest):
    status = 413
    code = "payload_too_large"


class NotFound(TvfluxError):
    status = 404
    code = "not_found"


class UnknownSymbol(NotFound):
    code = "unknown_symbol"


class UnknownSubscription(NotFound):
    code = "unknown_subscription"


class Unauthorized(TvfluxError):
    status = 401
    code = "unauthorized"


class Conflict(TvfluxError):
    """The request is well-formed but contradicts what the service is configured with (a
    symbol of ``TVFLUX_SYMBOLS`` cannot be removed: the next start would list it again)."""

    status = 409
    code = "conflict"


class Overloaded(TvfluxError):
    status = 429
    code = "overloaded"
    retry_after_s = 1.0


class NotSupported(TvfluxError):
    """The configured store declines an operation (e.g. a snapshot of InfluxDB, which is
    backed up with its own tools): nothing is wrong with the request's form, and
    retrying will not help."""

    status = 501
    code = "not_supported"


class StoreUnavailable(TvfluxError):
    status = 503
    code = "store_unavailable"
    retry_after_s = 5.0  # outages are usually short


class RunTimeout(StoreUnavailable):
    """A downsampling run took longer than allowed; it was rolled back and is retried."""

    code = "run_timeout"


class SpoolUnavailable(StoreUnavailable):
    """The spool could not be written for a reason other than a full disk (out of file
    descriptors, an I/O error): the batch was not acknowledged and may be retried."""

    code = "spool_unavailable"


class DiskFull(TvfluxError):
    """The data disk has no room for the spool record (``ENOSPC``/``EDQUOT``): the batch was
    not acknowledged, and nothing half-written was kept. Retry once space is freed."""

    status = 507
    code = "disk_full"
    retry_after_s = 10.0

    def __init__(self, message: str, *, path: str, retry_after_s: float | None = None, details: Any = None) -> None:
        super().__init__(message, details=details, retry_after_s=retry_after_s)
        self.path = path


class VenueProtocolError(TvfluxError):
    """An exchange sent a message or an answer its documented protocol does not allow (a
    price that is not a number, a time that is not one). The source logs it and goes on;
    what could not be read is found missing by its ids and backfilled."""

    code = "venue_protocol"


class ConfigError(TvfluxError):
    code = "config"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings:\n  " + "\n  ".join(problems), details=problems)
        self.problems = problems


class UsageError(TvfluxError):
    """A command-line argument that cannot work (``tvflux trades delete`` with ``--from``
    but no ``--to``, a symbol no trade may carry): the CLI prints the message and exits 2,
    as argparse does for its own usage errors. Never reaches a client."""

    code = "usage"
