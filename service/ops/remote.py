"""Commands that write the store while ``tvflux serve`` holds it go through the service.

DuckDB lets one process open the store file for writing, and the running service keeps
it open. ``tvflux import``, ``generate`` and ``downsample`` therefore find the service
that holds the data directory (its ``service.json``, see :mod:`service.ops.discovery`)
and ask it: trades go to ``POST /api/admin/trades`` (bulk history, msgpack batches of at
most ``TVFLUX_MAX_BATCH_TRADES``), downsampling to ``POST /api/downsampling/run``. The
admin token is ``TVFLUX_ADMIN_TOKEN`` from the command's environment.

:class:`ServiceSink` looks like the part of a store the importer and the synthetic
generator write with (``append``, ``last_ts_ns``, ``known_ids``), so both reuse their own
code unchanged: the importer's parsing, and its idempotency by trade ``id`` — the
service drops ids it already holds and counts them as duplicates.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import TypeVar

import msgspec

from service.core.errors import TvfluxError
from service.core.models import Bar, BarsResponse, ManualRun, TradeColumns, TradesAccepted
from service.core.settings import Settings
from service.core.timestamps import NS_PER_MS

RETRIES = 30  # 429 (spool full) / 503 (starting): wait as told, up to about a minute in all
T = TypeVar("T")


class ServiceError(TvfluxError):
    pass


def _admin_request(
    url: str,
    method: str,
    token: str | None,
    data: bytes | None = None,
    content_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> urllib.request.Request:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    return request


def call(
    base_url: str,
    method: str,
    path: str,
    token: str | None,
    answer: type[T],
    *,
    data: bytes | None = None,
    content_type: str | None = None,
    timeout_s: float = 600,
    headers: dict[str, str] | None = None,
    retries: int = RETRIES,
) -> T:
    """One request to the service, its JSON answer read as ``answer``, retrying 429/503 as
    ``Retry-After`` says. Errors are :class:`ServiceError` with the service's own message,
    or what to do when nothing answers (or answers what this tvflux cannot read)."""
    from service.ops.exporter import http_error

    for attempt in range(retries + 1):
        request = _admin_request(base_url + path, method, token, data, content_type, headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (429, 503) and attempt < retries:
                time.sleep(min(10.0, float(exc.headers.get("Retry-After") or 1)))
                continue
            error = http_error(exc)
            hint = " (set TVFLUX_ADMIN_TOKEN to the service's admin token)" if exc.code in (401, 403) else ""
            raise ServiceError(
                f"the service at {base_url} refused {method} {path}: {error.message}{hint}", details=error.details
            ) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise ServiceError(
                f"no tvflux answers at {base_url} ({getattr(exc, 'reason', exc)}); is the service "
                "still running? Start it, or stop it and run this command again"
            ) from None
        try:
            return msgspec.json.decode(body or b"null", type=answer)
        except msgspec.DecodeError as exc:  # a ValidationError too
            raise ServiceError(
                f"the service at {base_url} answered {method} {path} with what this tvflux cannot read ({exc}); "
                "is it another version of tvflux?"
            ) from None
    raise AssertionError("unreachable")


class ServiceSink:
    """Writes trades into the running service (``POST /api/admin/trades``). The service
    allocates the unique nanosecond timestamps and checks ids itself, so ``last_ts_ns`` and
    ``known_ids`` answer "nothing stored" and the importer sends every chunk as it is."""

    def __init__(self, base_url: str, token: str | None, *, batch_trades: int = 10_000) -> None:
        self.base_url = base_url
        self.token = token
        self.batch_trades = max(1, batch_trades)
        self.accepted = 0
        self.duplicates = 0
        self._untaken = 0
        self._encoder = msgspec.msgpack.Encoder()

    async def last_ts_ns(self, symbol: str, from_ns: int, to_ns: int) -> int | None:
        return None

    async def known_ids(
        self, symbol: str, ids: Sequence[str], from_ns: int | None = None, to_ns: int | None = None
    ) -> set[str]:
        return set()

    async def append(self, batches: Sequence[TradeColumns], *, spool_seq: int | None = None) -> None:
        for columns in batches:
            self.post(columns)

    def post(self, columns: TradeColumns) -> tuple[int, int]:
        """All of ``columns`` in batches; returns (accepted, duplicates) for them."""
        n = len(columns)
        time_ms = (columns.ts_ns // NS_PER_MS).tolist()
        price, size = columns.price.tolist(), columns.size.tolist()
        ids = columns.ids
        accepted = duplicates = 0
        for lo in range(0, n, self.batch_trades):
            hi = min(n, lo + self.batch_trades)
            if ids is None:
                trades = [
                    {"symbol": columns.symbol, "price": price[i], "size": size[i], "time": time_ms[i]}
                    for i in range(lo, hi)
                ]
            else:
                trades = [
                    {"symbol": columns.symbol, "price": price[i], "size": size[i], "time": time_ms[i], "id": ids[i]}
                    if ids[i] is not None
                    else {"symbol": columns.symbol, "price": price[i], "size": size[i], "time": time_ms[i]}
                    for i in range(lo, hi)
                ]
            answer = call(
                self.base_url,
                "POST",
                "/api/admin/trades",
                self.token,
                TradesAccepted,
                data=self._encoder.encode(trades),
                content_type="application/msgpack",
            )
            accepted += answer.accepted
            duplicates += answer.duplicates
        self.accepted += accepted
        self.duplicates += duplicates
        self._untaken += duplicates
        return accepted, duplicates

    def take_duplicates(self) -> int:
        """Duplicates answered since the last call (the importer's "already stored")."""
        taken, self._untaken = self._untaken, 0
        return taken


def run_downsampling(base_url: str, token: str | None) -> int:
    """``POST /api/downsampling/run`` and print where each tier stands; returns the
    windows run."""
    started = time.perf_counter()
    print(f"downsample: the store is open in the running service; asking {base_url}", file=sys.stderr)
    # the service answers at once with a run id; follow it until it is over (a backfill on
    # InfluxDB can take minutes), printing where the tiers stand meanwhile
    answer = call(base_url, "POST", "/api/downsampling/run?wait=30", token, ManualRun, data=b"")
    while answer.state == "running":
        moved = [f"{t.tier} {100 * (t.backfill.progress if t.backfill else 1):.0f}%" for t in answer.tiers or []]
        print(f"  running ({', '.join(moved)})", file=sys.stderr)
        answer = call(base_url, "GET", f"/api/downsampling/runs/{answer.id}?wait=30", token, ManualRun)
    if answer.state == "failed":
        raise ServiceError(f"the downsampling run failed: {answer.error}")
    ran = answer.ran
    for run in ran:
        print(f"  ran {run.tier:>4}: {run.rows:,} rows in {run.duration_ms:.0f} ms", file=sys.stderr)
    for tier in answer.tiers or []:
        wm = tier.watermark
        wm_text = "-" if wm is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(wm / 1000))
        held = tier.bars
        print(f"{tier.tier:>4} watermark {wm_text} UTC" + ("" if held is None else f"  bars {held:,}"), file=sys.stderr)
    print(
        f"downsampling: {len(ran)} windows run in {time.perf_counter() - started:.1f}s (by the service)",
        file=sys.stderr,
    )
    return len(ran)


