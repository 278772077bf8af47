"""History reads over InfluxDB's InfluxQL endpoint (``/query``): the statements, and a
client that sends several of them in one request and streams the rows back.

Why InfluxQL for reads, when the tasks are Flux: measured on this project's 2-core
machine (docs/performance.md), the smallest Flux query costs ~4.5 ms of planning and
one ``aggregateWindow`` ~9 ms, while InfluxQL reads 300 stored tier rows in ~3 ms and
aggregates 300 minutes of raw trades in ~9 ms, and several statements share one round
trip. Both languages read the same storage, so the answers are the same rows.

Buckets are addressed as ``"bucket"."autogen"."measurement"``: InfluxDB 2 maps every
bucket to a *virtual* database of the same name with retention policy ``autogen``, so
no DBRP mapping has to be created (a bucket whose name contains ``/`` is the one
exception: name buckets without it). Times go both ways as epoch milliseconds (``ms``
literals in, ``epoch=ms`` out; nanoseconds where asked).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from typing import Generic, TypeVar

import aiohttp
import msgspec

from service.core.errors import StoreUnavailable
from service.storage.influx.retry import NETWORK_ERRORS, RetryPolicy, backoff_s, brief

Value = int | float | None  # the statements here select numbers only


def ident(name: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def literal(text: str) -> str:
    """An InfluxQL single-quoted string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def source(bucket: str, measurement: str) -> str:
    """A measurement of a bucket, through the bucket's virtual database."""
    return f"{ident(bucket)}.{ident('autogen')}.{ident(measurement)}"


def _where(symbol: str, start: int | None, stop: int, unit: str = "ms") -> str:
    lower = "" if start is None else f" AND time >= {int(start)}{unit}"
    return f"WHERE {ident('symbol')} = {literal(symbol)}{lower} AND time < {int(stop)}{unit}"


BAR_COLUMNS = ("open", "high", "low", "close", "volume")


def tier_rows(bucket: str, measurement: str, symbol: str, start_ms: int, stop_ms: int) -> str:
    """Stored bars of one tier starting in ``[start_ms, stop_ms)``, ascending."""
    fields = ", ".join(ident(f) for f in BAR_COLUMNS)
    return f"SELECT {fields} FROM {source(bucket, measurement)} {_where(symbol, start_ms, stop_ms)}"


def raw_rows(bucket: str, measurement: str, symbol: str, start_ms: int, stop_ms: int, every_ms: int) -> str:
    """Raw trades in ``[start_ms, stop_ms)`` aggregated to bars of ``every_ms`` (epoch
    aligned; callers pass aligned bounds), empty buckets left out, ascending."""
    price, size = ident("price"), ident("size")
    return (
        f"SELECT first({price}) AS open, max({price}) AS high, min({price}) AS low, last({price}) AS close, "
        f"sum({size}) AS volume FROM {source(bucket, measurement)} {_where(symbol, start_ms, stop_ms)} "
        f"GROUP BY time({int(every_ms)}ms) fill(none)"
    )


def newest_trades(bucket: str, measurement: str, symbol: str, start_ms: int, stop_ms: int, limit: int) -> str:
    """Raw trades (``price``, ``size``) in ``[start_ms, stop_ms)``, newest first, at most
    ``limit`` of them."""
    fields = f"{ident('price')}, {ident('size')}"
    where = _where(symbol, start_ms, stop_ms)
    return f"SELECT {fields} FROM {source(bucket, measurement)} {where} ORDER BY time DESC LIMIT {int(limit)}"


def last_time(
    bucket: str, measurement: str, field: str, symbol: str, start: int | None, stop: int, unit: str = "ms"
) -> str:
    """The newest point of ``field`` before ``stop`` (from ``start`` when given; both in
    ``unit``, ``ms`` or ``ns``): ``last()`` is answered from the series' index, however old
    the data."""
    return f"SELECT last({ident(field)}) FROM {source(bucket, measurement)} {_where(symbol, start, stop, unit)}"


# --- the response -----------------------------------------------------------------------


# The answer's shape, generic in its rows: ``values`` decoded straight into typed tuples
# where the columns are known (no per-value Python work), plain lists otherwise.
V = TypeVar("V")


class _Series(msgspec.Struct, Generic[V]):
    columns: list[str] = []
    values: list[V] = []


class _Result(msgspec.Struct, Generic[V]):
    statement_id: int = 0
    series: list[_Series[V]] = []
    error: str | None = None


class _Answer(msgspec.Struct, Generic[V]):
    results: list[_Result[V]] = []
    error: str | None = None


# every bar statement selects exactly time and BAR_COLUMNS, in that order
BarValues = tuple[int, float | None, float | None, float | None, float | None, float | None]
# newest_trades selects time, price, size
TradeValues = tuple[int, float, float]

_decoder = msgspec.json.Decoder(_Answer[list[Value]])
_bar_decoder = msgspec.json.Decoder(_Answer[BarValues])
_trade_decoder = msgspec.json.Decoder(_Answer[TradeValues])


class Rows(msgspec.Struct, Generic[V], frozen=True):
    """One chunk of one statement's answer: ``values[i][j]`` is column ``columns[j]``."""

    statement: int
    columns: list[str]
    values: list[V]


