"""Trade corrections on InfluxDB (:meth:`InfluxStore.delete_trades`).

InfluxDB deletes by time range and tag predicate (``POST /api/v2/delete``), not by field
value, so:

1. find the trades: their timestamps (``ts_ns``), by id (``_field == "id"``) or in the range;
2. write a dirty marker for the first tier over the bars they were in — before anything
   is deleted, so history reads that span from raw trades (exact) from now on, and the
   tasks rebuild it up the chain like a late trade's window;
3. delete the raw points (each trade's own nanosecond, or the whole range);
4. delete the stored bars of every tier that contained one of them. The tasks only *write*
   bars, so a bar whose trades are all gone would otherwise stay; deleted here, the
   rebuild writes back exactly the bars that still have trades.

Trade-off, plainly: steps 3–4 are separate requests, not a transaction. A task run that
read the raw trades before step 3 and writes after step 4 would put a stale bar back; the
marker of step 2 is newer than such a run's cursor, so the next run rebuilds the span again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from service.core.plan import Plan
from service.core.schedule import late_window
from service.core.timestamps import NS_PER_MS
from service.storage.base import ChangedWindow, Deletion
from service.storage.influx.connection import END_OF_TIME_NS, Connection
from service.storage.influx.flux_render import TRADES, Names, flux_string, measurement

# writes dirty markers for the windows (the store's, as for late trades)
MarkDirty = Callable[[list[ChangedWindow]], Awaitable[None]]
_CONCURRENCY = 4


def trade_times_query(bucket: str, symbol: str, ids: Sequence[str] | None, from_ns: int, to_ns: int) -> str:
    """``t`` (ns) of the trades of ``symbol`` in ``[from_ns, to_ns)``, only those whose id is
    in ``ids`` when given (each trade has one ``price`` point; ids live in the ``id`` field)."""
    field = "id" if ids is not None else "price"
    flux = (
        f"from(bucket: {flux_string(bucket)})\n"
        f"    |> range(start: time(v: {int(from_ns)}), stop: time(v: {int(to_ns)}))\n"
        f"    |> filter(fn: (r) => r._measurement == {flux_string(TRADES)} and r.symbol == {flux_string(symbol)} "
        f'and r._field == "{field}")\n'
    )
    if ids is not None:
        flux += f"    |> filter(fn: (r) => {' or '.join(f'r._value == {flux_string(i)}' for i in ids)})\n"
    return flux + "    |> map(fn: (r) => ({t: int(v: r._time)}))\n"


async def delete_trades(
    conn: Connection,
    names: Names,
    plan: Plan,
    mark_dirty: MarkDirty,
    symbol: str,
    *,
    ids: Sequence[str] | None,
    from_ns: int | None,
    to_ns: int | None,
) -> Deletion:
    """Delete the trades of ``symbol`` (by ``ids``, in ``[from_ns, to_ns)``, or both) from
    the buckets ``names`` gives, with the bars of every ``plan`` tier that held them, after
    ``mark_dirty`` put a dirty marker over them."""
    lo, hi = (0, END_OF_TIME_NS) if from_ns is None or to_ns is None else (from_ns, to_ns)
    times: list[int] = []
    wanted = sorted(set(ids)) if ids is not None else None
    chunks = [None] if wanted is None else [wanted[i : i + 200] for i in range(0, len(wanted), 200)]
    for chunk in chunks:
        flux = trade_times_query(names.raw_bucket, symbol, chunk, lo, hi)
        times += [int(t) async for (t,) in conn.rows(flux, ("t",))]
    if not times:
        return Deletion(0, [])
    ts = np.unique(np.asarray(times, dtype=np.int64))
    first = plan.tiers[0]
    # 2. the marker first (its span: the first-tier bars the trades were in, all of them —
    # the watermark lives in InfluxDB, and the tasks clip the span to it themselves)
    span = late_window(first, ts, END_OF_TIME_NS // NS_PER_MS)
    assert span is not None
    change = ChangedWindow(symbol, span.start_ms, span.end_ms)
    await mark_dirty([change])  # history sees the dirty span at once
    # 3. the raw points; 4. the bars that held them, in every tier
    deletes: list[tuple[str, int, int, str]] = []
    trades = f'_measurement="{TRADES}" AND symbol="{symbol}"'
    if wanted is None:
        deletes.append((names.raw_bucket, lo, hi - 1, trades))  # the API's stop is inclusive
    else:
        deletes += [(names.raw_bucket, int(t), int(t), trades) for t in ts]
    for tier in plan.tiers:
        starts = np.unique(ts // NS_PER_MS // tier.size_ms * tier.size_ms)  # bars are epoch-aligned
        bars = f'_measurement="{measurement(tier.name)}" AND symbol="{symbol}"'
        if wanted is None:  # every bar from the first to the last held only deleted trades, or is rebuilt
            deletes.append((names.bars_bucket, int(starts[0]) * NS_PER_MS, int(starts[-1]) * NS_PER_MS, bars))
        else:
            deletes += [(names.bars_bucket, int(s) * NS_PER_MS, int(s) * NS_PER_MS, bars) for s in starts]
    limit = asyncio.Semaphore(_CONCURRENCY)

    async def one(bucket: str, start_ns: int, stop_ns: int, predicate: str) -> None:
        async with limit:
            await conn.delete(bucket, start_ns, stop_ns, predicate)

    await asyncio.gather(*(one(*d) for d in deletes))
    return Deletion(int(ts.size), [change])
