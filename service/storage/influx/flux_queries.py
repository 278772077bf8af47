"""The Flux queries :class:`~service.storage.influx.store.InfluxStore` sends (history itself is
read with InfluxQL: :mod:`service.storage.influx.influxql`). Pure: strings out.

Every query ends in a few plain columns, so the CSV streamed back is small and typed the
same way whatever stored it. The bar queries (kept for the benchmark's per-second strategy
and as a Flux cross-check in the real-server tests), whose answers have thousands of rows,
keep ``_time`` (RFC 3339), ``_field`` (a bar field) and ``_value`` with ``keep()``: a Flux
``map()`` costs ~15 µs a row, ``keep()`` next to nothing. The small answers are ``map()``'d
to ``t`` (epoch ms; ns for the status rows) and ``v``. Reads of raw trades keep the shape
``from |> range |> filter |> aggregateWindow`` (or a bare ``last()``) that InfluxDB pushes
down to its storage engine.
"""

from __future__ import annotations

from service.core.plan import Plan
from service.core.timestamps import NS_PER_MS
from service.storage.influx.flux_render import (
    BAR_FIELDS,
    DIRTY,
    DIRTY_CURSOR,
    FAR_FUTURE,
    FAR_PAST,
    LEASE,
    RAW_AGGREGATES,
    RUN,
    TRADES,
    WATERMARK,
    Names,
    flux_duration,
    flux_string,
    flux_time_ns,
    measurement,
)

# the columns of the bar queries' answers (see the module docstring)
BAR_COLUMNS = 'keep(columns: ["_time", "_field", "_value"])'
BAR_COLUMN_NAMES = ("_time", "_field", "_value")


def _range(start_ns: int, stop_ns: int) -> str:
    return f"range(start: {flux_time_ns(start_ns)}, stop: {flux_time_ns(stop_ns)})"


def tier_bars_query(names: Names, tier_name: str, symbol: str, start_ms: int, stop_ms: int) -> str:
    """Stored bars of one tier with start in ``[start_ms, stop_ms)``, one row per field."""
    return (
        f"from(bucket: {flux_string(names.bars_bucket)})\n"
        f"    |> {_range(start_ms * NS_PER_MS, stop_ms * NS_PER_MS)}\n"
        f"    |> filter(fn: (r) => r._measurement == {flux_string(measurement(tier_name))} "
        f"and r.symbol == {flux_string(symbol)})\n"
        f"    |> filter(fn: (r) => {' or '.join(f'r._field == {flux_string(f)}' for f in BAR_FIELDS)})\n"
        f"    |> {BAR_COLUMNS}\n"
    )


def raw_bars_query(names: Names, symbol: str, start_ms: int, stop_ms: int, every_ms: int) -> str:
    """Raw trades in ``[start_ms, stop_ms)`` aggregated to bars of ``every_ms`` inside
    InfluxDB (pushed down: one from() per aggregate), one row per field."""
    parts = []
    for field, agg, as_ in RAW_AGGREGATES:
        if as_ == "trades":
            continue  # bars served to clients carry no trade count
        parts.append(f"        agg(field: {flux_string(field)}, fn: {agg}, as: {flux_string(as_)}),")
    return (
        f"agg = (field, fn, as) => from(bucket: {flux_string(names.raw_bucket)})\n"
        f"    |> {_range(start_ms * NS_PER_MS, stop_ms * NS_PER_MS)}\n"
        f"    |> filter(fn: (r) => r._measurement == {flux_string(TRADES)} and r.symbol == {flux_string(symbol)} "
        "and r._field == field)\n"
        f'    |> aggregateWindow(every: {flux_duration(every_ms)}, fn: fn, timeSrc: "_start", createEmpty: false)\n'
        '    |> set(key: "_field", value: as)\n'
        f"    |> {BAR_COLUMNS}\n"
        "\n"
        "union(\n    tables: [\n" + "\n".join(parts) + "\n    ],\n)\n"
    )


def trade_span_queries(names: Names, symbol: str) -> tuple[str, str]:
    """The first and the last trade time (ns) of ``symbol``: ``first()`` and ``last()`` of its
    price series over all time, each pushed down to storage (it reads one block per end)."""
    return tuple(  # type: ignore[return-value]
        f"from(bucket: {flux_string(names.raw_bucket)})\n"
        f"    |> range(start: {FAR_PAST}, stop: {FAR_FUTURE})\n"
        f"    |> filter(fn: (r) => r._measurement == {flux_string(TRADES)} and r.symbol == {flux_string(symbol)} "
        'and r._field == "price")\n'
        f"    |> {end}()\n"
        "    |> map(fn: (r) => ({t: int(v: r._time)}))\n"
        for end in ("first", "last")
    )


