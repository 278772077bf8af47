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

import msgspec

from service.core.symbols import SymbolSpec
from service.storage.influx.connection import END_OF_TIME_NS, Connection
from service.storage.influx.flux_render import FAR_FUTURE, FAR_PAST, TRADES, Names, flux_string
from service.storage.influx.lineproto import escape_string_field, series_prefix

SYMBOL = "tvflux_symbol"
_decode = msgspec.json.Decoder(SymbolSpec).decode
_encode = msgspec.json.Encoder().encode


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


async def read_specs(conn: Connection, names: Names) -> list[SymbolSpec]:
    specs = [_decode(v) async for (_, v) in conn.rows(specs_query(names), ("s", "v"))]
    return sorted(specs, key=lambda s: s.symbol)


async def save_spec(conn: Connection, names: Names, spec: SymbolSpec, point_ns: int) -> None:
    """One point at ``point_ns`` (the store stamps its points strictly increasing: two saves
    in one nanosecond must not overwrite each other, nor land out of order)."""
    prefix = series_prefix(SYMBOL, [("symbol", spec.symbol)])
    line = f"{prefix} spec={escape_string_field(_encode(spec).decode())} {point_ns}\n"
    await conn.write(names.status_bucket, line.encode(), gzipped=False)


async def purge(conn: Connection, names: Names, symbol: str) -> int:
    counted = [int(n) async for (n,) in conn.rows(trade_count_query(names, symbol), ("n",))]
    tag = symbol.replace("\\", "\\\\").replace('"', '\\"')
    for bucket, predicate in (
        (names.raw_bucket, f'_measurement="{TRADES}" AND symbol="{tag}"'),
        (names.bars_bucket, f'symbol="{tag}"'),
    ):
        await conn.delete(bucket, 0, END_OF_TIME_NS, predicate)
    return sum(counted)
