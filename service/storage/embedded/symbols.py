"""The symbol registry in the embedded store: one row per symbol ever added, removed ones
kept as tombstones (``removed_ms``), and the removal of a symbol's data.

Functions of a DuckDB cursor, called by :class:`~service.storage.embedded.store.EmbeddedStore`
in its worker threads (writes under its write lock)."""

from __future__ import annotations

import duckdb

from service.core.plan import Plan
from service.core.symbols import SymbolSpec
from service.storage.embedded.sql import bars_table

SCHEMA = """
CREATE TABLE IF NOT EXISTS symbols (symbol VARCHAR PRIMARY KEY, description VARCHAR NOT NULL,
    tick_size DOUBLE NOT NULL, volume_precision INTEGER NOT NULL, price_band_pct DOUBLE,
    added_ms BIGINT NOT NULL, removed_ms BIGINT);
"""

_COLUMNS = "symbol, description, tick_size, volume_precision, price_band_pct, added_ms, removed_ms"


def read_specs(cursor: duckdb.DuckDBPyConnection) -> list[SymbolSpec]:
    rows = cursor.execute(f"SELECT {_COLUMNS} FROM symbols ORDER BY symbol").fetchall()
    return [
        SymbolSpec(
            symbol=symbol,
            description=description,
            tick_size=float(tick),
            volume_precision=int(precision),
            price_band_pct=None if band is None else float(band),
            added_ms=int(added),
            removed_ms=None if removed is None else int(removed),
        )
        for symbol, description, tick, precision, band, added, removed in rows
    ]


def save_spec(cursor: duckdb.DuckDBPyConnection, spec: SymbolSpec) -> None:
    cursor.execute(
        f"INSERT OR REPLACE INTO symbols ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            spec.symbol,
            spec.description,
            spec.tick_size,
            spec.volume_precision,
            spec.price_band_pct,
            spec.added_ms,
            spec.removed_ms,
        ],
    )


def purge(cursor: duckdb.DuckDBPyConnection, plan: Plan, symbol: str) -> tuple[int, dict[str, int]]:
    """Delete the symbol's trades, its bars in every tier and its dirty windows, inside the
    caller's transaction. Returns the trades deleted and the bars deleted per tier."""
    (trades,) = cursor.execute("DELETE FROM trades WHERE symbol = ?", [symbol]).fetchall()[0]
    bars = {}
    for tier in plan.tiers:
        (n,) = cursor.execute(f"DELETE FROM {bars_table(tier)} WHERE symbol = ?", [symbol]).fetchall()[0]
        bars[tier.name] = int(n)
    cursor.execute("DELETE FROM dirty WHERE symbol = ?", [symbol])
    return int(trades), bars
