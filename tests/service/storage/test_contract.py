"""The store contract: every backend must pass these (service/storage/base.py).

The embedded DuckDB store always runs them on a real file. The InfluxDB store runs them
against a real ``influxd`` that the ``influx_server`` fixture starts on 127.0.0.1 (found
through ``TVFLUX_INFLUXD`` or ``PATH``); without one its cases are skipped with that reason.
"""

from __future__ import annotations

import urllib.request
import uuid

import msgspec
import numpy as np
import pytest

from service.core.models import TradeColumns
from service.core.plan import default_plan
from service.core.resolution import DAY_MS, SUPPORTED, parse_resolution
from service.core.settings import load_settings
from service.core.synthetic import SyntheticMarket
from service.core.timestamps import TimestampAllocator
from service.storage.embedded.store import EmbeddedStore
from tests.reference import reference_bars

NOW_MS = 1_700_006_400_000  # a fixed "now" (2023-11-15 00:00 UTC): stores take time as an argument
NS = 1_000_000


class StoreKit:
    """Makes stores of one backend; ``reopen()`` simulates a restart on the same data."""

    def __init__(self, kind: str, tmp_path, influx=None) -> None:
        self.kind = kind
        self.influx = influx
        self.path = str(tmp_path / "store.duckdb")
        self.bucket_suffix = uuid.uuid4().hex[:8]

    def make(self):
        if self.kind == "duckdb":
            return EmbeddedStore(self.path, default_plan())
        from service.storage.influx.store import InfluxStore

        settings = load_settings(
            self.influx.env,
            influx_bucket=f"tvflux_test_trades_{self.bucket_suffix}",
            influx_bars_bucket=f"tvflux_test_bars_{self.bucket_suffix}",
            influx_status_bucket=f"tvflux_test_status_{self.bucket_suffix}",
        )
        # Tasks installed for manual runs only: scheduled runs at the real clock would move
        # watermarks past the fixed NOW_MS these tests run at.
        return InfluxStore(settings, settings.plan, schedule_tasks=False)


async def dispose(store) -> None:
    """Close; an InfluxDB store also deletes this test's buckets and tasks."""
    destroy = getattr(store, "destroy", None)
    if destroy is not None:
        await destroy()
    else:
        await store.close()


@pytest.fixture(params=["duckdb", "influx"])
async def kit(request, tmp_path):
    influx = request.getfixturevalue("influx_server") if request.param == "influx" else None
    return StoreKit(request.param, tmp_path, influx)


@pytest.fixture
async def store(kit):
    s = kit.make()
    await s.start()
    yield s
    await dispose(s)


