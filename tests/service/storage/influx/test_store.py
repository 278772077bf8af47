"""InfluxStore without an InfluxDB server: against a fake of the HTTP API on 127.0.0.1
(real aiohttp server, real influxdb-client over real sockets), plus the pure parts —
backoff, CSV reading, history segments and exact composition."""

from __future__ import annotations

import asyncio
import random
import socket

import numpy as np
import pytest

from service.core.errors import InvalidTrade, StoreUnavailable
from service.core.models import TradeColumns
from service.core.plan import build_plan, default_plan
from service.core.resolution import DAY_MS, HOUR_MS, MINUTE_MS, SUPPORTED, parse_resolution
from service.core.settings import Secret, Settings
from service.storage.influx import flux_render as fr
from service.storage.influx.compose import BarRows, CsvReader, QueryFailed, Rows, Segment, compose, plan_segments
from service.storage.influx.lineproto import encode_bars
from service.storage.influx.retry import RetryPolicy, backoff_s, is_retryable, retry_after_s
from service.storage.influx.store import InfluxStore
from tests.reference import reference_bars
from tests.service.storage.influx.fake_influx import ORG, TOKEN, FakeInflux, csv_tables

NS = 1_000_000
T0_MS = 1_700_006_400_000 - 2 * DAY_MS  # 2023-11-13 00:00 UTC
FAST = RetryPolicy(attempts=3, base_s=0.01, cap_s=0.05, connect_timeout_s=2, read_timeout_s=10)


@pytest.fixture
async def fake():
    server = await FakeInflux().start()
    yield server
    await server.stop()


def settings_for(url: str, **kw) -> Settings:
    base = dict(store="influx", influx_url=url, influx_token=Secret(TOKEN), influx_org=ORG)
    base.update(kw)
    return Settings(**base)


@pytest.fixture
async def store(fake):
    s = InfluxStore(settings_for(fake.url), default_plan(), retry=FAST, schedule_tasks=False)
    await s.start()
    yield s
    await s.close()


def trades(symbol="BTCUSD", n=1_000, start_ms=T0_MS, span_ms=DAY_MS, seed=1, ids=False) -> TradeColumns:
    rng = np.random.default_rng(seed)
    ms = np.sort(start_ms + rng.integers(0, span_ms, n))
    ts = ms * NS + np.arange(n) % 1000  # unique within the ms, like the allocator makes them
    price = np.round(100 + rng.standard_normal(n).cumsum(), 2)
    size = np.round(rng.exponential(1.0, n), 6)
    return TradeColumns(symbol, ts.astype(np.int64), price, size, [f"id-{i}" for i in range(n)] if ids else None)


def tier_resolution(size_ms: int):
    if size_ms % DAY_MS == 0:
        return parse_resolution(f"{size_ms // DAY_MS}D")
    if size_ms % MINUTE_MS == 0:
        return parse_resolution(str(size_ms // MINUTE_MS))
    return parse_resolution(f"{size_ms // 1000}S")


def as_dicts(cols: TradeColumns) -> list[dict]:
    return [
        {"time": int(t) // NS, "price": float(p), "size": float(s)}
        for t, p, s in zip(cols.ts_ns, cols.price, cols.size)
    ]


# --- start: setup and clear failures --------------------------------------------------


async def test_start_creates_buckets_and_tasks_once(fake) -> None:
    settings = settings_for(fake.url, influx_raw_retention_s=86_400)
    s = InfluxStore(settings, default_plan(), retry=FAST)
    await s.start()
    await s.close()
    assert sorted(fake.buckets) == ["bars", "trades", "tvflux_status"]
    assert fake.buckets["trades"]["retentionRules"][0]["everySeconds"] == 86_400
    assert fake.buckets["bars"]["retentionRules"] == []
    by_name = {t["name"]: t for t in fake.tasks.values()}
    for tier in default_plan().tiers:
        assert by_name[f"tvflux-bars-{tier.name}"]["flux"] == fr.render_task(default_plan(), tier)

    def changes():
        return [r for r in fake.requests if r[0] in ("POST", "PATCH") and r[1] != "/api/v2/query"]

    before = changes()
    again = InfluxStore(settings, default_plan(), retry=FAST)
    await again.start()
    await again.close()
    assert changes() == before  # idempotent: nothing created or rewritten


async def test_setup_updates_changed_tasks_and_retention(fake) -> None:
    s = InfluxStore(settings_for(fake.url), default_plan(), retry=FAST)
    await s.start()
    await s.close()
    ids = {t["name"]: t["id"] for t in fake.tasks.values()}
    custom = build_plan(["1m", "5m", "15m", "1h", "4h", "1d"], lookback_ms=60_000)
    s = InfluxStore(settings_for(fake.url, influx_raw_retention_s=3600), custom, retry=FAST, schedule_tasks=False)
    await s.start()
    await s.close()
    assert {t["name"]: t["id"] for t in fake.tasks.values()} == ids  # updated in place
    assert all("lookbackNs = 60000000000" in t["flux"] and "cron:" in t["flux"] for t in fake.tasks.values())
    assert fake.buckets["trades"]["retentionRules"][0]["everySeconds"] == 3600


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"influx_url": f"http://127.0.0.1:{closed_port()}"}, "unreachable"),
        ({"influx_token": Secret("wrong")}, "rejected the token"),
        ({"influx_org": "nope"}, "nope"),
        ({"influx_url": ""}, "TVFLUX_INFLUX_URL"),
    ],
    ids=["unreachable", "bad-token", "unknown-org", "no-url"],
)
async def test_start_fails_with_a_clear_message(fake, change, message) -> None:
    settings = settings_for(fake.url, **change)
    s = InfluxStore(settings, default_plan(), retry=FAST)
    with pytest.raises(StoreUnavailable, match=message):
        await s.start()
    assert (await s.health()).ok is False


