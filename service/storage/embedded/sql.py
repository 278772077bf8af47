"""SQL and Arrow building blocks of the embedded store. Pure: strings and tables, no
connection. Kept apart so :mod:`service.storage.embedded.store` reads as the store's logic."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from service.core.models import TradeColumns
from service.core.plan import RAW, Tier
from service.core.resolution import Resolution, Unit
from service.core.timestamps import NS_PER_MS

_TRADE_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts_ns", pa.int64()),
        ("price", pa.float64()),
        ("size", pa.float64()),
        ("id", pa.string()),
    ]
)


def bars_table(tier: Tier | str) -> str:
    name = tier if isinstance(tier, str) else tier.name
    return f"bars_{name}"


def bucket_sql(resolution: Resolution, k_ms: str) -> str:
    """SQL for the bucket start (epoch ms) of the epoch-ms expression ``k_ms``."""
    if resolution.unit is Unit.MONTH:
        return f"epoch_ms(date_trunc('month', epoch_ms({k_ms})))"
    size = resolution.size_ms
    assert size is not None  # only calendar months have no fixed size, handled above
    offset = resolution.bucket_start_ms(0) % size
    if offset:
        return f"(({k_ms} - {offset}) // {size} * {size} + {offset})"
    return f"({k_ms} // {size} * {size})"


def tier_select_sql(tier: Tier) -> str:
    """SELECT that builds ``tier`` bars for every symbol from its source, for a window
    given as two parameters (epoch ms)."""
    if tier.source == RAW:
        return (
            f"SELECT symbol, ts_ns // {NS_PER_MS} // {tier.size_ms} * {tier.size_ms} AS t, "
            "arg_min(price, ts_ns), max(price), min(price), arg_max(price, ts_ns), fsum(size), count(*) "
            f"FROM trades WHERE ts_ns >= $lo::BIGINT * {NS_PER_MS} AND ts_ns < $hi::BIGINT * {NS_PER_MS} {{symbol_filter}} "
            "GROUP BY symbol, t"
        )
    return (
        f"SELECT symbol, time_ms // {tier.size_ms} * {tier.size_ms} AS t, "
        "arg_min(open, time_ms), max(high), min(low), arg_max(close, time_ms), fsum(volume), sum(trades) "
        f"FROM {bars_table(tier.source)} WHERE time_ms >= $lo AND time_ms < $hi {{symbol_filter}} "
        "GROUP BY symbol, t"
    )


def trades_arrow(batches: Sequence[TradeColumns]) -> pa.Table:
    """One Arrow table for a list of per-symbol batches (one append per flush)."""
    symbols = np.concatenate([np.full(len(b), b.symbol, dtype=object) for b in batches])
    ids: list[str | None] = []
    for b in batches:
        ids.extend(b.ids if b.ids is not None else [None] * len(b))
    return pa.Table.from_arrays(
        [
            pa.array(symbols, type=pa.string()),
            pa.array(np.concatenate([b.ts_ns for b in batches]), type=pa.int64()),
            pa.array(np.concatenate([b.price for b in batches]), type=pa.float64()),
            pa.array(np.concatenate([b.size for b in batches]), type=pa.float64()),
            pa.array(ids, type=pa.string()),
        ],
        schema=_TRADE_SCHEMA,
    )
