"""Flux tasks for the InfluxDB backend: one downsampling task per tier, rendered from the
plan (the queries the store sends are in :mod:`service.storage.influx.flux_queries`). Pure: a
:class:`~service.core.plan.Plan` and names in, strings out.

Status bucket schema (all values are integers, epoch milliseconds where they are times;
tag ``tier`` on every series):

==========================  ===================  =========================================
measurement                 fields               meaning
==========================  ===================  =========================================
``tvflux_watermark``        ``watermark_ms``     everything before it is final in the tier
                                                 (only ever written forward; read with
                                                 ``last()``, bounded however many runs)
``tvflux_lease``            ``until_ms``,        a run holds the tier until then; a finished
                            ``budget_rows``,     run writes 0 (the latest point counts);
                            ``failed_rows``      the source rows that run was given; the
                                                 budget of the run before, if it failed
``tvflux_dirty``            ``start_ms``,        windows to rebuild (late trades); point
                            ``end_ms``           time = when the marker was written (ns)
``tvflux_dirty_cursor``     ``marker_ns``        time of the newest marker consumed
``tvflux_run``              ``rows``, ``from_ms``, what the last run did (``rows`` = bars)
                            ``to_ms``, ``took_ms``
==========================  ===================  =========================================

Bars: measurement ``bars_<tier>`` in the bars bucket, tag ``symbol``, float fields
``open high low close volume`` and integer field ``trades``; point time = bar start.
"""

from __future__ import annotations

import msgspec

from service.core.plan import RAW, Plan, Tier
from service.core.resolution import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS
from service.core.timestamps import NS_PER_MS

WATERMARK = "tvflux_watermark"
LEASE = "tvflux_lease"
DIRTY = "tvflux_dirty"
DIRTY_CURSOR = "tvflux_dirty_cursor"
RUN = "tvflux_run"
TRADES = "trades"

# A run that dies (influxd killed mid-run) keeps its tier locked this long, so it bounds how
# long downsampling stalls after a crash; runs that take longer may overlap (harmless: runs
# are idempotent). Runs are chunk-bounded and take seconds, so a minute is ample.
LEASE_MS = MINUTE_MS
# A run size that failed (past the server's query memory limit) is not tried again this long:
# the budget stays at half of it rather than doubling back into the same failure.
FAILED_HOLD_MS = HOUR_MS

# (source field, Flux aggregate, bar field) — one from() each, so storage pushes it down
RAW_AGGREGATES = (
    ("price", "first", "open"),
    ("price", "max", "high"),
    ("price", "min", "low"),
    ("price", "last", "close"),
    ("size", "sum", "volume"),
    ("price", "count", "trades"),
)
TIER_AGGREGATES = (
    ("open", "first", "open"),
    ("high", "max", "high"),
    ("low", "min", "low"),
    ("close", "last", "close"),
    ("volume", "sum", "volume"),
    ("trades", "sum", "trades"),
)
BAR_FIELDS = ("open", "high", "low", "close", "volume")

FAR_PAST = "1970-01-01T00:00:00Z"
FAR_FUTURE = "2262-01-01T00:00:00Z"  # Flux times end in April 2262


class Names(msgspec.Struct, frozen=True):
    """Buckets the Flux refers to (from the ``TVFLUX_INFLUX_*`` settings)."""

    raw_bucket: str = "trades"
    bars_bucket: str = "bars"
    status_bucket: str = "tvflux_status"

    def task_name(self, tier: Tier) -> str:
        return f"tvflux-{self.bars_bucket}-{tier.name}"


def measurement(tier_name: str) -> str:
    return f"bars_{tier_name}"


def flux_string(text: str) -> str:
    """A Flux string literal (escapes backslash, quote, line breaks and ``${``)."""
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
        .replace("${", "\\${")
    )
    return f'"{escaped}"'


