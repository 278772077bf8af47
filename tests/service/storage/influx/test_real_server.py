"""The InfluxDB backend on a real ``influxd`` (the ``influx_server`` fixture): the tasks run
on InfluxDB's own scheduler, installed by ``tvflux influx setup`` with a test-only
``--task-every-s 1`` so a 30-day backfill takes seconds, not hours.

Deployments (bucket sets) share the one session server:

* ``backfilled`` (module): 30 days of trades at a low rate, setup run twice, then left to
  the scheduler until every tier has caught up; the other tests watch it afterwards.
* the restart and overlap tests make their own, smaller ones.

Without ``influxd`` everything here is skipped with the fixture's reason.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

from service.core.models import TradeColumns
from service.core.plan import RAW, Plan, default_plan
from service.core.resolution import DAY_MS, MINUTE_MS, SUPPORTED, parse_resolution
from service.core.settings import load_settings
from service.ops.influx_cli import names_from as store_names
from service.storage.influx import flux_queries as fq
from service.storage.influx import flux_render as fr
from service.storage.influx.admin import Admin, bucket_specs
from service.storage.influx.compose import BarRows, rfc3339_ms
from service.storage.influx.store import InfluxStore
from tests.reference import reference_bars
from tests.service.storage.test_contract import as_dicts, assert_same_bars, synthetic

ROOT = Path(__file__).resolve().parents[4]
NS = 1_000_000
PLAN = default_plan()
DAYS = 30
RATE = 0.01  # trades per second per symbol: ~26k per symbol over 30 days
SYMBOLS = ("BTCUSD", "ETHUSD")
LATE_OFFSET_MS = -7 * DAY_MS + 123_456  # where the late-trade test puts its trade
TIER_RESOLUTION = {"1m": "1", "5m": "5", "15m": "15", "1h": "60", "4h": "240", "1d": "1D"}


# --- helpers ---------------------------------------------------------------------------


def deployment_env(server, tag: str) -> dict[str, str]:
    suffix = f"{tag}_{uuid.uuid4().hex[:6]}"
    return {
        **server.env,
        "TVFLUX_INFLUX_BUCKET": f"rs_trades_{suffix}",
        "TVFLUX_INFLUX_BARS_BUCKET": f"rs_bars_{suffix}",
        "TVFLUX_INFLUX_STATUS_BUCKET": f"rs_status_{suffix}",
    }


def tvflux(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess (``tvflux influx …``)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("TVFLUX_")} | env
    return subprocess.run(
        [sys.executable, "-m", "service.ops.cli", *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def make_store(env: dict[str, str]) -> InfluxStore:
    settings = load_settings(env)
    # auto_setup=False: keep the tasks exactly as `tvflux influx setup` installed them
    return InfluxStore(settings, settings.plan, auto_setup=False)


async def until(predicate, timeout_s: float, what: str, poll_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(poll_s)


async def status_points(store: InfluxStore, measurement: str, field: str) -> dict[str, list[tuple[int, int]]]:
    """tier -> every ``(point time ns, value)`` of a status series, oldest first."""
    flux = (
        f"from(bucket: {fr.flux_string(store._names.status_bucket)})\n"
        f"    |> range(start: {fr.FAR_PAST}, stop: {fr.FAR_FUTURE})\n"
        f"    |> filter(fn: (r) => r._measurement == {fr.flux_string(measurement)} and r._field == {fr.flux_string(field)})\n"
        "    |> map(fn: (r) => ({tier: r.tier, t: int(v: r._time), v: int(v: r._value)}))\n"
    )
    out: dict[str, list[tuple[int, int]]] = {}
    async for tier, t, v in store._rows(flux, ("tier", "t", "v")):
        out.setdefault(tier, []).append((int(t), int(v)))
    return {k: sorted(v) for k, v in out.items()}


async def tier_rows(store: InfluxStore, tier: str, symbol: str, start_ms: int, stop_ms: int):
    rows = BarRows()
    async for t, f, v in store._rows(
        fq.tier_bars_query(store._names, tier, symbol, start_ms, stop_ms), fq.BAR_COLUMN_NAMES
    ):
        rows.add(rfc3339_ms(t), f, float(v))
    return rows.sorted()


async def watermarks(store: InfluxStore) -> dict[str, int | None]:
    await store._read_status(force=True)
    return store._watermarks()


def caught_up(wms: dict[str, int | None], data_end_ms: int, plan: Plan = PLAN) -> bool:
    return all(wms[t.name] is not None and wms[t.name] >= t.floor(data_end_ms) for t in plan.tiers)


def market(days: float, end_ms: int, rate: float = RATE, seed: int = 11) -> list[TradeColumns]:
    return synthetic(symbols=SYMBOLS, days=days, rate=rate, seed=seed, end_ms=end_ms)


def since(batches: list[TradeColumns], from_ms: int) -> list[TradeColumns]:
    out = []
    for b in batches:
        keep = b.ts_ns >= from_ms * NS
        if keep.any():
            out.append(TradeColumns(b.symbol, b.ts_ns[keep], b.price[keep], b.size[keep]))
    return out


def assert_tiers_match_reference(
    got_by_tier: dict[str, list], trades: list[TradeColumns], symbol: str, from_ms: int, to_ms: int
) -> None:
    rows = as_dicts(trades, symbol)
    for tier in PLAN.tiers:
        res = parse_resolution(TIER_RESOLUTION[tier.name])
        want = [w for w in reference_bars(rows, res) if from_ms <= w["time"] < to_ms]
        got = got_by_tier[tier.name]
        assert [row[0] for row in got] == [w["time"] for w in want], f"tier {tier.name}: bar times differ"
        ohlc = [tuple(row[1:5]) for row in got]
        assert ohlc == [(w["open"], w["high"], w["low"], w["close"]) for w in want], f"tier {tier.name}: OHLC differ"
        np.testing.assert_allclose([row[5] for row in got], [w["volume"] for w in want], rtol=1e-9)


# --- the scheduled backfill ---------------------------------------------------------------


class Backfilled:
    """A deployment the scheduler has backfilled from an empty status bucket."""

    def __init__(self, env, trades, data_end_ms, setup_outputs, started, caught_up_at, backfill_started_ns):
        self.env = env
        self.trades = trades
        self.data_end_ms = data_end_ms
        self.setup_outputs = setup_outputs
        self.started = started
        self.caught_up_at = caught_up_at
        self.backfill_started_ns = backfill_started_ns


# Small run budgets (source rows per task run) so these small datasets still take many
# runs: the default (2M) would backfill them in one run per tier.
RUN_ROWS_A = 5_000
RUN_ROWS_B = 1_000
RESTART_LEASE_S = 5


@pytest.fixture(scope="module")
def backfilled(influx_server):
    env = deployment_env(influx_server, "a") | {"TVFLUX_DOWNSAMPLE_RUN_ROWS": str(RUN_ROWS_A)}
    outputs = []
    data_end_ms = time.time_ns() // NS // MINUTE_MS * MINUTE_MS - 2 * MINUTE_MS
    trades = market(DAYS, data_end_ms)

    async def go():
        # The trades are in before the tasks exist (an import, then setup): a task that ran
        # while they were being written would start from whatever was visible then and
        # leave the older days to the late-data markers instead of the backfill.
        settings = load_settings(env)
        client = InfluxDBClientAsync(url=settings.influx_url, token=str(settings.influx_token), org=settings.influx_org)
        try:
            admin = Admin(client.api_client, url=settings.influx_url, org=settings.influx_org)
            await admin.ensure_buckets(bucket_specs(store_names(settings), 0))
        finally:
            await client.close()
        store = make_store(env)
        await store.start()
        try:
            assert all(w is None for w in (await watermarks(store)).values())  # an empty status bucket
            began_ns = time.time_ns()
            await store.append(trades)
            for _ in range(2):  # idempotent: the second run changes nothing
                done = tvflux(env, "influx", "setup", "--task-every-s", "1")
                assert done.returncode == 0, done.stderr
                outputs.append(done.stdout)
            await store.close()
            store = make_store(env)  # now with the tasks' ids
            await store.start()
            started = time.monotonic()
            await until(lambda: _caught(store, data_end_ms), 150, "the scheduled tasks to backfill 30 days")
            return started, time.monotonic(), began_ns
        finally:
            await store.close()

    started, caught, began_ns = asyncio.run(go())
    yield Backfilled(env, trades, data_end_ms, outputs, started, caught, began_ns)
    asyncio.run(_destroy(env))


async def _caught(store, data_end_ms):
    """Every watermark past the data, and no late-data marker left to rebuild: a run may
    jump its watermark to the edge while trades are still being written (its window held
    the last source row then), and what lands behind it is rebuilt through the markers."""
    wms = await watermarks(store)  # reads the status, markers included
    return caught_up(wms, data_end_ms) and not any(store._pending_markers(t.name) for t in PLAN.tiers)


async def _destroy(env):
    store = make_store(env)
    await store.start()
    await store.destroy()


@pytest.mark.timeout(300)
def test_setup_is_idempotent(backfilled):
    first, second = backfilled.setup_outputs
    assert first.count("bucket ") == 3 and first.count(": created") == len(PLAN.tiers), first
    assert ": created" not in second and ": updated" not in second, second
    assert second.count("bucket ") == 3 and second.count(": unchanged") == len(PLAN.tiers), second


@pytest.mark.timeout(300)
async def test_scheduler_backfills_in_runs_sized_by_work_then_runs_one_window(backfilled, report_numbers):
    store = make_store(backfilled.env)
    await store.start()
    try:
        marks = await status_points(store, fr.WATERMARK, "watermark_ms")
        runs_from = await status_points(store, fr.RUN, "from_ms")
        runs_to = await status_points(store, fr.RUN, "to_ms")
        rows = await status_points(store, fr.RUN, "rows")
        took = await status_points(store, fr.RUN, "took_ms")
        times_ms = np.sort(np.concatenate([b.ts_ns for b in backfilled.trades])) // NS
        per_probe = np.bincount(times_ms // PLAN.tiers[0].probe_ms).max()  # the densest probe window

        def trades_in(lo: int, hi: int) -> int:
            return int(np.searchsorted(times_ms, hi) - np.searchsorted(times_ms, lo))

        for tier in PLAN.tiers:
            series = [v for _, v in marks[tier.name]]
            # advanced run by run and never back; a repeated value is a run that
            # overlapped another one on the same window (the lease is not atomic)
            assert series == sorted(series), tier.name
        for tier in PLAN.tiers:
            windows = list(zip([v for _, v in runs_from[tier.name]], [v for _, v in runs_to[tier.name]]))
            written = [v for _, v in rows[tier.name]]
            assert len(windows) == len(written)  # each run with work wrote exactly one window
            previous = None
            seen: set[tuple[int, int]] = set()
            unique_rows = 0
            for (lo, hi), n in zip(windows, written):
                if (lo, hi) in seen:
                    continue  # the overlapping twin of a run already counted
                seen.add((lo, hi))
                unique_rows += n
                if previous is not None:
                    # the next window starts at the previous watermark less the lookback
                    assert lo == tier.floor(previous - PLAN.lookback_ms), (tier.name, lo, previous)
                # a window longer than the span only ever adds a stretch without trades
                # (skipped gaps, the time since the data ended)
                span_end = lo + tier.task_span_ms + PLAN.lookback_ms
                assert hi <= span_end or trades_in(span_end, hi) == 0, (tier.name, lo, hi)
                if tier.source == RAW:
                    # sized by work: the budget, plus at most the probe window that crossed it
                    assert trades_in(lo, hi) <= RUN_ROWS_A + per_probe, (lo, hi, trades_in(lo, hi))
                previous = hi
            if tier.source == RAW:
                assert len(seen) >= trades_in(0, 2**62) // (RUN_ROWS_A + per_probe)  # many runs, not one
            # nothing reprocessed: rows written = the tier's bars + at most the lookback per later run
            bars = 0
            for symbol in SYMBOLS:
                bars += len(await tier_rows(store, tier.name, symbol, 0, backfilled.data_end_ms + DAY_MS))
            lookback_bars = -(-PLAN.lookback_ms // tier.size_ms) * len(SYMBOLS)
            assert bars <= unique_rows <= bars + (len(seen) - 1) * lookback_bars, (tier.name, bars, unique_rows)
            run_ms = [v for _, v in took[tier.name]]
            report_numbers.append(
                f"{tier.name}: {len(seen)} windows ({len(windows) - len(seen)} overlapping repeats), "
                f"{unique_rows} bars written for {bars} stored, run took median {int(np.median(run_ms))} ms"
            )
        report_numbers.append(f"caught up in {backfilled.caught_up_at - backfilled.started:.1f}s")
    finally:
        await store.close()


@pytest.fixture(scope="module")
def report_numbers():
    lines: list[str] = []
    yield lines
    print("\nInfluxDB scheduled backfill (30 days, every task every 1s):\n  " + "\n  ".join(lines))


@pytest.mark.timeout(300)
async def test_history_matches_an_independent_aggregation_past_the_watermarks(backfilled):
    """Every accepted resolution over the last 3 days of the backfilled data plus fresh
    trades past every watermark, including the current (live) minute."""
    store = make_store(backfilled.env)
    await store.start()
    try:
        now_ms = time.time_ns() // NS
        fresh = market(0.05, now_ms, rate=0.5, seed=12)  # the last 72 minutes, up to now
        fresh = since(fresh, backfilled.data_end_ms + MINUTE_MS)
        await store.append(fresh)
        trades = backfilled.trades + fresh
        wms = await watermarks(store)
        assert all(wm < now_ms for wm in wms.values())  # the tail is past every watermark
        to_ms = now_ms + MINUTE_MS  # includes the live bar
        for symbol in SYMBOLS:
            rows = as_dicts(trades, symbol)
            for text in SUPPORTED:
                res = parse_resolution(text)
                lo = res.bucket_start_ms(
                    now_ms - (2 * 3_600_000 if res.size_ms and res.size_ms < MINUTE_MS else 3 * DAY_MS)
                )
                hi_end = res.next_start_ms(res.bucket_start_ms(to_ms - 1))
                want = [
                    w
                    for w in reference_bars([r for r in rows if lo <= r["time"] < hi_end], res)
                    if lo <= w["time"] < to_ms
                ]
                assert_same_bars(await store.bars(symbol, res, lo, to_ms), want)
    finally:
        await store.close()


async def test_history_reads_quote_an_awkward_symbol(influx_server):
    """History is read with InfluxQL statements (service/storage/influx/influxql.py): a
    symbol with quotes and a space must reach InfluxDB as itself, not end the literal (a
    backslash cannot be stored: line protocol does not round-trip it)."""
    env = deployment_env(influx_server, "quote")
    settings = load_settings(env)
    store = InfluxStore(settings, settings.plan, schedule_tasks=False)
    await store.start()
    try:
        base = time.time_ns() // NS // DAY_MS * DAY_MS - 3 * DAY_MS
        odd, plain = "A'B C\"D", "A"
        times = np.array([base + 10_000, base + 70_000, base + DAY_MS + 5], dtype=np.int64) * NS
        prices, sizes = np.array([1.0, 3.0, 2.0]), np.array([1.0, 2.0, 4.0])
        await store.append(
            [TradeColumns(odd, times, prices, sizes), TradeColumns(plain, times[:1], prices[:1] * 9, sizes[:1])]
        )
        rows = [{"time": int(t) // NS, "price": p, "size": z} for t, p, z in zip(times, prices, sizes)]
        for text in ("1", "60", "1D", "1S"):
            res = parse_resolution(text)
            assert_same_bars(await store.bars(odd, res, base, base + 2 * DAY_MS), reference_bars(rows, res))
        hour = parse_resolution("60")
        assert await store.previous_bar_time(odd, hour, base + 2 * DAY_MS) == base + DAY_MS
        assert await store.previous_bar_time(odd, hour, base) is None
        assert await store.last_ts_ns(odd, int(times[0]), int(times[1])) == int(times[0])
        assert await store.last_ts_ns(odd, 0, 2**62) == int(times[2])
    finally:
        await store.destroy()


async def test_generate_writes_the_same_market_into_influxdb_as_into_the_embedded_store(influx_server, tmp_path):
    """`tvflux generate` with TVFLUX_STORE=influx (it used to refuse): the same arguments
    write the same trades as into the embedded store, bar for bar."""
    from service.storage.embedded.store import EmbeddedStore

    end_ms = time.time_ns() // NS // DAY_MS * DAY_MS - 3 * DAY_MS
    args = ("generate", "--symbols", "GENUSD", "--days", "1", "--trades", "20000", "--end-ms", str(end_ms))
    env = deployment_env(influx_server, "gen") | {"TVFLUX_STORE": "influx"}
    done = tvflux(env, *args)
    assert done.returncode == 0, done.stderr
    local = tvflux({"TVFLUX_DATA_DIR": str(tmp_path)}, *args)
    assert local.returncode == 0, local.stderr
    settings = load_settings(env)
    store = InfluxStore(settings, settings.plan, schedule_tasks=False)
    await store.start()
    embedded = EmbeddedStore(str(tmp_path / "tvflux.duckdb"), default_plan())
    await embedded.start()
    try:
        for text in ("1", "60"):
            res = parse_resolution(text)
            want = await embedded.bars("GENUSD", res, end_ms - DAY_MS, end_ms)
            got = await store.bars("GENUSD", res, end_ms - DAY_MS, end_ms)
            assert len(want) > 20 and [b.time for b in got] == [b.time for b in want], text
            assert [(b.open, b.high, b.low, b.close) for b in got] == [(b.open, b.high, b.low, b.close) for b in want]
            np.testing.assert_allclose([b.volume for b in got], [b.volume for b in want], rtol=1e-9)
    finally:
        await embedded.close()
        await store.destroy()


@pytest.mark.timeout(300)
async def test_a_late_trade_is_rebuilt_in_every_tier_by_the_scheduler(backfilled):
    store = make_store(backfilled.env)
    await store.start()
    try:
        late_ms = backfilled.data_end_ms + LATE_OFFSET_MS
        late = TradeColumns("BTCUSD", np.array([late_ms * NS + 777], dtype=np.int64), np.array([1e9]), np.array([5.0]))
        await store.append([late])
        # history has it at once (the marker's span is read from raw trades meanwhile)
        day = parse_resolution("1D")
        assert (await store.bars("BTCUSD", day, day.bucket_start_ms(late_ms), day.bucket_start_ms(late_ms) + DAY_MS))[
            0
        ].high == 1e9

        async def rebuilt():
            for tier in PLAN.tiers:
                got = await tier_rows(
                    store, tier.name, "BTCUSD", tier.floor(late_ms), tier.floor(late_ms) + tier.size_ms
                )
                if not got or got[0][2] != 1e9:  # the high of the first row
                    return False
            return True

        await until(rebuilt, 60, "every tier to rebuild the late trade's bar")
        # the store reports the changed window (what makes the runtime send `reset`)
        report = await store.run_downsampling(time.time_ns() // NS)
        assert any(w.symbol == "BTCUSD" and w.start_ms <= late_ms < w.end_ms for w in report.changed)
        status = await store.downsampling_status(time.time_ns() // NS)
        assert all(s.dirty_windows == 0 for s in status), status
        # and every tier agrees with a fresh aggregation of all trades around it
        trades = backfilled.trades + [late]
        lo, hi = PLAN.tiers[-1].floor(late_ms), PLAN.tiers[-1].floor(late_ms) + DAY_MS
        got = {t.name: await tier_rows(store, t.name, "BTCUSD", lo, hi) for t in PLAN.tiers}
        assert_tiers_match_reference(got, trades, "BTCUSD", lo, hi)
    finally:
        await store.close()


# --- restart and overlap -------------------------------------------------------------------


async def _bars_by_tier(store, symbol, lo, hi):
    return {t.name: await tier_rows(store, t.name, symbol, lo, hi) for t in PLAN.tiers}


@pytest.mark.timeout(300)
async def test_restart_in_the_middle_of_a_backfill_resumes_from_the_watermarks(influx_server, backfilled):
    env = deployment_env(influx_server, "b") | {"TVFLUX_DOWNSAMPLE_RUN_ROWS": str(RUN_ROWS_B)}
    # a lease of seconds, not the default minute: a run the restart kills holds its tier that long
    done = tvflux(env, "influx", "setup", "--task-every-s", "1", "--lease-s", str(RESTART_LEASE_S))
    assert done.returncode == 0, done.stderr
    cut_ms = backfilled.data_end_ms // DAY_MS * DAY_MS - 10 * DAY_MS  # day-aligned: same bars as deployment A
    trades = since(backfilled.trades, cut_ms)
    store = make_store(env)
    await store.start()
    try:
        await store.append(trades)
        first = PLAN.tiers[0]

        async def partway():
            wm = (await watermarks(store))[first.name]
            return wm is not None and wm >= cut_ms + 2 * DAY_MS

        await until(partway, 60, "the backfill to be under way")
        before = await watermarks(store)
        assert not caught_up(before, backfilled.data_end_ms)  # really in the middle
        influx_server.restart()  # SIGTERM, then the same data and port
        # a run killed mid-way holds its tier's lease until it expires, then the next run
        # resumes from the watermark (with half the budget: it cannot tell a kill from a failure)
        await until(
            lambda: _caught(store, backfilled.data_end_ms),
            RESTART_LEASE_S + 120,
            "the backfill to finish after the restart",
        )
        after = await watermarks(store)
        assert all(after[t] >= before[t] for t in before if before[t] is not None)
        hi = backfilled.data_end_ms // DAY_MS * DAY_MS
        # equal to a fresh aggregation of the trades, and bit for bit to the uninterrupted
        # backfill of the same trades (deployment A; but for the bars of A's late trade)
        late_ms = backfilled.data_end_ms + LATE_OFFSET_MS
        ref = make_store(backfilled.env)
        await ref.start()
        try:
            for symbol in SYMBOLS:
                got = await _bars_by_tier(store, symbol, cut_ms, hi)
                assert_tiers_match_reference(got, trades, symbol, cut_ms, hi)
                want = await _bars_by_tier(ref, symbol, cut_ms, hi)
                for tier in PLAN.tiers:
                    touched = tier.floor(late_ms)
                    assert [r for r in got[tier.name] if r[0] != touched] == [
                        r for r in want[tier.name] if r[0] != touched
                    ]
        finally:
            await ref.close()
    finally:
        await store.destroy()


@pytest.mark.timeout(300)
async def test_manual_runs_during_scheduled_runs_leave_correct_bars(influx_server, report_numbers):
    env = deployment_env(influx_server, "c")
    done = tvflux(env, "influx", "setup", "--task-every-s", "1")
    assert done.returncode == 0, done.stderr
    end_ms = time.time_ns() // NS // MINUTE_MS * MINUTE_MS - 2 * MINUTE_MS
    trades = market(4, end_ms, rate=0.02, seed=13)
    store = make_store(env)
    await store.start()
    try:
        await store.append(trades)
        admin = store._api()
        posted = 0
        deadline = time.monotonic() + 90
        while not caught_up(await watermarks(store), end_ms):
            assert time.monotonic() < deadline, "no catch-up with manual runs racing the scheduled ones"
            # a manual run of every task while its scheduled runs are in flight
            for tier in PLAN.tiers:
                if await admin.start_run(store._task_ids[tier.name], None) is not None:
                    posted += 1
            await asyncio.sleep(0.3)
        await asyncio.sleep(2)  # let runs already queued finish
        lo = PLAN.tiers[-1].floor(end_ms - 4 * DAY_MS)
        hi = PLAN.tiers[-1].floor(end_ms)
        for symbol in SYMBOLS:
            assert_tiers_match_reference(await _bars_by_tier(store, symbol, lo, hi), trades, symbol, lo, hi)
        # the lease: runs that found it taken wrote nothing; count the overlaps it missed
        marks = await status_points(store, fr.WATERMARK, "watermark_ms")
        repeated = sum(len(v) - len({x for _, x in v}) for v in marks.values())
        runs = {t.name: await admin.recent_runs(store._task_ids[t.name], limit=100) for t in PLAN.tiers}
        failed = [r for rs in runs.values() for r in rs if r.status == "failed"]
        assert not failed, failed[0].log[-2:]
        report_numbers.append(
            f"overlap test: {posted} manual runs posted, "
            f"{sum(len(v) for v in marks.values())} watermark advances, {repeated} repeated"
        )
    finally:
        await store.destroy()
