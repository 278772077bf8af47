"""The one exception root of tvflux.

::

    TvfluxError                      (500 internal)
    ├── BadRequest                   (400: the client sent something wrong)
    │   ├── InvalidResolution
    │   ├── InvalidRange
    │   ├── InvalidTrade
    │   ├── InvalidMessage           (malformed JSON / unknown WebSocket op)
    │   └── PayloadTooLarge          (413)
    ├── NotFound                     (404)
    │   └── UnknownSymbol
    ├── Unauthorized                 (401)
    ├── Overloaded                   (429, retry later)
    ├── StoreUnavailable             (503: the store cannot be reached)
    │   └── RunTimeout               (a downsampling run was abandoned)
    └── ConfigError                  (bad TVFLUX_* settings; never reaches a client)

``service.api.errors`` is the only place that turns these into HTTP or WebSocket answers.
"""

from __future__ import annotations

from typing import Any


class TvfluxError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
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


class InvalidMessage(BadRequest):
    code = "invalid_message"


class PayloadTooLarge(BadRequest):
    status = 413
    code = "payload_too_large"


class NotFound(TvfluxError):
    status = 404
    code = "not_found"


class UnknownSymbol(NotFound):
    code = "unknown_symbol"


class Unauthorized(TvfluxError):
    status = 401
    code = "unauthorized"


class Overloaded(TvfluxError):
    status = 429
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s


class StoreUnavailable(TvfluxError):
    status = 503
    code = "store_unavailable"


class RunTimeout(StoreUnavailable):
    """A downsampling run took longer than allowed; it was rolled back and is retried."""

    code = "run_timeout"


class ConfigError(TvfluxError):
    code = "config"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings:\n  " + "\n  ".join(problems), details=problems)
        self.problems = problems