def decode(document: bytes, decoder: msgspec.json.Decoder[_Answer[V]]) -> list[Rows[V]]:
    """The rows of one JSON document of a (chunked) ``/query`` answer; an error in it
    (the whole request's, or one statement's) raises :class:`StoreUnavailable`."""
    try:
        answer = decoder.decode(document)
    except msgspec.DecodeError as exc:
        raise StoreUnavailable(f"InfluxDB sent an InfluxQL answer this service cannot read: {exc}") from None
    if answer.error:
        raise StoreUnavailable(f"InfluxDB query failed: {answer.error}")
    out: list[Rows[V]] = []
    for result in answer.results:
        if result.error:
            raise StoreUnavailable(f"InfluxDB query failed (statement {result.statement_id}): {result.error}")
        out.extend(Rows(result.statement_id, s.columns, s.values) for s in result.series)
    return out


class InfluxQL:
    """Sends InfluxQL statements to ``/query`` on one keep-alive session and streams the
    answer back in chunks (``chunked=true``), so a long range is never held twice."""

    def __init__(self, url: str, token: str, retry: RetryPolicy, *, chunk_rows: int = 10_000) -> None:
        self._url = url.rstrip("/") + "/query"
        self._token = token
        self._retry = retry
        self._chunk_rows = chunk_rows
        self._session: aiohttp.ClientSession | None = None
        self._rand = random.Random()

    def open(self) -> None:
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self._retry.connect_timeout_s, sock_read=self._retry.read_timeout_s
        )
        # identity, not aiohttp's default gzip: compressing a year of minute bars (35 MB of
        # JSON) costs InfluxDB more than the read itself (measured: 4.7-5.2 s gzip'd, 1.5-2.4 s
        # not); the Flux client is built with enable_gzip=False for the same reason
        headers = {"Authorization": f"Token {self._token}", "Accept": "application/json", "Accept-Encoding": "identity"}
        self._session = aiohttp.ClientSession(timeout=timeout, headers=headers)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def stream(
        self,
        statements: Sequence[str],
        *,
        epoch: str = "ms",
        decoder: msgspec.json.Decoder[_Answer[V]],
    ) -> AsyncIterator[Rows[V]]:
        """The rows of ``statements`` (sent together, answered in order), chunk by chunk.
        Connection trouble before the answer starts is retried with backoff."""
        if self._session is None:
            raise StoreUnavailable("the InfluxDB store is not started")
        form = {"q": ";\n".join(statements), "epoch": epoch, "chunked": "true", "chunk_size": str(self._chunk_rows)}
        url = self._url
        response = None
        for attempt in range(3):
            try:
                response = await self._session.post(url, data=form)
                break
            except NETWORK_ERRORS as exc:
                if attempt == 2:
                    raise StoreUnavailable(f"InfluxDB at {url} is unreachable: {brief(exc)}") from None
                await asyncio.sleep(backoff_s(self._retry, attempt, self._rand.random()))
        assert response is not None
        try:
            if response.status != 200:
                body = (await response.read()).decode("utf-8", "replace")
                try:
                    message = msgspec.json.decode(body).get("error") or body
                except (msgspec.DecodeError, AttributeError):
                    message = body
                if response.status in (401, 403):
                    raise StoreUnavailable(f"InfluxDB at {url} refused the query ({response.status}): {message}")
                raise StoreUnavailable(f"InfluxDB query failed ({response.status}): {message}")
            # one JSON document per line; a line can be far longer than aiohttp's readline allows
            pending = b""
            async for piece in response.content.iter_any():
                pending += piece
                *documents, pending = pending.split(b"\n")
                for document in documents:
                    if document.strip():
                        for rows in decode(document, decoder):
                            yield rows
            if pending.strip():
                for rows in decode(pending, decoder):
                    yield rows
        except NETWORK_ERRORS as exc:
            raise StoreUnavailable(f"lost InfluxDB at {url} while reading a query: {brief(exc)}") from None
        finally:
            response.release()

    async def bar_rows(self, statements: Sequence[str]) -> list[list[BarValues]]:
        """Per statement (each selecting :data:`BAR_COLUMNS`), its rows as ``(time_ms, open,
        high, low, close, volume)``, ascending, as decoded (no copy per row)."""
        out: list[list[BarValues]] = [[] for _ in statements]
        async for rows in self.stream(statements, decoder=_bar_decoder):
            if rows.columns != ["time", *BAR_COLUMNS]:
                raise StoreUnavailable(f"InfluxDB answered a bar query with columns {rows.columns}")
            out[rows.statement].extend(rows.values)
        return out

    async def trade_rows(self, statement: str) -> list[TradeValues]:
        """``(time_ms, price, size)`` of every row of one :func:`newest_trades` statement,
        in the order InfluxDB sends them, as decoded (no copy per row)."""
        out: list[TradeValues] = []
        async for rows in self.stream([statement], decoder=_trade_decoder):
            if rows.columns != ["time", "price", "size"]:
                raise StoreUnavailable(f"InfluxDB answered a trades query with columns {rows.columns}")
            out.extend(rows.values)
        return out

    async def times(self, statements: Sequence[str], *, epoch: str = "ms") -> list[int]:
        """The ``time`` of every row of every statement (``last()`` lookups)."""
        out: list[int] = []
        async for rows in self.stream(statements, epoch=epoch, decoder=_decoder):
            at = rows.columns.index("time")
            out.extend(int(t) for v in rows.values if (t := v[at]) is not None)
        return out