async def test_missing_bucket_without_setup_says_what_to_do(fake) -> None:
    s = InfluxStore(settings_for(fake.url), default_plan(), retry=FAST, auto_setup=False)
    with pytest.raises(StoreUnavailable, match=r"missing.*tvflux influx setup"):
        await s.start()


async def test_health_reports_a_lost_server(fake) -> None:
    s = InfluxStore(settings_for(fake.url), default_plan(), retry=FAST)
    await s.start()
    try:
        assert (await s.health()).ok
        await fake.stop()
        health = await s.health()
        assert not health.ok and "unreachable" in health.error
    finally:
        await s.close()


# --- writes: batching, gzip, retry ----------------------------------------------------


async def test_append_batches_gzips_and_stores_every_trade_exactly(store, fake) -> None:
    cols = [trades("BTCUSD", 7_000, seed=1, ids=True), trades("ETH USD,x=1", 5_345, seed=2)]
    await store.append(cols)
    raw = [w for w in fake.writes if w["bucket"] == "trades"]
    assert [w["lines"] for w in raw] == [5_000, 5_000, 2_345]
    assert all(w["gzip"] and w["precision"] == "ns" for w in raw)
    assert sum(w["bytes"] for w in raw) < sum(w["lines"] for w in raw) * 40  # compressed
    stored = {(tags["symbol"], t): fields for _, tags, fields, t in fake.points["trades"]}
    assert len(stored) == 12_345
    for c in cols:
        for i in range(0, len(c), 97):
            fields = stored[(c.symbol, int(c.ts_ns[i]))]
            assert fields["price"] == c.price[i] and fields["size"] == c.size[i]
            assert fields.get("id") == (c.ids[i] if c.ids else None)


async def test_equal_timestamps_in_one_batch_become_distinct_points(store, fake) -> None:
    ts = np.full(3, T0_MS * NS, dtype=np.int64)
    await store.append([TradeColumns("BTCUSD", ts, np.array([1.0, 2.0, 3.0]), np.ones(3))])
    assert len({t for _, _, _, t in fake.points["trades"]}) == 3


async def test_late_trades_leave_a_dirty_marker_after_the_trades(store, fake) -> None:
    await store.append([trades(n=50, start_ms=T0_MS + 5 * MINUTE_MS + 7, span_ms=3 * MINUTE_MS)])
    writes = [w["bucket"] for w in fake.writes]
    assert writes == ["trades", "tvflux_status"]
    (marker,) = [p for p in fake.points["tvflux_status"] if p[0] == "tvflux_dirty"]
    _, tags, fields, _ = marker
    assert tags == {"tier": "1m"}
    assert fields["start_ms"] == T0_MS + 5 * MINUTE_MS and fields["end_ms"] <= T0_MS + 9 * MINUTE_MS
    assert fields["end_ms"] % MINUTE_MS == 0


