import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.bars import LiveSeries, PartialBar, fold, merge_into
from service.core.models import Bar
from service.core.resolution import SUPPORTED, parse_resolution
from tests.reference import reference_bars

MIN = 60_000


def cols(trades):
    """(time_ms, price, size) tuples → arrays with ts_ns unique by arrival order."""
    ts_ms = np.array([t[0] for t in trades], dtype=np.int64)
    ts_ns = ts_ms * 1_000_000 + np.arange(len(trades))
    return ts_ns, np.array([t[1] for t in trades], float), np.array([t[2] for t in trades], float)


def test_fold_bucket_edges():
    res = parse_resolution("1")
    bars = fold(res, *cols([(MIN - 1, 10.0, 1.0), (MIN, 20.0, 2.0), (2 * MIN - 1, 15.0, 1.0)]))
    assert [b.to_bar() for b in bars] == [Bar(0, 10, 10, 10, 10, 1), Bar(MIN, 20, 20, 15, 15, 3)]


def test_fold_out_of_order_uses_trade_time_for_open_and_close():
    res = parse_resolution("1")
    bar = fold(res, *cols([(30_000, 5.0, 1.0), (10_000, 7.0, 1.0), (50_000, 6.0, 1.0), (20_000, 9.0, 1.0)]))[0]
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (7.0, 9.0, 5.0, 6.0, 4.0)


def test_fold_same_millisecond_keeps_arrival_order():
    res = parse_resolution("1S")
    bar = fold(res, *cols([(5, 1.0, 1.0), (5, 2.0, 1.0), (5, 3.0, 1.0)]))[0]
    assert (bar.open, bar.close) == (1.0, 3.0)


trade_lists = st.lists(
    st.tuples(st.integers(0, 120 * 86_400_000), st.floats(0.01, 1e6, allow_nan=False), st.floats(1e-6, 1e3)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(trades=trade_lists, res=st.sampled_from(SUPPORTED))
def test_fold_matches_pandas_reference(trades, res):
    resolution = parse_resolution(res)
    got = [b.to_bar() for b in fold(resolution, *cols(trades))]
    want = reference_bars([{"time": t, "price": p, "size": s} for t, p, s in trades], resolution)
    assert [b.time for b in got] == [w["time"] for w in want]
    for b, w in zip(got, want):
        assert (b.open, b.high, b.low, b.close) == (w["open"], w["high"], w["low"], w["close"])
        assert b.volume == pytest.approx(w["volume"], rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(trades=trade_lists, split=st.integers(0, 60), res=st.sampled_from(["1", "60", "1D", "1M"]))
def test_merging_partials_is_the_same_as_folding_at_once(trades, split, res):
    resolution = parse_resolution(res)
    ts, p, s = cols(trades)
    whole = {b.start_ms: b.to_bar() for b in fold(resolution, ts, p, s)}
    merged = {}
    for part in (slice(0, split), slice(split, None)):
        for b in fold(resolution, ts[part], p[part], s[part]):
            if b.start_ms in merged:
                merged[b.start_ms].merge(b)
            else:
                merged[b.start_ms] = b
    assert {k: v.to_bar() for k, v in merged.items()}.keys() == whole.keys()
    for k, bar in whole.items():
        m = merged[k].to_bar()
        assert (m.open, m.high, m.low, m.close) == (bar.open, bar.high, bar.low, bar.close)
        assert m.volume == pytest.approx(bar.volume)


def test_merge_into_adds_pending_to_stored_bars():
    stored = [Bar(0, 1, 5, 1, 4, 10), Bar(MIN, 4, 4, 3, 3, 1)]
    pending = fold(parse_resolution("1"), *cols([(MIN + 5, 9.0, 2.0), (2 * MIN, 8.0, 1.0)]))
    assert merge_into(stored, pending) == [Bar(0, 1, 5, 1, 4, 10), Bar(MIN, 4, 9, 3, 9, 3), Bar(2 * MIN, 8, 8, 8, 8, 1)]


def test_live_series_closes_on_time_not_on_next_trade():
    res = parse_resolution("1")
    live = LiveSeries(res, now_ms=0)
    up = live.apply(fold(res, *cols([(1_000, 10.0, 1.0)])))
    assert up.current == Bar(0, 10, 10, 10, 10, 1) and up.closed == [] and not up.late
    assert live.advance(MIN - 1) is None
    assert live.advance(MIN) == Bar(0, 10, 10, 10, 10, 1)
    assert live.advance(MIN + 1) is None  # nothing traded in the new minute


def test_live_series_late_trade_is_flagged_and_ignored():
    res = parse_resolution("1")
    live = LiveSeries(res, now_ms=MIN + 1)
    up = live.apply(fold(res, *cols([(MIN - 5, 99.0, 1.0), (MIN + 2, 10.0, 1.0)])))
    assert up.late and up.current == Bar(MIN, 10, 10, 10, 10, 1)


def test_live_series_new_bucket_closes_the_previous_one_first():
    res = parse_resolution("1")
    live = LiveSeries(res, now_ms=0)
    live.apply(fold(res, *cols([(1, 1.0, 1.0)])))
    up = live.apply(fold(res, *cols([(MIN + 1, 2.0, 1.0)])))
    assert up.closed == [Bar(0, 1, 1, 1, 1, 1)] and up.current == Bar(MIN, 2, 2, 2, 2, 1)


def test_live_series_starts_from_a_stored_bar():
    res = parse_resolution("1D")
    initial = PartialBar.from_bar(Bar(0, 10, 12, 9, 11, 5))
    live = LiveSeries(res, now_ms=3_600_000, initial=initial)
    up = live.apply(fold(res, *cols([(7_200_000, 13.0, 1.0)])))
    assert up.current == Bar(0, 10, 13, 9, 13, 6)
