"""History composition (service/core/segments.py): which tier answers which span."""

from __future__ import annotations

import pytest

from service.core.plan import default_plan
from service.core.resolution import DAY_MS, HOUR_MS, MINUTE_MS, parse_resolution
from service.core.segments import Segment, history_segments

PLAN = default_plan()  # 1m 5m 15m 1h 4h 1d
H, M = HOUR_MS, MINUTE_MS
ALL_AT_10H = {"1m": 10 * H, "5m": 10 * H, "15m": 10 * H, "1h": 10 * H, "4h": 8 * H, "1d": 0}


@pytest.mark.parametrize(
    "res, lo, hi, marks, dirty, want",
    [
        # empty span
        ("60", 5 * H, 5 * H, ALL_AT_10H, None, []),
        # seconds: no tier divides them, raw trades bucketed to the resolution
        ("5S", 0, M, ALL_AT_10H, None, [Segment(0, M, None, 5_000)]),
        # nothing downsampled yet: all raw, pre-aggregated to the first tier
        ("60", 0, 2 * H, {}, None, [Segment(0, 2 * H, None, M)]),
        # the serving tier up to its watermark, then raw
        ("60", 0, 12 * H, ALL_AT_10H, None, [Segment(0, 10 * H, "1h"), Segment(10 * H, 12 * H, None, M)]),
        # 4h lags 1h: 4h, then 1h past 4h's watermark, then 15m… down the chain, then raw
        (
            "240",
            0,
            12 * H,
            {**ALL_AT_10H, "1h": 9 * H, "15m": 9 * H + 30 * M, "5m": 9 * H + 50 * M},
            None,
            [
                Segment(0, 8 * H, "4h"),
                Segment(8 * H, 9 * H, "1h"),
                Segment(9 * H, 9 * H + 30 * M, "15m"),
                Segment(9 * H + 30 * M, 9 * H + 50 * M, "5m"),
                Segment(9 * H + 50 * M, 10 * H, "1m"),
                Segment(10 * H, 12 * H, None, M),
            ],
        ),
        # a tier that never ran is skipped
        (
            "60",
            0,
            3 * H,
            {"1m": 2 * H, "5m": None, "15m": None, "1h": None},
            None,
            [Segment(0, 2 * H, "1m"), Segment(2 * H, 3 * H, None, M)],
        ),
        # the whole span below the watermark: no raw segment
        ("60", 2 * H, 4 * H, ALL_AT_10H, None, [Segment(2 * H, 4 * H, "1h")]),
        # a dirty span, widened to the serving tier's grid, is read from raw trades
        (
            "60",
            0,
            10 * H,
            ALL_AT_10H,
            (3 * H + 10 * M, 3 * H + 11 * M),
            [Segment(0, 3 * H, "1h"), Segment(3 * H, 4 * H, None, M), Segment(4 * H, 10 * H, "1h")],
        ),
        # a dirty span outside the request changes nothing
        ("60", 0, 2 * H, ALL_AT_10H, (5 * H, 6 * H), [Segment(0, 2 * H, "1h")]),
        # a dirty span reaching past the request is cut at its edges
        ("60", 0, 2 * H, ALL_AT_10H, (H + 5 * M, 5 * H), [Segment(0, H, "1h"), Segment(H, 2 * H, None, M)]),
        # weekly bars are served from 1d
        (
            "1W",
            0,
            14 * DAY_MS,
            {**ALL_AT_10H, "1d": 7 * DAY_MS},
            None,
            [Segment(0, 7 * DAY_MS, "1d"), Segment(7 * DAY_MS, 14 * DAY_MS, None, M)],
        ),
    ],
)
def test_history_segments(res, lo, hi, marks, dirty, want):
    assert history_segments(PLAN, parse_resolution(res), lo, hi, marks, dirty) == want


def test_segments_tile_the_span_without_overlap():
    marks = {"1m": 10 * H, "5m": 9 * H, "15m": 9 * H, "1h": 8 * H, "4h": 8 * H, "1d": 0}
    for res in ("1", "5", "15", "60", "240", "1D"):
        segs = history_segments(PLAN, parse_resolution(res), 0, 12 * H, marks, (2 * H, 2 * H + M))
        assert segs[0].start_ms == 0 and segs[-1].stop_ms == 12 * H
        assert all(a.stop_ms == b.start_ms for a, b in zip(segs, segs[1:]))