async def test_unstorable_values_are_refused_before_any_write(store, fake) -> None:
    bad = TradeColumns("BTCUSD", np.array([T0_MS * NS]), np.array([1.0]), np.array([1.0]), ["line\nbreak"])
    with pytest.raises(InvalidTrade, match="line break"):
        await store.append([trades(n=3), bad])
    assert fake.writes == []


async def test_writes_retry_server_errors_then_succeed(store, fake) -> None:
    fake.write_failures = [503, 500]
    await store.append([trades(n=10)])
    raw = [w for w in fake.writes if w["bucket"] == "trades"]
    assert len(raw) == 3 and len(fake.points["trades"]) == 10


async def test_writes_give_up_with_store_unavailable_after_the_attempts(store, fake) -> None:
    fake.write_failures = [503] * 3
    with pytest.raises(StoreUnavailable, match="after 3 attempts"):
        await store.append([trades(n=10)])
    assert len([w for w in fake.writes if w["bucket"] == "trades"]) == 3


@pytest.mark.parametrize(("status", "message"), [(400, "HTTP 400"), (401, "token"), (404, "not found")])
async def test_client_errors_are_not_retried(store, fake, status, message) -> None:
    fake.write_failures = [status]
    with pytest.raises(StoreUnavailable, match=message):
        await store.append([trades(n=10)])
    assert len([w for w in fake.writes if w["bucket"] == "trades"]) == 1


async def test_writes_to_a_vanished_server_fail_clearly(store, fake) -> None:
    await fake.stop()
    with pytest.raises(StoreUnavailable, match="did not take a write"):
        await store.append([trades(n=10)])


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    policy = RetryPolicy(base_s=0.25, cap_s=8.0)
    assert [backoff_s(policy, k, 0.999999) for k in range(7)] == pytest.approx([0.25, 0.5, 1, 2, 4, 8, 8], rel=1e-5)
    assert backoff_s(policy, 3, 0.0) == 0.0
    rng = random.Random(1)
    samples = [backoff_s(policy, 2, rng.random()) for _ in range(2000)]
    assert 0 <= min(samples) < 0.05 and 0.95 < max(samples) <= 1.0  # spread over [0, 1]
    assert backoff_s(policy, 0, 0.5, retry_after_s=3.0) == 3.0
    assert backoff_s(policy, 0, 0.5, retry_after_s=600.0) == 60.0


def test_retry_classification() -> None:
    from influxdb_client.rest import ApiException

    assert is_retryable(ConnectionResetError()) and is_retryable(TimeoutError())
    assert is_retryable(ApiException(status=503)) and is_retryable(ApiException(status=429))
    assert not is_retryable(ApiException(status=400)) and not is_retryable(ApiException(status=401))
    assert not is_retryable(ValueError())


def test_retry_after_is_read_from_influxdbs_answer() -> None:
    from influxdb_client.rest import ApiException

    busy = ApiException(status=429)
    busy.headers = {"Retry-After": "3"}  # as the async client keeps the response's headers
    assert retry_after_s(busy) == 3.0
    busy.headers = {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}
    assert retry_after_s(busy) is None
    assert retry_after_s(ApiException(status=503)) is None and retry_after_s(TimeoutError()) is None


# --- reads through the fake -----------------------------------------------------------


async def seed_tier(fake, tier: str, symbol: str, rows: list[dict], wm_ms: int, bucket: str = "bars") -> None:
    rows = [r for r in rows if r["time"] < wm_ms]
    if rows:
        fake.put(
            bucket,
            encode_bars(
                f"bars_{tier}",
                symbol,
                [r["time"] for r in rows],
                [r["open"] for r in rows],
                [r["high"] for r in rows],
                [r["low"] for r in rows],
                [r["close"] for r in rows],
                [r["volume"] for r in rows],
                [1] * len(rows),
            ),
        )
    fake.status_point("tvflux_watermark", tier, "watermark_ms", wm_ms, wm_ms * NS)


