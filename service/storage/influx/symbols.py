"""The symbol registry in InfluxDB, and the removal of a symbol's data
(:meth:`InfluxStore.symbol_specs`, ``save_symbol``, ``purge_symbol``).

Each save is one point in the status bucket (no retention): measurement ``tvflux_symbol``,
tag ``symbol``, one string field ``spec`` holding the whole :class:`SymbolSpec` as JSON, so
a reader never sees half of an update. The registry is the newest point per symbol
(``last()``, pushed down to storage), a removal a point whose spec has ``removedMs``.

Purging deletes with InfluxDB's delete API (by tag predicate, over all time): the raw
trades, then the bars of every tier. Not a transaction: a task run that read the trades
before the delete may write a bar back afterwards; purging again removes it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import msgspec
from influxdb_client.rest import ApiException

from service.core.errors import StoreUnavailable
from service.core.symbols import SymbolSpec
from service.storage.influx.admin import describe_api_error
from service.storage.influx.flux_render import FAR_FUTURE, FAR_PAST, TRADES, Names, flux_string
from service.storage.influx.lineproto import escape_string_field, series_prefix
from service.storage.influx.retry import NETWORK_ERRORS

SYMBOL = "tvflux_symbol"
_decode = msgspec.json.Decoder(SymbolSpec).decode
_encode = msgspec.json.Encoder().encode


class StoreInternals(Protocol):
    """What the registry needs of :class:`~service.storage.influx.store.InfluxStore`."""

    _names: Names
    _url: str
    _org: str
    _client: Any
    _marker_ns: int  # strictly increasing point times of this process

    def _api(self) -> Any: ...

    def _rows(self, flux: str, columns: tuple[str, ...]) -> AsyncIterator[tuple[str, ...]]: ...

    async def _write(self, bucket: str, body: bytes, *, gzipped: bool) -> None: ...


def specs_query(names: Names) -> str:
    """The newest ``spec`` of every symbol (``s``: symbol, ``v``: the JSON)."""
    return (
        f"from(bucket: {flux_string(names.status_bucket)})\n"
        f"    |> range(start: {FAR_PAST}, stop: {FAR_FUTURE})\n"
        f'    |> filter(fn: (r) => r._measurement == "{SYMBOL}" and r._field == "spec")\n'
        "    |> last()\n"
        "    |> map(fn: (r) => ({s: r.symbol, v: r._value}))\n"
    )


def trade_count_query(names: Names, symbol: str) -> str:
    return (
        f"from(bucket: {flux_string(names.raw_bucket)})\n"
        f"    |> range(start: {FAR_PAST}, stop: {FAR_FUTURE})\n"
        f"    |> filter(fn: (r) => r._measurement == {flux_string(TRADES)} and r.symbol == {flux_string(symbol)} "
        'and r._field == "price")\n'
        "    |> count()\n"
        "    |> map(fn: (r) => ({n: r._value}))\n"
    )


async def read_specs(store: StoreInternals) -> list[SymbolSpec]:
    store._api()
    specs = [_decode(v) async for (_, v) in store._rows(specs_query(store._names), ("s", "v"))]
    return sorted(specs, key=lambda s: s.symbol)


async def save_spec(store: StoreInternals, spec: SymbolSpec) -> None:
    """One point, stamped after every earlier point of this process (two saves in one
    nanosecond must not overwrite each other, nor land out of order)."""
    store._api()
    store._marker_ns = max(store._marker_ns + 1, time.time_ns())
    prefix = series_prefix(SYMBOL, [("symbol", spec.symbol)])
    line = f"{prefix} spec={escape_string_field(_encode(spec).decode())} {store._marker_ns}\n"
    await store._write(store._names.status_bucket, line.encode(), gzipped=False)


async def purge(store: StoreInternals, symbol: str) -> int:
    store._api()
    counted = [int(n) async for (n,) in store._rows(trade_count_query(store._names, symbol), ("n",))]
    api = store._client.delete_api()
    tag = symbol.replace("\\", "\\\\").replace('"', '\\"')
    for bucket, predicate in (
        (store._names.raw_bucket, f'_measurement="{TRADES}" AND symbol="{tag}"'),
        (store._names.bars_bucket, f'symbol="{tag}"'),
    ):
        try:
            await api.delete(FAR_PAST, FAR_FUTURE, predicate, bucket=bucket, org=store._org)
        except ApiException as exc:
            raise StoreUnavailable(
                describe_api_error(exc, f"delete in bucket {bucket!r}", url=store._url, org=store._org)
            ) from None
        except NETWORK_ERRORS as exc:
            raise StoreUnavailable(f"InfluxDB at {store._url} is unreachable: {exc}") from None
    return sum(counted)
