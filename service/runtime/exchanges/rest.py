"""A venue's REST API within its budget: every request waits for the :class:`RestGate`,
which learns from each answer (429 back-off, 418 ban, the used weight the venue reports).
There is no retry here: the caller knows how long a gap may wait."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from service.core.errors import TvfluxError
from service.core.venues.budget import RestGate
from service.core.venues.common import RestRequest, Venue

TIMEOUT_S = 10.0  # one request, connect to last byte
MAX_BODY_BYTES = 64 * 1024 * 1024


class RestFailed(TvfluxError):
    """A venue's REST API did not answer usefully (unreachable, timed out, an error status)."""

    code = "venue_rest_failed"


class RestPaused(RestFailed):
    """The venue asked us to wait (429) or banned this IP (418, ``banned``) for longer than
    the caller can wait: nothing was sent."""

    code = "venue_rest_paused"

    def __init__(self, message: str, *, banned: bool, until_s: float) -> None:
        super().__init__(message)
        self.banned = banned
        self.until_s = until_s


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the venues send a number; a date is ignored)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class RestClient:
    def __init__(self, venue: Venue, base_url: str, gate: RestGate) -> None:
        self.venue = venue
        self.base_url = base_url.rstrip("/")
        self.gate = gate
        self.last_error: str | None = None
        self._session: aiohttp.ClientSession | None = None

    def paused_until_s(self) -> float | None:
        """Monotonic time until which the venue asked us to wait (``None``: not paused)."""
        return self.gate.paused_until_s if self.gate.paused_until_s > time.monotonic() else None

    async def get(self, req: RestRequest, *, deadline_s: float) -> bytes:
        """The body of a 2xx answer to ``req``, after waiting for the budget — unless
        that wait would pass ``deadline_s`` (monotonic) or the venue banned us:
        :class:`RestPaused`. Anything else that fails is :class:`RestFailed`."""
        now = time.monotonic()
        wait = self.gate.wait_s(now, req.weight)
        if wait > 0 and (self.gate.banned or now + wait > deadline_s):
            what = "banned this IP (HTTP 418)" if self.gate.banned else "asked us to slow down"
            raise RestPaused(
                f"{self.venue.name} {what}: no REST request for {wait:.0f} s",
                banned=self.gate.banned,
                until_s=now + wait,
            )
        if wait > 0:
            await asyncio.sleep(wait)
        self.gate.spend(time.monotonic(), req.weight)
        try:
            return await self._send(req)
        except RestFailed as exc:
            self.last_error = exc.message
            raise

    async def _send(self, req: RestRequest) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        url = self.base_url + req.path
        name = self.venue.name
        try:
            async with self._session.get(url, params=req.params) as resp:
                headers = {k.lower(): v for k, v in resp.headers.items()}
                status = resp.status
                body = await _read_all(resp)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RestFailed(f"{name} REST {req.path} failed: {type(exc).__name__}: {exc}") from None
        pause = retry_after_s(headers.get("retry-after"))
        self.gate.answered(time.monotonic(), status, pause, self.venue.used_weight(headers))
        if status in (418, 429):
            until = self.gate.paused_until_s
            what = "banned this IP (HTTP 418)" if status == 418 else "rate-limited us (HTTP 429)"
            left_s = until - time.monotonic()
            raise RestPaused(f"{name} {what}: no REST request for {left_s:.0f} s", banned=status == 418, until_s=until)
        if not 200 <= status < 300:
            raise RestFailed(f"{name} REST {req.path} answered {status}: {_brief(body)}")
        self.last_error = None
        return body

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_all(resp: aiohttp.ClientResponse) -> bytes:
    """The whole body, up to :data:`MAX_BODY_BYTES` (``content.read(n)`` would return
    whatever had arrived, not the whole answer)."""
    body = bytearray()
    async for chunk in resp.content.iter_chunked(256 * 1024):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise RestFailed(f"{resp.url.path} answered more than {MAX_BODY_BYTES} bytes")
    return bytes(body)


def _brief(body: bytes) -> str:
    return " ".join(body[:300].decode("utf-8", "replace").split())
