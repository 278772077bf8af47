"""Retrying InfluxDB requests: which failures are worth another try, and how long to wait.
Pure (the random draw is passed in)."""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec
from influxdb_client.rest import ApiException

NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class RetryPolicy(msgspec.Struct, frozen=True):
    """Capped exponential backoff with full jitter: attempt ``k`` (from 0) waits a uniform
    random time in ``[0, min(cap_s, base_s * 2**k)]``, so many writers retrying at once
    spread out instead of hammering a recovering server together."""

    attempts: int = 6
    base_s: float = 0.25
    cap_s: float = 8.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0


def backoff_s(policy: RetryPolicy, attempt: int, rand: float, retry_after_s: float | None = None) -> float:
    """Delay before retry number ``attempt + 1``; ``rand`` is uniform in [0, 1). A server's
    ``Retry-After`` is honoured when longer (up to a minute)."""
    delay = rand * min(policy.cap_s, policy.base_s * (2.0**attempt))
    if retry_after_s is not None and retry_after_s > delay:
        delay = min(retry_after_s, 60.0)
    return delay


def is_retryable(exc: BaseException) -> bool:
    """Network trouble, timeouts, 429 and 5xx are worth retrying; 4xx answers are not."""
    if isinstance(exc, ApiException):
        return exc.status is None or exc.status == 429 or exc.status >= 500
    return isinstance(exc, NETWORK_ERRORS)


def retry_after_s(exc: BaseException | None) -> float | None:
    """The seconds an InfluxDB answer's ``Retry-After`` header asks for (429, 503), if any."""
    if not isinstance(exc, ApiException) or not exc.headers:
        return None
    value = exc.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date (InfluxDB sends seconds)
        return None


def brief(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {getattr(exc, 'message', '') or exc.reason}"
    return str(exc) or type(exc).__name__