async def test_history_composes_tiers_and_raw_exactly(store, fake) -> None:
    cols = trades(n=3_000, span_ms=2 * DAY_MS, seed=7)
    await store.append([cols])
    all_rows = as_dicts(cols)
    # as if the tasks had run partially: tiers finished up to different points
    marks = {
        "1m": T0_MS + 40 * HOUR_MS,
        "5m": T0_MS + 30 * HOUR_MS,
        "15m": T0_MS + 20 * HOUR_MS,
        "1h": T0_MS + 18 * HOUR_MS,
        "4h": T0_MS + 16 * HOUR_MS,
        "1d": T0_MS + DAY_MS,
    }
    for tier in default_plan().tiers:
        rows = reference_bars(all_rows, tier_resolution(tier.size_ms))
        await seed_tier(fake, tier.name, "BTCUSD", rows, marks[tier.name])
    await store._read_status(force=True)  # noqa: SLF001 - skip the watermark cache
    for text in SUPPORTED:
        res = parse_resolution(text)
        lo, hi = res.bucket_start_ms(T0_MS), T0_MS + 2 * DAY_MS
        want = [w for w in reference_bars(all_rows, res) if lo <= w["time"] < hi]
        got = await store.bars("BTCUSD", res, lo, hi)
        assert [b.time for b in got] == [w["time"] for w in want], text
        for b, w in zip(got, want):
            assert (b.open, b.high, b.low, b.close) == (w["open"], w["high"], w["low"], w["close"]), text
            assert b.volume == pytest.approx(w["volume"], rel=1e-9)
    # the 1D request was answered from the 1d tier below its watermark, then the chain
    assert any('"bars_1d"' in q for q in fake.queries) and any('"bars_1m"' in q for q in fake.queries)


