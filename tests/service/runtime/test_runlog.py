"""Each tier's recent runs, and a backfill's progress and expected finish."""

from __future__ import annotations

from service.core.models import TierRun, TierStatus
from service.runtime.runlog import RUNS_KEPT, RunLog

HOUR = 3_600_000
DAY = 24 * HOUR


def status(tier: str, watermark: int | None, lag: int | None) -> TierStatus:
    return TierStatus(tier, "trades", watermark, lag, None, None, 0, None)


def test_recent_runs_are_kept_per_tier_most_recent_first_and_bounded():
    log = RunLog()
    for i in range(RUNS_KEPT + 5):
        log.record(
            [
                TierRun("1m", rows=i, duration_ms=1.5, from_ms=i * 60_000, to_ms=(i + 1) * 60_000),
                TierRun("5m", rows=1, duration_ms=2.0, from_ms=0, to_ms=300_000),
            ],
            now_ms=1_000 + i,
        )
    runs = log.runs("1m")
    assert len(runs) == RUNS_KEPT and runs[0].rows == RUNS_KEPT + 4 and runs[0].time == 1_000 + RUNS_KEPT + 4
    assert (runs[0].from_ms, runs[0].to_ms, runs[0].duration_ms, runs[0].error) == (
        (RUNS_KEPT + 4) * 60_000,
        (RUNS_KEPT + 5) * 60_000,
        1.5,
        None,
    )
    log.record_failure("store down", now_ms=9_999)
    assert log.runs("1m")[0].error == "store down" and log.runs("5m")[0].error == "store down"
    assert log.runs("1h") == []


def test_a_tier_at_the_live_edge_has_no_backfill():
    log = RunLog()
    now = 100 * DAY
    [t] = log.annotate([status("1m", now - 2 * 60_000, 2 * 60_000)], now)
    assert t.backfill is None and t.recent_runs == []
    [d] = log.annotate([status("1d", now - DAY - HOUR, DAY + HOUR)], now)  # 1d normally trails a day
    assert d.backfill is None


def test_backfill_progress_and_expected_finish_from_the_watermarks_advance():
    log = RunLog()
    now = 400 * DAY
    start = now - 300 * DAY  # the watermark starts 300 days behind
    [first] = log.annotate([status("1m", start, now - start)], now)
    assert first.backfill is not None and first.backfill.progress == 0.0
    assert first.backfill.expected_finish is None  # one sample: no rate yet
    # 10 s later it advanced 30 days: 3 days per second, 270 days left → 90 s
    now += 10_000
    wm = start + 30 * DAY
    [t] = log.annotate([status("1m", wm, now - wm)], now)
    b = t.backfill
    assert b is not None
    assert b.from_ms == start and b.to_ms == now
    assert abs(b.progress - 30 / (300 + 10_000 / DAY)) < 1e-3
    assert b.range_per_s == 3 * DAY
    assert abs(b.expected_finish - (now + (now - wm) / (3 * DAY / 1000))) < 2