def known_ids_query(
    names: Names, symbol: str, ids: list[str], from_ns: int | None = None, to_ns: int | None = None
) -> str:
    """Which of ``ids`` are stored for ``symbol``: in ``[from_ns, to_ns)`` when given (where a
    retry of the same trades lands), else at any time. The equality chain on ``_value`` is
    part of the storage predicate, unlike ``contains()``."""
    if not ids:
        raise ValueError("known_ids_query needs at least one id")
    wanted = " or ".join(f"r._value == {flux_string(i)}" for i in ids)
    start = FAR_PAST if from_ns is None else f"time(v: {int(from_ns)})"
    stop = FAR_FUTURE if to_ns is None else f"time(v: {int(to_ns)})"
    return (
        f"from(bucket: {flux_string(names.raw_bucket)})\n"
        f"    |> range(start: {start}, stop: {stop})\n"
        f"    |> filter(fn: (r) => r._measurement == {flux_string(TRADES)} and r.symbol == {flux_string(symbol)} "
        'and r._field == "id")\n'
        f"    |> filter(fn: (r) => {wanted})\n"
        "    |> map(fn: (r) => ({id: string(v: r._value)}))\n"
    )


def newest_id_time_query(names: Names, symbol: str) -> str:
    """The time (ns) of ``symbol``'s newest trade that carries an id (``last()``: pushed down)."""
    return (
        f"from(bucket: {flux_string(names.raw_bucket)})\n"
        f"    |> range(start: {FAR_PAST}, stop: {FAR_FUTURE})\n"
        f"    |> filter(fn: (r) => r._measurement == {flux_string(TRADES)} and r.symbol == {flux_string(symbol)} "
        'and r._field == "id")\n'
        "    |> last()\n"
        "    |> map(fn: (r) => ({t: int(v: r._time)}))\n"
    )


def newest_ids_query(names: Names, symbol: str, from_ns: int, to_ns: int, limit: int) -> str:
    """The ``limit`` newest ids of ``symbol`` in ``[from_ns, to_ns)`` with their times (ns)."""
    return (
        f"from(bucket: {flux_string(names.raw_bucket)})\n"
        f"    |> {_range(from_ns, to_ns)}\n"
        f"    |> filter(fn: (r) => r._measurement == {flux_string(TRADES)} and r.symbol == {flux_string(symbol)} "
        'and r._field == "id")\n'
        '    |> sort(columns: ["_time"], desc: true)\n'
        f"    |> limit(n: {int(limit)})\n"
        "    |> map(fn: (r) => ({id: string(v: r._value), t: int(v: r._time)}))\n"
    )


def symbols_query(names: Names) -> str:
    """Symbols with raw trades or stored bars (raw trades may have a retention)."""
    return (
        'import "influxdata/influxdb/schema"\n'
        "\n"
        "union(\n"
        "    tables: [\n"
        f'        schema.tagValues(bucket: {flux_string(names.raw_bucket)}, tag: "symbol", '
        f"predicate: (r) => r._measurement == {flux_string(TRADES)}, start: {FAR_PAST}, stop: {FAR_FUTURE}),\n"
        f'        schema.tagValues(bucket: {flux_string(names.bars_bucket)}, tag: "symbol", '
        f"start: {FAR_PAST}, stop: {FAR_FUTURE}),\n"
        "    ],\n"
        ")\n"
        "    |> map(fn: (r) => ({v: string(v: r._value)}))\n"
    )