def flux_duration(ms: int) -> str:
    """Exact Flux duration literal for a positive number of milliseconds."""
    if ms <= 0:
        raise ValueError("duration must be positive")
    for unit, size in (("d", DAY_MS), ("h", HOUR_MS), ("m", MINUTE_MS), ("s", SECOND_MS)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def flux_time_ns(t_ns: int) -> str:
    return f"time(v: {int(t_ns)})"


def task_every_ms(tier: Tier) -> int:
    """How often a tier's task runs: about six times per bar, between 10 s and 1 min, so a
    closed bar lands within seconds to a minute (the tail is served from the tier below
    meanwhile, so this is about query cost, not correctness)."""
    return min(MINUTE_MS, max(10 * SECOND_MS, tier.size_ms // 6 // SECOND_MS * SECOND_MS))


def task_offset_ms(plan: Plan, tier: Tier) -> int:
    """Delay within each period: tiers deeper in the chain run a little after their source."""
    depth = len(plan.chain(tier)) - 1
    return min(task_every_ms(tier) // 2, SECOND_MS + depth * 2 * SECOND_MS)


# --- the task -----------------------------------------------------------------------

_TASK = """\
// Generated by tvflux from the downsampling plan: do not edit by hand.
// Regenerate with `tvflux influx render`; `tvflux influx setup` installs it.
//
// Tier @TIER@ (@TIER_SIZE@ bars) from @SOURCE_TEXT@,
// into measurement "@TARGET@" of bucket "@BARS_BUCKET@".
// One run: read the watermark from the status bucket (not tasks.lastSuccess(), which
// always returns its default on InfluxDB OSS), rebuild
// [watermark - lookback, min(source edge, now - grace)) floored to the tier, at most one
// span long and sized by its work: it stops where its source rows pass its budget (runRows,
// less after a failed run; the first run starts at the earliest source row: backfill), rebuild
// windows marked dirty by late trades, then - only after the bars are written -
// advance the watermark. Re-running a window rewrites identical points (idempotent).
import "array"
import "system"

@OPTION@

tier = @TIER_STR@
tierEvery = @TIER_SIZE@
sizeNs = @SIZE_NS@
chunkNs = @CHUNK_NS@
spanNs = @SPAN_NS@
probeNs = @PROBE_NS@
runRows = @RUN_ROWS@
lookbackNs = @LOOKBACK_NS@
graceNs = @GRACE_NS@
leaseMs = @LEASE_MS@
failedHoldMs = @FAILED_HOLD_MS@
statusBucket = @STATUS_BUCKET_STR@
sourceBucket = @SOURCE_BUCKET_STR@
sourceMeasurement = @SOURCE_MEASUREMENT_STR@
barsBucket = @BARS_BUCKET_STR@
target = @TARGET_STR@
msNs = 1000000
farPast = @FAR_PAST@
farFuture = @FAR_FUTURE@

floorNs = (t) => if t >= 0 then t / sizeNs * sizeNs else -((-t + sizeNs - 1) / sizeNs * sizeNs)
ceilNs = (t) => -floorNs(t: -t)
minInt = (a, b) => if a < b then a else b
maxInt = (a, b) => if a > b then a else b

// Latest value of a status series, -1 when there is none. findColumn runs the query at
// once. The bare last() right after filter() is pushed down to storage, which reads only
// the newest block: the cost does not grow with the number of runs (max() would read every
// point ever written). Watermarks and cursors only move forward - a run writes a watermark
// past the one it read - so the latest is the largest.
statusLatest = (measurement, field, tierName) => {
    values = from(bucket: statusBucket)
        |> range(start: farPast, stop: farFuture)
        |> filter(fn: (r) => r._measurement == measurement and r.tier == tierName and r._field == field)
        |> last()
        |> findColumn(fn: (key) => true, column: "_value")

    return if length(arr: values) > 0 then values[0] else -1
}
statusLast = (measurement, field, tierName, start) => {
    values = from(bucket: statusBucket)
        |> range(start: start, stop: farFuture)
        |> filter(fn: (r) => r._measurement == measurement and r.tier == tierName and r._field == field)
        |> last()
        |> group()
        |> sort(columns: ["_time"])
        |> last()
        |> findColumn(fn: (key) => true, column: "_value")

    return if length(arr: values) > 0 then values[0] else -1
}
earliestSourceNs = () => {
    times = from(bucket: sourceBucket)
        |> range(start: farPast, stop: farFuture)
        |> filter(fn: (r) => r._measurement == sourceMeasurement and r._field == @FIRST_FIELD_STR@)
        |> first()
        |> group()
        |> sort(columns: ["_time"])
        |> limit(n: 1)
        |> findColumn(fn: (key) => true, column: "_time")

    return if length(arr: times) > 0 then int(v: times[0]) else -1
}

// Wall clock for the lease and dirty markers; now() (the scheduled time, or scheduledFor
// of a manual run) for the window, so a caller can run the plan "as of" a given time.
wallMs = int(v: system.time()) / msNs
nowNs = int(v: now())
leaseFree = statusLast(measurement: "@LEASE@", field: "until_ms", tierName: tier, start: time(v: (wallMs - leaseMs) * msNs)) < wallMs
wmMs = statusLatest(measurement: "@WATERMARK@", field: "watermark_ms", tierName: tier)
// The budget: source rows per run. A run that took the lease and never released it failed
// (past InfluxDB's query memory limit, say) or died with influxd: the next one, once that
// lease expires, tries half its budget and records the size that failed. Each run that
// finishes doubles the budget back towards runRows, but not to a size that failed within
// the hour. So a window too big for the server's bounds is retried smaller, not forever,
// and not every other run.
lastUntilMs = statusLatest(measurement: "@LEASE@", field: "until_ms", tierName: tier)
lastBudget = statusLatest(measurement: "@LEASE@", field: "budget_rows", tierName: tier)
failedRows = if lastBudget >= 0 and lastUntilMs > 0 then lastBudget else -1
recentFailedRows = statusLast(measurement: "@LEASE@", field: "failed_rows", tierName: tier, start: time(v: (wallMs - failedHoldMs) * msNs))
grownRows = if lastBudget < 0 then runRows else minInt(a: runRows, b: lastBudget * 2)
budgetRows = if failedRows > 0 then maxInt(a: 1, b: failedRows / 2) else if recentFailedRows > 0 then minInt(a: grownRows, b: maxInt(a: 1, b: recentFailedRows / 2)) else grownRows
@EDGE@
limitNs = if edgeNs < 0 then -1 else floorNs(t: edgeNs)

// Dirty windows (late trades): markers newer than the cursor are merged into one span.
// The cursor is the time of the newest marker consumed, so no clock comparison between
// the service and InfluxDB is involved. The part of the span below the watermark is
// rebuilt here, one chunk per run (the rest is re-queued just after the cursor); the part
// above it is the normal window's job anyway.
// Read before the earliest source row: trades are written before their marker, so every
// marker seen here points at trades the backfill below will see. Read after it, a first
// run could take the earliest row from before an import's older trades landed, consume
// their marker (no watermark: nothing to rebuild) and never build them.
cursorNs = statusLatest(measurement: "@DIRTY_CURSOR@", field: "marker_ns", tierName: tier)
markers = (stop) => from(bucket: statusBucket)
    |> range(start: time(v: cursorNs + 1), stop: stop)
    |> filter(fn: (r) => r._measurement == "@DIRTY@" and r.tier == tier)
// last() / min() / max() straight after the filters are pushed down (the group() that
// follows only merges their one row per series): storage does the work, not Flux
newest = if leaseFree then markers(stop: farFuture) |> filter(fn: (r) => r._field == "start_ms") |> last() |> keep(columns: ["_time"]) |> group() |> sort(columns: ["_time"], desc: true) |> limit(n: 1) |> findColumn(fn: (key) => true, column: "_time") else []
hasMarkers = length(arr: newest) > 0
newCursorNs = if hasMarkers then int(v: newest[0]) else cursorNs
dirtyFrom = if hasMarkers then markers(stop: time(v: newCursorNs + 1)) |> filter(fn: (r) => r._field == "start_ms") |> min() |> group() |> min() |> findColumn(fn: (key) => true, column: "_value") else []
dirtyTo = if hasMarkers then markers(stop: time(v: newCursorNs + 1)) |> filter(fn: (r) => r._field == "end_ms") |> max() |> group() |> max() |> findColumn(fn: (key) => true, column: "_value") else []
hasSpan = length(arr: dirtyFrom) > 0 and length(arr: dirtyTo) > 0
dirtyStartNs = if hasSpan then floorNs(t: dirtyFrom[0] * msNs) else 0
dirtyLimitNs = if hasSpan then minInt(a: ceilNs(t: dirtyTo[0] * msNs), b: wmMs * msNs) else 0
dirtyEndNs = minInt(a: dirtyLimitNs, b: dirtyStartNs + chunkNs)
hasDirty = leaseFree and hasSpan and wmMs >= 0 and dirtyEndNs > dirtyStartNs
hasRest = hasDirty and dirtyLimitNs > dirtyEndNs

// The normal window: exactly Plan.next_window in service/core/plan.py.
earliestNs = if wmMs < 0 and limitNs >= 0 and leaseFree then earliestSourceNs() else -1
normalStartNs = if wmMs >= 0 then floorNs(t: wmMs * msNs - lookbackNs) else floorNs(t: earliestNs)
spanEndNs = if wmMs >= 0 then minInt(a: limitNs, b: wmMs * msNs + spanNs) else minInt(a: limitNs, b: normalStartNs + spanNs)
hasNormal = leaseFree and limitNs >= 0 and (if wmMs >= 0 then limitNs > wmMs * msNs else earliestNs >= 0 and limitNs > normalStartNs)

// Sized by work (Plan.sized_end_ms): source rows counted per probe window in storage (a
// pushed-down count), summed in time order; the run stops at the first window that takes
// the sum past runRows, but always covers the probe window holding the watermark. Empty
// spans cost no runs: a span with no source row is skipped up to the next one, and a window
// holding the last source row before the limit extends to the limit (a pushed-down first()
// and last()), so a gap of months, or the time since the data ended, is not walked.
crossing = if hasNormal then from(bucket: sourceBucket)
    |> range(start: time(v: normalStartNs), stop: time(v: spanEndNs))
    |> filter(fn: (r) => r._measurement == sourceMeasurement and r._field == @FIRST_FIELD_STR@)
    |> aggregateWindow(every: @PROBE@, fn: count, timeSrc: "_start", createEmpty: false)
    |> group()
    |> sort(columns: ["_time"])
    |> cumulativeSum()
    |> filter(fn: (r) => r._value > budgetRows)
    |> limit(n: 1)
    |> findColumn(fn: (key) => true, column: "_time") else []
nextRow = if hasNormal then from(bucket: sourceBucket)
    |> range(start: time(v: normalStartNs), stop: time(v: limitNs))
    |> filter(fn: (r) => r._measurement == sourceMeasurement and r._field == @FIRST_FIELD_STR@)
    |> first()
    |> group()
    |> sort(columns: ["_time"])
    |> limit(n: 1)
    |> findColumn(fn: (key) => true, column: "_time") else []
lastRow = if hasNormal then from(bucket: sourceBucket)
    |> range(start: time(v: normalStartNs), stop: time(v: limitNs))
    |> filter(fn: (r) => r._measurement == sourceMeasurement and r._field == @FIRST_FIELD_STR@)
    |> last()
    |> group()
    |> sort(columns: ["_time"], desc: true)
    |> limit(n: 1)
    |> findColumn(fn: (key) => true, column: "_time") else []
nextRowNs = if length(arr: nextRow) > 0 then int(v: nextRow[0]) else -1
lastRowNs = if length(arr: lastRow) > 0 then int(v: lastRow[0]) else -1
leastEndNs = maxInt(a: normalStartNs, b: wmMs * msNs) / probeNs * probeNs + probeNs
sizedEndNs = if length(arr: crossing) > 0 then minInt(a: spanEndNs, b: maxInt(a: int(v: crossing[0]), b: leastEndNs)) else if lastRowNs < spanEndNs then limitNs else spanEndNs
skipToNs = if nextRowNs < 0 then limitNs else minInt(a: limitNs, b: floorNs(t: nextRowNs))
normalEndNs = if nextRowNs < 0 or nextRowNs >= spanEndNs then maxInt(a: spanEndNs, b: skipToNs) else sizedEndNs

working = hasNormal or hasDirty

// The lease, with this run's budget: taken only when there is work; released below once
// everything is written. findColumn() writes it here, before any bar is read or written
// (a bare to() would run alongside the rest of the script, or not at all if that fails).
leaseRows = [
    {_time: time(v: wallMs * msNs), _measurement: "@LEASE@", tier: tier, _field: "until_ms", _value: wallMs + leaseMs},
    {_time: time(v: wallMs * msNs), _measurement: "@LEASE@", tier: tier, _field: "budget_rows", _value: budgetRows},
    {_time: time(v: wallMs * msNs), _measurement: "@LEASE@", tier: tier, _field: "failed_rows", _value: failedRows},
]
leaseTaken = if working then array.from(rows: leaseRows) |> filter(fn: (r) => r._value >= 0) |> to(bucket: statusBucket) |> findColumn(fn: (key) => true, column: "_value") else []

// One aggregate of one window: from |> range |> filter |> aggregateWindow is pushed down
// to the storage engine. An inactive pass reads a 1 ns window at the epoch and drops it.
aggregate = (start, stop, active, field, agg, as) => from(bucket: sourceBucket)
    |> range(start: time(v: if active then start else 0), stop: time(v: if active then stop else 1))
    |> filter(fn: (r) => r._measurement == sourceMeasurement and r._field == field)
    |> aggregateWindow(every: tierEvery, fn: agg, timeSrc: "_start", createEmpty: false)
    |> filter(fn: (r) => active)
    |> set(key: "_measurement", value: target)
    |> set(key: "_field", value: as)
    |> to(bucket: barsBucket)
    |> count()
    |> keep(columns: ["_value"])

// The sum of the rows written (plus a zero sentinel, so there is always one row) comes out
// only after every write above has finished: the status points below are computed from
// it, so the watermark never advances past bars that failed to write.
written = union(
    tables: [
@AGGREGATES@
        array.from(rows: [{_value: 0}]),
    ],
)
    |> group()
    |> sum()
    |> map(fn: (r) => ({bars: r._value / @FIELDS_PER_BAR@}))
point = (measurement, tierName, field, value, when) => written
    |> map(fn: (r) => ({_time: system.time(), _measurement: measurement, tier: tierName, _field: field, _value: value, ok: when}))
// Both fields of a dirty marker share one time, so a reader never sees half a marker.
marker = (tierName, at, start, end, when) => union(
    tables: [
        written
            |> map(fn: (r) => ({_time: at, _measurement: "@DIRTY@", tier: tierName, _field: "start_ms", _value: start, ok: when})),
        written
            |> map(fn: (r) => ({_time: at, _measurement: "@DIRTY@", tier: tierName, _field: "end_ms", _value: end, ok: when})),
    ],
)

union(
    tables: [
        point(measurement: "@WATERMARK@", tierName: tier, field: "watermark_ms", value: normalEndNs / msNs, when: hasNormal),
        point(measurement: "@RUN@", tierName: tier, field: "from_ms", value: normalStartNs / msNs, when: hasNormal),
        point(measurement: "@RUN@", tierName: tier, field: "to_ms", value: normalEndNs / msNs, when: hasNormal),
        written
            |> map(fn: (r) => ({_time: system.time(), _measurement: "@RUN@", tier: tier, _field: "rows", _value: r.bars, ok: working})),
        written
            |> map(fn: (r) => ({_time: system.time(), _measurement: "@RUN@", tier: tier, _field: "took_ms", _value: int(v: system.time()) / msNs - wallMs, ok: working})),
        point(measurement: "@DIRTY_CURSOR@", tierName: tier, field: "marker_ns", value: newCursorNs, when: hasMarkers),
        // the rest of the span: stamped just after the cursor, so the next run takes it
        marker(tierName: tier, at: time(v: newCursorNs + 1), start: dirtyEndNs / msNs, end: dirtyLimitNs / msNs, when: hasRest),
        // what was rebuilt, for the tiers built from this one (stamped with this run's start)
@DEPENDENTS@
        point(measurement: "@LEASE@", tierName: tier, field: "until_ms", value: 0, when: working),
    ],
)
    |> filter(fn: (r) => r.ok)
    |> drop(columns: ["ok"])
    |> to(bucket: statusBucket)
"""


# A schedule that (almost) never fires, for deployments and tests that drive the tasks
# with manual runs only (``scheduledFor`` = their own clock); a task needs some schedule.
MANUAL_CRON = "0 0 1 1 *"


def render_task(
    plan: Plan,
    tier: Tier,
    names: Names = Names(),
    *,
    scheduled: bool = True,
    every_ms: int | None = None,
    lease_ms: int = LEASE_MS,
) -> str:
    """The Flux task that maintains ``tier``. ``scheduled=False`` renders it for manual
    runs only (yearly cron), so no scheduled run moves the watermark behind a caller's
    back — what tests with a fixed clock need. ``every_ms`` runs every tier that often
    instead of :func:`task_every_ms` (no offset): for tests and demos that want the
    scheduler to backfill in seconds. ``lease_ms``: how long a run that dies keeps its tier
    locked (and so how soon a failed run is retried, smaller)."""
    raw = tier.source == RAW
    aggregates = RAW_AGGREGATES if raw else TIER_AGGREGATES
    passes = []
    for start, stop, active in (
        ("normalStartNs", "normalEndNs", "hasNormal"),
        ("dirtyStartNs", "dirtyEndNs", "hasDirty"),
    ):
        for field, agg, as_ in aggregates:
            passes.append(
                f"        aggregate(start: {start}, stop: {stop}, active: {active}, "
                f"field: {flux_string(field)}, agg: {agg}, as: {flux_string(as_)}),"
            )
    dependents = [
        f"        marker(tierName: {flux_string(dep.name)}, at: time(v: wallMs * msNs), "
        "start: dirtyStartNs / msNs, end: dirtyEndNs / msNs, when: hasDirty),"
        for dep in plan.dependents(tier.name)
    ]
    if raw:
        edge = "edgeNs = nowNs - graceNs"
        source_text = f'raw trades (measurement "{TRADES}" of bucket "{names.raw_bucket}")'
    else:
        edge = (
            f'sourceWmMs = statusLatest(measurement: "{WATERMARK}", field: "watermark_ms", '
            f"tierName: {flux_string(tier.source)})\n"
            "edgeNs = if sourceWmMs < 0 then -1 else minInt(a: sourceWmMs * msNs, b: nowNs - graceNs)"
        )
        source_text = f'tier {tier.source} (measurement "{measurement(tier.source)}")'
    if scheduled and every_ms is not None:
        option = f"option task = {{name: {flux_string(names.task_name(tier))}, every: {flux_duration(every_ms)}}}"
    elif scheduled:
        option = (
            f"option task = {{name: {flux_string(names.task_name(tier))}, "
            f"every: {flux_duration(task_every_ms(tier))}, offset: {flux_duration(task_offset_ms(plan, tier))}}}"
        )
    else:
        option = (
            "// manual runs only: the yearly cron is there because a task must have a schedule\n"
            f"option task = {{name: {flux_string(names.task_name(tier))}, cron: {flux_string(MANUAL_CRON)}}}"
        )
    values = {
        "@OPTION@": option,
        "@TIER@": tier.name,
        "@TIER_STR@": flux_string(tier.name),
        "@TIER_SIZE@": flux_duration(tier.size_ms),
        "@SOURCE_TEXT@": source_text,
        "@TARGET@": measurement(tier.name),
        "@TARGET_STR@": flux_string(measurement(tier.name)),
        "@BARS_BUCKET@": names.bars_bucket,
        "@SIZE_NS@": str(tier.size_ms * NS_PER_MS),
        "@CHUNK_NS@": str(tier.chunk_ms * NS_PER_MS),
        "@SPAN_NS@": str(tier.task_span_ms * NS_PER_MS),
        "@PROBE_NS@": str(tier.probe_ms * NS_PER_MS),
        "@PROBE@": flux_duration(tier.probe_ms),
        "@RUN_ROWS@": str(plan.run_rows),
        "@LOOKBACK_NS@": str(plan.lookback_ms * NS_PER_MS),
        "@GRACE_NS@": str(plan.grace_ms * NS_PER_MS),
        "@LEASE_MS@": str(lease_ms),
        "@FAILED_HOLD_MS@": str(FAILED_HOLD_MS),
        "@STATUS_BUCKET_STR@": flux_string(names.status_bucket),
        "@SOURCE_BUCKET_STR@": flux_string(names.raw_bucket if raw else names.bars_bucket),
        "@SOURCE_MEASUREMENT_STR@": flux_string(TRADES if raw else measurement(tier.source)),
        "@BARS_BUCKET_STR@": flux_string(names.bars_bucket),
        "@FIRST_FIELD_STR@": flux_string(aggregates[0][0]),
        "@FAR_PAST@": FAR_PAST,
        "@FAR_FUTURE@": FAR_FUTURE,
        "@EDGE@": edge,
        "@AGGREGATES@": "\n".join(passes),
        "@FIELDS_PER_BAR@": str(len(aggregates)),
        "@DEPENDENTS@": "\n".join(dependents),
        "@WATERMARK@": WATERMARK,
        "@LEASE@": LEASE,
        "@DIRTY@": DIRTY,
        "@DIRTY_CURSOR@": DIRTY_CURSOR,
        "@RUN@": RUN,
    }
    text = _TASK
    # longest keys first so "@TIER@" never eats the start of "@TIER_SIZE@"
    for key in sorted(values, key=len, reverse=True):
        text = text.replace(key, values[key])
    if not dependents:  # the last tier: nothing to pass up
        text = text.replace(
            "        // what was rebuilt, for the tiers built from this one (stamped with this run's start)\n\n", ""
        )
    return text


def task_filename(tier: Tier) -> str:
    return f"task_{tier.name}.flux"


def render_all(plan: Plan, names: Names = Names()) -> dict[str, str]:
    """``{filename: flux}`` for every tier of ``plan``, as stored in ``flux/``."""
    return {task_filename(tier): render_task(plan, tier, names) for tier in plan.tiers}