async def test_lookups(store, fake) -> None:
    cols = trades("LTC USD", n=20, seed=3, ids=True)
    await store.append([cols, trades("BTCUSD", n=5, seed=4)])
    assert await store.symbols() == ["BTCUSD", "LTC USD"]
    lo, hi = int(cols.ts_ns[3]), int(cols.ts_ns[10])
    assert await store.last_ts_ns("LTC USD", lo, hi) == int(cols.ts_ns[9])
    assert await store.last_ts_ns("LTC USD", hi, hi) is None
    assert await store.known_ids("LTC USD", ["id-1", "id-19", "nope", 'we"ird,']) == {"id-1", "id-19"}
    assert await store.known_ids("BTCUSD", ["id-1"]) == set()
    res = parse_resolution("60")
    last_ms = int(cols.ts_ns[-1]) // NS
    assert await store.previous_bar_time("LTC USD", res, last_ms + DAY_MS) == res.bucket_start_ms(last_ms)
    assert await store.previous_bar_time("LTC USD", res, int(cols.ts_ns[0]) // NS) is None


async def test_query_errors_inside_the_response_raise(store, fake) -> None:
    fake.query_error = "runtime error: something broke"
    with pytest.raises(StoreUnavailable, match="something broke"):
        await store.symbols()


# --- downsampling through the fake ------------------------------------------------------


async def test_run_downsampling_triggers_runs_until_the_edge(store, fake) -> None:
    now_ms = T0_MS + 3 * DAY_MS
    plan = default_plan()

    def play(task_name: str, run: dict) -> None:
        # stand in for the task: advance the watermark by one chunk towards the edge
        tier = plan.tier(task_name.rsplit("-", 1)[1])
        assert run["scheduledFor"].startswith("2023-11-16T00:00:00")
        wms = {m[1]["tier"]: m[2]["watermark_ms"] for m in fake.points["tvflux_status"] if m[0] == "tvflux_watermark"}
        src = None if tier.source == "trades" else wms.get(tier.source)
        window = plan.next_window(
            tier, watermark_ms=wms.get(tier.name), source_watermark_ms=src, earliest_ms=T0_MS, now_ms=now_ms
        )
        if window is not None:
            fake.status_point("tvflux_watermark", tier.name, "watermark_ms", window.end_ms, window.end_ms * NS)
            fake.status_point("tvflux_run", tier.name, "rows", 7, window.end_ms * NS)

    fake.on_run = play
    report = await store.run_downsampling(now_ms, max_windows=2)
    assert [r.tier for r in report.ran] == ["1m", "1m"]
    report = await store.run_downsampling(now_ms)
    assert report.ran and report.ran[-1].tier == "1d"
    status = {s.tier: s for s in await store.downsampling_status(now_ms)}
    assert status["1m"].watermark == plan.tiers[0].floor(now_ms - plan.grace_ms)
    assert all(s.watermark is not None and s.rows == 7 and s.error is None for s in status.values())
    assert (await store.run_downsampling(now_ms)).ran == []


async def test_a_tier_that_found_no_data_waits_for_new_trades(store, fake) -> None:
    runs = lambda: sum(len(r) for r in fake.runs.values())  # noqa: E731
    assert [r.tier for r in (await store.run_downsampling(T0_MS)).ran] == ["1m"]  # one look
    assert (await store.run_downsampling(T0_MS)).ran == [] and runs() == 1  # no polling
    await store.append([trades(n=5)])
    assert [r.tier for r in (await store.run_downsampling(T0_MS + DAY_MS)).ran] == ["1m"]
    assert runs() == 2


async def test_runs_not_yet_visible_are_waited_for(store, fake) -> None:
    fake.hidden_polls = 3
    report = await store.run_downsampling(T0_MS + 1_234)
    assert [r.tier for r in report.ran] == ["1m"] and fake.hidden_polls == 0
    (run,) = fake.runs[next(iter(fake.runs))]
    assert run["scheduledFor"].startswith("2023-11-13T00:00:01")  # whole seconds, like InfluxDB


async def test_a_failed_run_is_reported_with_its_log(store, fake) -> None:
    fake.run_status = "failed"
    fake.run_log = ["error exhausting result iterator: bucket not found"]
    with pytest.raises(StoreUnavailable, match="bucket not found"):
        await store.run_downsampling(T0_MS)
    status = {s.tier: s for s in await store.downsampling_status(T0_MS)}
    assert "bucket not found" in status["1m"].error


async def test_status_counts_pending_dirty_markers_and_reports_consumed_ones(store, fake) -> None:
    now_ms = T0_MS + DAY_MS
    fake.status_point("tvflux_watermark", "1m", "watermark_ms", now_ms - MINUTE_MS, 1)
    await store.append([trades(n=5, start_ms=now_ms - HOUR_MS, span_ms=MINUTE_MS)])
    status = {s.tier: s for s in await store.downsampling_status(now_ms)}
    assert status["1m"].dirty_windows == 1 and status["5m"].dirty_windows == 0
    marker_ns = max(t for m, _, _, t in fake.points["tvflux_status"] if m == "tvflux_dirty")
    fake.on_run = lambda name, run: fake.status_point("tvflux_dirty_cursor", "1m", "marker_ns", marker_ns, marker_ns)
    report = await store.run_downsampling(now_ms, max_windows=1)
    assert [(c.symbol, c.start_ms <= now_ms - HOUR_MS < c.end_ms) for c in report.changed] == [("BTCUSD", True)]
    assert {s.tier: s for s in await store.downsampling_status(now_ms)}["1m"].dirty_windows == 0


# --- pure parts ---------------------------------------------------------------------------


def test_csv_reader_handles_tables_quotes_and_errors() -> None:
    text = csv_tables(
        [(["t", "f", "v"], [[1, "open", 1.5], [2, "open", 2.5]]), (["x", "t", "f", "v"], [["a,b", 3, 'c"d', 0.1]])]
    )
    rows = list(CsvReader(("t", "f", "v")).rows(text.splitlines(keepends=True)))
    assert rows == [("1", "open", "1.5"), ("2", "open", "2.5"), ("3", 'c"d', "0.1")]
    with pytest.raises(QueryFailed, match="boom"):
        list(CsvReader(("t",)).rows(["error,reference\r\n", "boom,12\r\n"]))
    with pytest.raises(QueryFailed, match="lacks columns"):
        list(CsvReader(("t", "nope")).rows([",result,table,t\r\n", ",_result,0,1\r\n"]))


def brute_bars(rows: list[dict], size_ms: int) -> Rows:
    out = BarRows()
    for bar in reference_bars(rows, tier_resolution(size_ms)):
        for f in ("open", "high", "low", "close", "volume"):
            out.add(bar["time"], f, bar[f])
    return out.sorted()


@pytest.mark.parametrize("seed", range(4))
def test_segments_compose_to_exact_bars_for_every_resolution(seed: int) -> None:
    """Whatever the watermarks, tier bars below them plus raw above them give exactly the
    bars computed from all trades (the pandas reference)."""
    rng = random.Random(seed)
    plan = default_plan()
    cols = trades(n=2_000, span_ms=3 * DAY_MS, seed=seed)
    rows = as_dicts(cols)
    marks: dict[str, int | None] = {}
    upper = T0_MS + 3 * DAY_MS
    for tier in plan.tiers:  # smaller tiers first: each at most its source's watermark
        bound = upper if tier.source == "trades" else marks[tier.source]
        marks[tier.name] = None if bound is None or rng.random() < 0.15 else tier.floor(rng.randrange(T0_MS, bound + 1))
    for text in SUPPORTED:
        res = parse_resolution(text)
        lo = res.bucket_start_ms(T0_MS + rng.randrange(0, DAY_MS))
        hi = lo + rng.randrange(1, 3 * DAY_MS)
        parts = []
        for seg in plan_segments(plan, res, lo, hi, marks):
            size = plan.tier(seg.tier).size_ms if seg.tier else seg.every_ms
            inside = [r for r in brute_bars(rows, size) if seg.start_ms <= r[0] < seg.stop_ms]
            parts.append(inside)
        got = compose(parts, res, lo, hi)
        end = res.next_start_ms(res.bucket_start_ms(hi - 1))
        want = [w for w in reference_bars([r for r in rows if lo <= r["time"] < end], res) if w["time"] < hi]
        assert [b.time for b in got] == [w["time"] for w in want], (text, marks)
        for b, w in zip(got, want):
            assert (b.open, b.high, b.low, b.close) == (w["open"], w["high"], w["low"], w["close"])
            assert b.volume == pytest.approx(w["volume"], rel=1e-9)


def test_segments_follow_the_chain_and_never_overlap() -> None:
    plan = default_plan()
    res = parse_resolution("1D")
    marks = {
        "1m": 10 * DAY_MS + 7 * MINUTE_MS,
        "5m": 10 * DAY_MS + 5 * MINUTE_MS,
        "15m": 10 * DAY_MS,
        "1h": 9 * DAY_MS + 5 * HOUR_MS,
        "4h": 9 * DAY_MS + 4 * HOUR_MS,
        "1d": 9 * DAY_MS,
    }
    segs = plan_segments(plan, res, 5 * DAY_MS, 11 * DAY_MS, marks)
    assert segs == [
        Segment(5 * DAY_MS, 9 * DAY_MS, "1d"),
        Segment(9 * DAY_MS, 9 * DAY_MS + 4 * HOUR_MS, "4h"),
        Segment(9 * DAY_MS + 4 * HOUR_MS, 9 * DAY_MS + 5 * HOUR_MS, "1h"),
        Segment(9 * DAY_MS + 5 * HOUR_MS, 10 * DAY_MS, "15m"),
        Segment(10 * DAY_MS, 10 * DAY_MS + 5 * MINUTE_MS, "5m"),
        Segment(10 * DAY_MS + 5 * MINUTE_MS, 10 * DAY_MS + 7 * MINUTE_MS, "1m"),
        Segment(10 * DAY_MS + 7 * MINUTE_MS, 11 * DAY_MS, None, MINUTE_MS),
    ]
    assert plan_segments(plan, parse_resolution("5S"), 0, 60_000, marks) == [Segment(0, 60_000, None, 5_000)]
    assert plan_segments(plan, res, 5 * DAY_MS, 5 * DAY_MS, marks) == []


# --- the CLI, against the fake in a thread of its own -------------------------------------


@pytest.fixture
def threaded_fake():
    import threading

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        holder["fake"] = loop.run_until_complete(FakeInflux().start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield holder["fake"]
    asyncio.run_coroutine_threadsafe(holder["fake"].stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_cli_setup_and_status(threaded_fake, capsys) -> None:
    import argparse

    from service.ops.influx_cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    settings = settings_for(threaded_fake.url, influx_raw_retention_s=7 * 86_400)
    args = parser.parse_args(["influx", "setup"])
    assert args.func(args, settings) == 0
    out = capsys.readouterr().out
    assert "bucket trades: created" in out and "task tvflux-bars-1d: created" in out
    assert args.func(args, settings) == 0
    assert "task tvflux-bars-1m: unchanged" in capsys.readouterr().out
    threaded_fake.status_point("tvflux_watermark", "1m", "watermark_ms", T0_MS, T0_MS * NS)
    args = parser.parse_args(["influx", "status", "--runs", "2"])
    assert args.func(args, settings) == 0
    out = capsys.readouterr().out
    assert "tier   1m from trades watermark 2023-11-13 00:00:00 UTC" in out
    assert "tier   5m from 1m     watermark -" in out
    bad = settings_for(threaded_fake.url, influx_token=Secret("nope"))
    args = parser.parse_args(["influx", "setup"])  # the setup command's own arguments (--task-every-s)
    assert args.func(args, bad) == 2
    assert "rejected the token" in capsys.readouterr().err
