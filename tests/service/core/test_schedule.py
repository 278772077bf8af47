"""The scheduler's rules (service/core/schedule.py): late windows, dirty windows and
their hand-on to higher tiers, the gap jump. Times in minutes for readability."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.plan import Window, default_plan
from service.core.resolution import MINUTE_MS
from service.core.schedule import DirtyWindow, closed_part, dirty_dependents, late_window, watermark_after

PLAN = default_plan()  # 1m 5m 15m 1h 4h 1d; lookback 5m, grace 5s
M = MINUTE_MS
T1M, T5M, T15M, T1H = (PLAN.tier(n) for n in ("1m", "5m", "15m", "1h"))


def ns(*ms: int) -> np.ndarray:
    return np.array(ms, dtype=np.int64) * 1_000_000


@pytest.mark.parametrize(
    "ts, edge_ms, want",
    [
        (ns(), 10 * M, None),
        (ns(10 * M, 11 * M), 10 * M, None),  # at or past the edge: not late
        (ns(3 * M + 5), 10 * M, Window(3 * M, 4 * M)),  # one trade: its bar
        (ns(12 * M, 3 * M + 5, 7 * M + 59_999), 10 * M, Window(3 * M, 8 * M)),  # earliest bar to latest bar's end
        (ns(10 * M - 1), 10 * M, Window(9 * M, 10 * M)),
    ],
)
def test_late_window(ts, edge_ms, want):
    assert late_window(T1M, ts, edge_ms) == want


@pytest.mark.parametrize(
    "tier, lo, hi, wm, want",
    [
        (T5M, 7 * M, 8 * M, 60 * M, Window(5 * M, 10 * M)),  # widened to whole bars
        (T5M, 7 * M, 21 * M, 15 * M, Window(5 * M, 15 * M)),  # only below the watermark
        (T5M, 20 * M, 21 * M, 15 * M, Window(20 * M, 15 * M)),  # all above it: empty
        (T5M, 7 * M, 8 * M, None, Window(5 * M, 5 * M)),  # never ran: empty
    ],
)
def test_closed_part(tier, lo, hi, wm, want):
    assert closed_part(tier, lo, hi, wm) == want


@pytest.mark.parametrize(
    "tier, rebuilt, marks, want",
    [
        (T1M, Window(7 * M, 8 * M), {"5m": 60 * M}, [DirtyWindow("5m", 5 * M, 10 * M)]),
        (T1M, Window(3 * M, 12 * M), {"5m": 10 * M}, [DirtyWindow("5m", 0, 10 * M)]),  # capped at its watermark
        (T1M, Window(7 * M, 8 * M), {"5m": 7 * M}, []),  # not yet built that far: a regular run will
        (T1M, Window(7 * M, 8 * M), {"5m": None}, []),  # never ran
        (T1M, Window(7 * M, 7 * M), {"5m": 60 * M}, []),  # nothing rebuilt, nothing handed on
        (T15M, Window(15 * M, 30 * M), {"1h": 120 * M}, [DirtyWindow("1h", 0, 60 * M)]),
    ],
)
def test_dirty_dependents(tier, rebuilt, marks, want):
    assert dirty_dependents(PLAN, tier, rebuilt, marks) == want


NOW = 1000 * M


@pytest.mark.parametrize(
    "has_rows, nxt, src_wm, want",
    [
        (True, None, None, 20 * M),  # data in the window: its end
        (False, 500 * M + 30_000, None, 500 * M),  # empty: jump to the next source row's bar
        (False, None, None, PLAN.edge_ms(T1M, source_watermark_ms=None, now_ms=NOW)),  # nothing after: the edge
        (False, 5000 * M, None, PLAN.edge_ms(T1M, source_watermark_ms=None, now_ms=NOW)),  # never past the edge
        (False, 15 * M, None, 20 * M),  # never behind the window's end
    ],
)
def test_watermark_after_raw_tier(has_rows, nxt, src_wm, want):
    window = Window(10 * M, 20 * M)
    assert (
        watermark_after(
            PLAN, T1M, window, source_has_rows=has_rows, next_source_ms=nxt, source_watermark_ms=src_wm, now_ms=NOW
        )
        == want
    )


def test_watermark_after_is_capped_by_the_source_watermark():
    window = Window(0, 60 * M)
    assert (
        watermark_after(
            PLAN, T1H, window, source_has_rows=False, next_source_ms=None, source_watermark_ms=185 * M, now_ms=NOW
        )
        == 180 * M
    )