def status_query(names: Names, tiers: list[str], marker_days: int = 7) -> str:
    """Everything ``downsampling_status`` shows, bounded whatever the number of runs so far:
    the latest point of every watermark, dirty cursor, run and lease series (``last()``,
    pushed down to storage: the tasks only ever move watermarks and cursors forward, see
    :mod:`service.storage.influx.flux_render`), and per tier only the dirty markers it has
    not consumed yet (after its cursor, at most ``marker_days`` old), reduced in storage to
    their count (``f`` = ``count``), the least ``start_ms`` and the greatest ``end_ms``.
    ``t`` is the point time in ns (0 for the marker rows)."""
    if not tiers:
        raise ValueError("status_query needs the plan's tiers")
    bucket = flux_string(names.status_bucket)
    measurements = " or ".join(f'r._measurement == "{m}"' for m in (WATERMARK, DIRTY_CURSOR, RUN, LEASE))
    parts = ["        latest,"]
    for i, tier in enumerate(tiers):
        parts.append(
            f'        pending(tierName: {flux_string(tier)}, start: since{i}, field: "start_ms", fn: count, as: "count"),'
        )
        parts.append(
            f'        pending(tierName: {flux_string(tier)}, start: since{i}, field: "start_ms", fn: min, as: "start_ms"),'
        )
        parts.append(
            f'        pending(tierName: {flux_string(tier)}, start: since{i}, field: "end_ms", fn: max, as: "end_ms"),'
        )
    since = "\n".join(f"since{i} = after(tierName: {flux_string(tier)})" for i, tier in enumerate(tiers))
    return (
        f"statusBucket = {bucket}\n"
        f"oldestNs = int(v: now()) - {int(marker_days)} * 86400000000000\n"
        "latest = from(bucket: statusBucket)\n"
        f"    |> range(start: {FAR_PAST}, stop: {FAR_FUTURE})\n"
        f"    |> filter(fn: (r) => {measurements})\n"
        "    |> last()\n"
        "    |> map(fn: (r) => ({m: r._measurement, tier: r.tier, f: r._field, t: int(v: r._time), v: int(v: r._value)}))\n"
        "// where a tier's unconsumed markers start: just after its cursor (one last() each)\n"
        "after = (tierName) => {\n"
        "    cursors = from(bucket: statusBucket)\n"
        f"        |> range(start: {FAR_PAST}, stop: {FAR_FUTURE})\n"
        f'        |> filter(fn: (r) => r._measurement == "{DIRTY_CURSOR}" and r.tier == tierName and r._field == "marker_ns")\n'
        "        |> last()\n"
        '        |> findColumn(fn: (key) => true, column: "_value")\n'
        "    next = if length(arr: cursors) > 0 then cursors[0] + 1 else oldestNs\n"
        "\n"
        "    return if next > oldestNs then next else oldestNs\n"
        "}\n"
        "pending = (tierName, start, field, fn, as) => from(bucket: statusBucket)\n"
        f"    |> range(start: time(v: start), stop: {FAR_FUTURE})\n"
        f'    |> filter(fn: (r) => r._measurement == "{DIRTY}" and r.tier == tierName and r._field == field)\n'
        "    |> fn()\n"
        f'    |> map(fn: (r) => ({{m: "{DIRTY}", tier: tierName, f: as, t: 0, v: int(v: r._value)}}))\n'
        f"{since}\n"
        "\n"
        "union(\n    tables: [\n" + "\n".join(parts) + "\n    ],\n)\n"
    )


def all_queries(plan: Plan, names: Names = Names()) -> dict[str, str]:
    """One instance of every query shape the store sends for ``plan`` (for the checker)."""
    out: dict[str, str] = {}
    symbol = 'BTC-"USD"\\${x}'  # awkward on purpose: the literals must stay valid Flux
    for tier in plan.tiers:
        out[f"tier_bars_{tier.name}"] = tier_bars_query(names, tier.name, symbol, 0, 86_400_000)
    out["raw_bars_1s"] = raw_bars_query(names, symbol, 0, 60_000, 1_000)
    first = plan.tiers[0]
    out[f"raw_bars_{first.name}"] = raw_bars_query(names, symbol, 0, 86_400_000, first.size_ms)
    out["trade_span_first"], out["trade_span_last"] = trade_span_queries(names, symbol)
    out["known_ids"] = known_ids_query(names, symbol, ["a", 'b"c', "d\\e"])
    out["known_ids_window"] = known_ids_query(
        names, symbol, ["a"], 1_700_000_000_000_000_000, 1_700_000_001_000_000_000
    )
    out["newest_id_time"] = newest_id_time_query(names, symbol)
    out["newest_ids"] = newest_ids_query(names, symbol, 0, 1_000_000, 100)
    out["symbols"] = symbols_query(names)
    out["status"] = status_query(names, [t.name for t in plan.tiers])
    return out