def bars(
    base_url: str, symbol: str, resolution: str, *, to_s: int, from_s: int = 0, countback: int | None = None
) -> list[Bar]:
    """``GET /api/bars`` (``[]`` for a symbol the service does not list)."""
    query = f"symbol={symbol}&resolution={resolution}&from={from_s}&to={to_s}"
    if countback is not None:
        query += f"&countback={countback}"
    try:
        answer = call(base_url, "GET", f"/api/bars?{query}", None, BarsResponse)
    except ServiceError as exc:
        if "unknown_symbol" in exc.message:
            return []
        raise
    return answer.bars


def earliest_bar_ms(base_url: str, symbol: str, from_ms: int, to_ms: int) -> int | None:
    """The start of the first second in ``[from_ms, to_ms)`` holding trades of ``symbol``
    (``None``: none), from the service's history: the first day, then its first minute,
    then that minute's first second (three bounded reads)."""
    lo, hi = from_ms, to_ms
    for resolution, width_ms in (("1D", 86_400_000), ("1", 60_000), ("1S", 1000)):
        found = bars(base_url, symbol, resolution, from_s=lo // 1000, to_s=-(-hi // 1000))
        found = [b for b in found if lo - width_ms < b.time < hi]
        if not found:
            return None
        first = max(lo, found[0].time)
        lo, hi = first, min(hi, first + width_ms)
    return lo


def serving_url(settings: Settings) -> str | None:
    """The service that holds this data dir's store file (``service.json``; a held lock
    without one: ``TVFLUX_HOST:TVFLUX_PORT``), or ``None`` when the file is free."""
    from service.ops.discovery import running_service_url, url_for
    from service.storage.embedded.backup import lock_holder
    from service.storage.factory import store_file

    path = store_file(settings)
    if path is None:
        return None
    url = running_service_url(settings.data_dir)
    if url is not None or lock_holder(path) is not None:
        return url or url_for(settings.host, settings.port)
    return None