def synthetic(symbols=("BTCUSD", "ETHUSD"), days=3.0, rate=0.5, seed=5, end_ms=NOW_MS):
    market = SyntheticMarket(symbols, seed=seed)
    clock = TimestampAllocator()
    for s in symbols:
        clock.start_symbol(s, None)
    start = end_ms - int(days * DAY_MS)
    out = []
    for lo in range(start, end_ms, 6 * 3_600_000):
        for b in market.trades(lo, min(end_ms, lo + 6 * 3_600_000), rate):
            out.append(TradeColumns(b.symbol, clock.allocate(b.symbol, b.ts_ns // NS), b.price, b.size))
    return out


def as_dicts(batches, symbol):
    rows = []
    for b in batches:
        if b.symbol == symbol:
            rows += [
                {"time": int(t) // NS, "ns": int(t), "price": float(p), "size": float(s)}
                for t, p, s in zip(b.ts_ns, b.price, b.size)
            ]
    rows.sort(key=lambda r: r["ns"])
    return rows


def assert_same_bars(got, want):
    assert [b.time for b in got] == [w["time"] for w in want]
    got_ohlc = np.array([(b.open, b.high, b.low, b.close) for b in got]).reshape(-1, 4)
    want_ohlc = np.array([(w["open"], w["high"], w["low"], w["close"]) for w in want]).reshape(-1, 4)
    mismatch = np.flatnonzero((got_ohlc != want_ohlc).any(axis=1))
    assert mismatch.size == 0, f"first differing bar: {got[mismatch[0]]} != {want[mismatch[0]]}"
    np.testing.assert_allclose([b.volume for b in got], [w["volume"] for w in want], rtol=1e-9)


async def check_all_resolutions(store, trades, symbol="BTCUSD", from_ms=NOW_MS - 2 * DAY_MS, to_ms=NOW_MS):
    rows = [r for r in as_dicts(trades, symbol)]
    for text in SUPPORTED:
        res = parse_resolution(text)
        lo = res.bucket_start_ms(from_ms)
        # history covers whole buckets starting in [lo, to)
        hi_bucket_end = res.next_start_ms(res.bucket_start_ms(to_ms - 1))
        want = reference_bars([r for r in rows if lo <= r["time"] < hi_bucket_end], res)
        want = [w for w in want if lo <= w["time"] < to_ms]
        got = await store.bars(symbol, res, lo, to_ms)
        assert_same_bars(got, want)
        # times are ints (a float of the same value compares equal, yet encodes as 1.7e12)
        assert all(type(b.time) is int and type(b.volume) is float for b in got), text


async def test_history_is_exact_before_any_downsampling(store):
    trades = synthetic()
    await store.append(trades)
    await check_all_resolutions(store, trades)


async def test_history_is_exact_after_full_and_partial_downsampling(store):
    trades = synthetic()
    await store.append(trades)
    # Partial: stop after a few windows, so tiers have different watermarks.
    report = await store.run_downsampling(NOW_MS, max_windows=3)
    assert len(report.ran) == 3
    await check_all_resolutions(store, trades)
    await store.run_downsampling(NOW_MS)
    status = {s.tier: s for s in await store.downsampling_status(NOW_MS)}
    assert all(s.watermark is not None for s in status.values())
    await check_all_resolutions(store, trades)


async def test_watermarks_are_monotone_and_never_pass_their_source(store):
    await store.append(synthetic(days=20, rate=0.2))
    plan = default_plan()
    previous: dict[str, int] = {}
    for _ in range(30):
        report = await store.run_downsampling(NOW_MS, max_windows=2)
        status = {s.tier: s.watermark for s in await store.downsampling_status(NOW_MS)}
        for tier in plan.tiers:
            wm = status[tier.name]
            if wm is None:
                continue
            assert wm % tier.size_ms == 0
            assert wm >= previous.get(tier.name, wm)
            assert wm <= NOW_MS - plan.grace_ms
            if tier.source != "trades":
                assert status[tier.source] is not None and wm <= status[tier.source]
            previous[tier.name] = wm
        if not report.ran:
            break
    else:
        pytest.fail("downsampling never reached the live edge")


async def test_a_range_inside_one_tier_is_that_tiers_rows(store):
    """Ranges and countbacks wholly below a tier's watermark at the tier's own resolution
    (the store may read its rows as they are, without regrouping) equal the reference."""
    trades = synthetic(days=2)
    await store.append(trades)
    await store.run_downsampling(NOW_MS)
    rows = as_dicts(trades, "BTCUSD")
    for status in await store.downsampling_status(NOW_MS):
        res = parse_resolution({"1m": "1", "5m": "5", "15m": "15", "1h": "60", "4h": "240", "1d": "1D"}[status.tier])
        assert status.watermark is not None
        hi = status.watermark
        want = [w for w in reference_bars([r for r in rows if r["time"] < hi], res) if w["time"] < hi]
        assert want, status.tier
        lo = want[max(0, len(want) - 40)]["time"]
        got = await store.bars("BTCUSD", res, lo, hi)
        assert_same_bars(got, [w for w in want if w["time"] >= lo])
        assert all(type(b.time) is int for b in got)
        assert_same_bars(await store.bars_before("BTCUSD", res, hi, 7), want[-7:])


async def test_runs_are_idempotent(store):
    trades = synthetic(days=2)
    await store.append(trades)
    await store.run_downsampling(NOW_MS)
    res = parse_resolution("60")
    before = await store.bars("ETHUSD", res, NOW_MS - 2 * DAY_MS, NOW_MS)
    status_before = await store.downsampling_status(NOW_MS)
    again = await store.run_downsampling(NOW_MS)
    assert again.ran == []  # nothing new: up to date
    later = await store.run_downsampling(NOW_MS + 3_600_000)  # re-reads the lookback windows
    assert later.ran
    assert await store.bars("ETHUSD", res, NOW_MS - 2 * DAY_MS, NOW_MS) == before
    assert [s.watermark for s in status_before] <= [s.watermark for s in await store.downsampling_status(NOW_MS)]


async def test_late_trades_behind_the_watermark_are_recomputed(store):
    trades = synthetic(days=2)
    await store.append(trades)
    await store.run_downsampling(NOW_MS)
    # A trade a day old arrives now: it must end up in every tier's history.
    late_ms = NOW_MS - DAY_MS + 123_456
    late = TradeColumns("BTCUSD", np.array([late_ms * NS + 999_999], dtype=np.int64), np.array([1e9]), np.array([5.0]))
    await store.append([late])
    status = {s.tier: s for s in await store.downsampling_status(NOW_MS)}
    assert status["1m"].dirty_windows >= 1
    # history is exact at once, before any run rebuilds the tiers
    await check_all_resolutions(store, trades + [late])
    report = await store.run_downsampling(NOW_MS)
    assert any(w.symbol == "BTCUSD" and w.start_ms <= late_ms < w.end_ms for w in report.changed)
    # the rebuild is a run of the first tier, so the run log (/api/downsampling) lists it
    first = [r for r in report.ran if r.tier == "1m"]
    assert first and first[0].rows >= 1
    await check_all_resolutions(store, trades + [late])
    day = await store.bars("BTCUSD", parse_resolution("1D"), NOW_MS - DAY_MS, NOW_MS)
    assert day[0].high == 1e9


async def test_previous_bar_time_and_empty_ranges(store):
    trades = synthetic(days=1)
    await store.append(trades)
    await store.run_downsampling(NOW_MS)
    res = parse_resolution("1D")
    assert await store.bars("BTCUSD", res, NOW_MS + DAY_MS, NOW_MS + 2 * DAY_MS) == []
    assert await store.previous_bar_time("BTCUSD", res, NOW_MS + 5 * DAY_MS) == res.bucket_start_ms(NOW_MS - 1)
    assert await store.previous_bar_time("BTCUSD", res, NOW_MS - 3 * DAY_MS) is None
    minute = parse_resolution("1")
    last = max(int(t) for b in trades if b.symbol == "BTCUSD" for t in b.ts_ns) // NS
    assert await store.previous_bar_time("BTCUSD", minute, NOW_MS + DAY_MS) == minute.bucket_start_ms(last)


async def test_bars_before_is_the_newest_bars_across_gaps(store):
    """countback: the newest N bars before ``to`` for every resolution, whether the window
    of N buckets holds them (dense), a quiet stretch separates them from ``to``, or fewer
    exist than asked; and previous_bar_time agrees with it."""
    old = synthetic(days=1.0, end_ms=NOW_MS - 20 * DAY_MS)  # a busy day, then 19 quiet days
    recent = synthetic(days=0.25, seed=6)
    await store.append(old + recent)
    await store.run_downsampling(NOW_MS - 2 * 3_600_000)  # tiers partly behind: raw + tiers compose
    rows = as_dicts(old + recent, "BTCUSD")
    for text in SUPPORTED:
        res = parse_resolution(text)
        # ``to`` after the data, in the quiet stretch, at the end of the busy day, before all
        # data (NOW - 14 days is 1 Nov): never inside a bucket holding trades after it, where
        # the stores may differ (whole buckets or trades before ``to``)
        for to_ms in (NOW_MS + 60_000, NOW_MS - 14 * DAY_MS, NOW_MS - 20 * DAY_MS, NOW_MS - 50 * DAY_MS):
            before = reference_bars([r for r in rows if r["time"] < to_ms], res)
            for count in (1, 7, 300):
                got = await store.bars_before("BTCUSD", res, to_ms, count)
                assert_same_bars(got, before[-count:])
            want_prev = before[-1]["time"] if before else None
            assert await store.previous_bar_time("BTCUSD", res, to_ms) == want_prev, (text, to_ms)


async def test_scroll_back_pages_are_the_newest_bars_whatever_the_density(store):
    """Pages as a chart scrolling back asks them (countback, each ``to`` the previous page's
    oldest bar) over data that turns from dense to sparse, then a quiet stretch, then dense
    again: every page is exactly the newest bars before its ``to``, whatever a store
    learnt from the pages before it."""
    trades = [
        *synthetic(("BTCUSD",), days=0.1, rate=0.5, seed=7, end_ms=NOW_MS - 3 * DAY_MS),
        *synthetic(("BTCUSD",), days=1.5, rate=0.005, seed=8, end_ms=NOW_MS - DAY_MS // 2),
        *synthetic(("BTCUSD",), days=0.25, rate=0.5, seed=9),
    ]
    await store.append(trades)
    await store.run_downsampling(NOW_MS - 3_600_000)  # the newest hour from raw trades
    rows = as_dicts(trades, "BTCUSD")
    count = 100
    for text in ("1S", "1", "15", "60"):
        res = parse_resolution(text)
        reference = reference_bars(rows, res)
        for to_ms in (NOW_MS + 60_000, NOW_MS - DAY_MS // 2):
            for _ in range(40):
                want = [b for b in reference if b["time"] < to_ms][-count:]
                got = await store.bars_before("BTCUSD", res, to_ms, count)
                assert_same_bars(got, want)
                if len(got) < count:
                    break
                to_ms = got[0].time


async def test_nothing_before_the_first_trade_after_deletes_purges_and_older_trades(store):
    """A countback ending at or before a symbol's first stored trade is empty and
    previous_bar_time finds nothing there, and both stay right when a correction deletes
    the first trades, older trades are appended, the symbol is purged and written again,
    or a symbol first asked for with no trades gets some; asked before and after each
    change (a store that keeps the first trade must keep it right) and after a run."""
    resolutions = [parse_resolution(t) for t in ("1S", "1", "60", "1D")]

    async def check(symbol, trades):
        rows = as_dicts(trades, symbol)
        for res in resolutions:
            edge = res.bucket_start_ms(rows[0]["time"])
            assert await store.bars_before(symbol, res, edge, 300) == [], res.text
            assert await store.previous_bar_time(symbol, res, edge) is None, res.text
            after = res.next_start_ms(edge)
            want = reference_bars([r for r in rows if r["time"] < after], res)
            assert_same_bars(await store.bars_before(symbol, res, after, 300), want)
            assert await store.previous_bar_time(symbol, res, after) == edge, res.text

    trades = synthetic(("BTCUSD",), days=1.0, rate=0.2)
    await store.append(trades)
    await store.run_downsampling(NOW_MS)
    await check("BTCUSD", trades)
    first_ns = min(int(b.ts_ns.min()) for b in trades)
    cut_ns = first_ns + 3 * 3_600_000 * NS  # a correction removes the first three hours
    assert (await store.delete_trades("BTCUSD", from_ns=first_ns, to_ns=cut_ns)).deleted > 0
    trades = _without(trades, "BTCUSD", lambda b: b.ts_ns >= cut_ns)
    await check("BTCUSD", trades)
    older = synthetic(("BTCUSD",), days=0.5, rate=0.2, seed=11, end_ms=NOW_MS - 2 * DAY_MS)
    await store.append(older)  # older than everything stored
    trades = older + trades
    await check("BTCUSD", trades)
    await store.run_downsampling(NOW_MS)
    await check("BTCUSD", trades)
    await store.purge_symbol("BTCUSD")
    later = synthetic(("BTCUSD",), days=0.5, rate=0.2, seed=12, end_ms=NOW_MS + DAY_MS)
    await store.append(later)
    await check("BTCUSD", later)
    for res in resolutions:  # a listed symbol that has no trades yet, then gets some
        assert await store.bars_before("ETHUSD", res, NOW_MS, 300) == []
        assert await store.previous_bar_time("ETHUSD", res, NOW_MS) is None
    eth = synthetic(("ETHUSD",), days=0.5, rate=0.2, seed=13)
    await store.append(eth)
    await check("ETHUSD", eth)


async def test_lookups_symbols_last_ts_and_ids(store):
    ts = np.array([10 * NS, 10 * NS + 1, 11 * NS], dtype=np.int64)
    await store.append(
        [
            TradeColumns(
                "LTCUSD", ts + NOW_MS * NS - 20 * NS, np.array([1.0, 2, 3]), np.array([1.0, 1, 1]), ["a", None, "c"]
            )
        ]
    )
    assert "LTCUSD" in await store.symbols()
    base = NOW_MS * NS - 20 * NS
    assert await store.last_ts_ns("LTCUSD", base + 10 * NS, base + 11 * NS) == base + 10 * NS + 1
    assert await store.last_ts_ns("LTCUSD", base, base + 10 * NS) is None
    assert await store.known_ids("LTCUSD", ["a", "b", "c"]) == {"a", "c"}
    assert await store.known_ids("BTCUSD", ["a"]) == set()
    assert await store.trade_span("LTCUSD") == (base + 10 * NS, base + 11 * NS)
    assert await store.trade_span("BTCUSD") is None


async def test_newest_ids_are_where_an_exchange_source_resumes_and_survive_a_restart(kit):
    """An exchange source resumes its venue's id sequence from the newest stored ids
    (service.core.venues.tracker): newest first, trades without ids skipped, another
    symbol's ignored, bounded to the minute before the newest, and still there after a
    restart (they are the trades' own ids)."""
    sec = 1_000_000_000
    base = NOW_MS * NS - 600 * sec
    old = TradeColumns("ETHUSD", np.array([base], dtype=np.int64), np.array([1.0]), np.array([1.0]), ["1"])
    ts = base + np.array([470 * sec, 480 * sec, 500 * sec, 500 * sec + 1, 500 * sec + 2], dtype=np.int64)
    fed = TradeColumns("ETHUSD", ts, np.ones(5), np.ones(5), ["100", "101", "102", None, "103"])
    other = TradeColumns("LTCUSD", ts[4:] + sec, np.ones(1), np.ones(1), ["999"])
    first = kit.make()
    await first.start()
    try:
        assert await first.newest_ids("ETHUSD", 10) == []
        await first.append([old, fed, other])
    finally:
        await first.close()
    second = kit.make()
    await second.start()
    try:
        newest = await second.newest_ids("ETHUSD", 10)
        want = [("103", int(ts[4])), ("102", int(ts[2])), ("101", int(ts[1])), ("100", int(ts[0]))]
        assert newest == want, newest  # "1", 500 s older, is past the span
        assert await second.newest_ids("ETHUSD", 2) == want[:2]
        assert await second.newest_ids("BTCUSD", 5) == []
    finally:
        await dispose(second)


async def test_data_and_watermarks_survive_a_restart(kit):
    trades = synthetic(days=2)
    first = kit.make()
    await first.start()
    await first.append(trades)
    await first.run_downsampling(NOW_MS)
    status = await first.downsampling_status(NOW_MS)
    bars = await first.bars("BTCUSD", parse_resolution("240"), NOW_MS - 2 * DAY_MS, NOW_MS)
    await first.close()

    second = kit.make()
    await second.start()
    try:
        assert await second.downsampling_status(NOW_MS) == status
        again = await second.bars("BTCUSD", parse_resolution("240"), NOW_MS - 2 * DAY_MS, NOW_MS)
        assert again == bars  # bit-identical: sums are compensated (fsum), not order-dependent
        # resumes from its watermarks: an hour later only the lookback and the new edge run
        plan = default_plan()
        watermarks = {s.tier: s.watermark for s in status}
        report = await second.run_downsampling(NOW_MS + 3_600_000)
        assert report.ran
        for run in report.ran:
            tier = plan.tier(run.tier)
            assert run.from_ms >= tier.floor(watermarks[run.tier] - plan.lookback_ms)
    finally:
        await dispose(second)


def _with_ids(batches):
    return [
        TradeColumns(b.symbol, b.ts_ns, b.price, b.size, [f"{b.symbol}-{k}-{i}" for i in range(len(b))])
        for k, b in enumerate(batches)
    ]


def _without(batches, symbol, keep_mask_of):
    out = []
    for b in batches:
        keep = keep_mask_of(b) if b.symbol == symbol else np.ones(len(b), dtype=bool)
        out.append(
            TradeColumns(
                b.symbol,
                b.ts_ns[keep],
                b.price[keep],
                b.size[keep],
                None if b.ids is None else [i for i, k in zip(b.ids, keep) if k],
            )
        )
    return out


@pytest.mark.timeout(400)  # on InfluxDB: three full history sweeps over three days
async def test_deleted_trades_leave_every_tier_equal_to_the_reference(store):
    """Trade corrections: after deleting by range (a whole UTC day, so its 1d bar and every
    lower bar of it must disappear, and a few hours) and by id, history is exact at once,
    and after a run every tier holds exactly the bars of the trades left."""
    trades = _with_ids(synthetic(days=3, rate=0.2))
    await store.append(trades)
    await store.run_downsampling(NOW_MS)
    day_lo, day_hi = NOW_MS - 2 * DAY_MS, NOW_MS - DAY_MS
    hours_lo, hours_hi = NOW_MS - DAY_MS + 5 * 3_600_000 + 17_000, NOW_MS - DAY_MS + 8 * 3_600_000 + 3_000
    btc = [b for b in trades if b.symbol == "BTCUSD"]
    some_ids = [btc[-1].ids[i] for i in (0, 7, len(btc[-1]) // 2)]
    total = 0
    for lo, hi in ((day_lo, day_hi), (hours_lo, hours_hi)):
        deletion = await store.delete_trades("BTCUSD", from_ns=lo * NS, to_ns=hi * NS)
        want = sum(int(((b.ts_ns >= lo * NS) & (b.ts_ns < hi * NS)).sum()) for b in btc)
        assert deletion.deleted == want > 0
        assert any(c.symbol == "BTCUSD" and c.start_ms < hi and lo < c.end_ms for c in deletion.changed)
        total += deletion.deleted
    deletion = await store.delete_trades("BTCUSD", ids=some_ids + ["no-such-id"])
    assert deletion.deleted == 3

    def kept(b):
        t = b.ts_ns
        gone = ((t >= day_lo * NS) & (t < day_hi * NS)) | ((t >= hours_lo * NS) & (t < hours_hi * NS))
        return ~gone & np.array([i not in some_ids for i in b.ids])

    left = _without(trades, "BTCUSD", kept)
    await check_all_resolutions(store, left, from_ms=NOW_MS - 3 * DAY_MS)  # exact before any run
    await store.run_downsampling(NOW_MS)
    assert all(s.dirty_windows == 0 for s in await store.downsampling_status(NOW_MS))
    await check_all_resolutions(store, left, from_ms=NOW_MS - 3 * DAY_MS)
    for text in ("1", "1D"):  # the other symbol is untouched
        res = parse_resolution(text)
        got = await store.bars("ETHUSD", res, NOW_MS - 3 * DAY_MS, NOW_MS)
        assert_same_bars(got, reference_bars(as_dicts(trades, "ETHUSD"), res))
    days = await store.bars("BTCUSD", parse_resolution("1D"), NOW_MS - 3 * DAY_MS, NOW_MS)
    assert [b.time for b in days] == [NOW_MS - 3 * DAY_MS, NOW_MS - DAY_MS]  # the emptied day is gone
    assert await store.known_ids("BTCUSD", some_ids) == set()


async def test_a_delete_of_nothing_changes_nothing(store):
    trades = synthetic(days=1)
    await store.append(trades)
    await store.run_downsampling(NOW_MS)
    assert (
        await store.delete_trades("BTCUSD", from_ns=(NOW_MS + DAY_MS) * NS, to_ns=(NOW_MS + 2 * DAY_MS) * NS)
    ).deleted == 0
    assert (await store.delete_trades("BTCUSD", ids=["nope"])).deleted == 0
    await check_all_resolutions(store, trades, from_ms=NOW_MS - DAY_MS)


async def test_symbol_registry_saves_updates_and_remembers_removals_across_a_restart(kit):
    from service.core.symbols import SymbolSpec

    first = kit.make()
    await first.start()
    try:
        assert await first.symbol_specs() == []
        coin = SymbolSpec(symbol="SHIBUSD", description='Shiba "Inu", USD', tick_size=1e-8, volume_precision=0)
        await first.save_symbol(coin)
        await first.save_symbol(SymbolSpec(symbol="BTCUSD", price_band_pct=0.0, added_ms=5))
        updated = msgspec.structs.replace(coin, tick_size=1e-7, price_band_pct=12.5)
        await first.save_symbol(updated)  # an update replaces the record
        await first.save_symbol(SymbolSpec(symbol="LTCUSD", added_ms=1, removed_ms=9))  # a removal: a tombstone
    finally:
        await first.close()
    second = kit.make()
    await second.start()
    try:
        specs = {s.symbol: s for s in await second.symbol_specs()}
        assert specs == {
            "BTCUSD": SymbolSpec(symbol="BTCUSD", price_band_pct=0.0, added_ms=5),
            "LTCUSD": SymbolSpec(symbol="LTCUSD", added_ms=1, removed_ms=9),
            "SHIBUSD": updated,
        }
    finally:
        await dispose(second)


# A symbol record as earlier releases saved it, byte for byte: a DuckDB row, and an InfluxDB
# point whose ``spec`` field is the JSON of the spec, with the API's camelCase keys.
EARLIER_ROW = "INSERT INTO symbols VALUES ('SHIBUSD', 'Shiba', 1e-08, 0, 12.5, 5, 9)"
EARLIER_SPEC_JSON = (
    '{"symbol":"SHIBUSD","description":"Shiba","tickSize":1e-8,"volumePrecision":0,"priceBandPct":12.5,'
    '"addedMs":5,"removedMs":9}'
)
EARLIER_POINT = (
    'tvflux_symbol,symbol=SHIBUSD spec="' + EARLIER_SPEC_JSON.replace('"', '\\"') + '" 1700000000000000000\n'
)


async def test_a_symbol_record_saved_by_an_earlier_release_still_reads(kit):
    from service.core.symbols import SymbolSpec

    first = kit.make()
    await first.start()
    await first.close()
    if kit.kind == "duckdb":
        import duckdb

        with duckdb.connect(kit.path) as db:
            db.execute(EARLIER_ROW)
    else:
        org, bucket = kit.influx.org, f"tvflux_test_status_{kit.bucket_suffix}"
        request = urllib.request.Request(
            f"{kit.influx.url}/api/v2/write?org={org}&bucket={bucket}&precision=ns",
            data=EARLIER_POINT.encode(),
            headers={"Authorization": f"Token {kit.influx.token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 204
    spec = SymbolSpec(
        symbol="SHIBUSD",
        description="Shiba",
        tick_size=1e-8,
        volume_precision=0,
        price_band_pct=12.5,
        added_ms=5,
        removed_ms=9,
    )
    assert msgspec.json.encode(spec).decode() == EARLIER_SPEC_JSON  # and this release writes it the same
    second = kit.make()
    await second.start()
    try:
        assert await second.symbol_specs() == [spec]
    finally:
        await dispose(second)


async def test_purge_symbol_removes_its_trades_and_bars_in_every_tier_and_nothing_else(store):
    trades = synthetic(days=1)
    await store.append(trades)
    await store.run_downsampling(NOW_MS)
    day = parse_resolution("1D")
    keep = await store.bars("ETHUSD", day, NOW_MS - DAY_MS, NOW_MS)
    deleted = await store.purge_symbol("BTCUSD")
    assert deleted == sum(len(t) for t in trades if t.symbol == "BTCUSD")
    assert await store.trade_span("BTCUSD") is None
    for text in ("1S", "1", "60", "240", "1D"):  # raw trades and every tier
        assert await store.bars("BTCUSD", parse_resolution(text), NOW_MS - DAY_MS, NOW_MS) == [], text
    assert await store.bars("ETHUSD", day, NOW_MS - DAY_MS, NOW_MS) == keep
    await store.run_downsampling(NOW_MS + 3_600_000)  # nothing comes back
    assert await store.bars("BTCUSD", day, NOW_MS - DAY_MS, NOW_MS) == []
