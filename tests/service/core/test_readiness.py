"""The readiness judgement: every reason, and the per-tier lag limits the plan implies."""

from __future__ import annotations

import pytest

from service.core.models import TierStatus
from service.core.plan import build_plan, default_plan
from service.core.readiness import Thresholds, WriterState, assess, max_tier_lags_ms, scheduler_period_ms

MIN = 60_000
PLAN = default_plan()  # 1m 5m 15m 1h 4h 1d, grace 5 s
IDLE_WRITER = WriterState(pending_rows=0, oldest_pending_age_s=0.0, flush_interval_s=0.2)


def tier(name: str, lag_ms: int | None, error: str | None = None) -> TierStatus:
    return TierStatus(
        tier=name,
        source="",
        watermark=None if lag_ms is None else 0,
        lag_ms=lag_ms,
        last_run=None,
        last_duration_ms=None,
        rows=0,
        error=error,
    )


def judge(**kw):
    args = dict(
        running=True,
        store_ok=True,
        store_error=None,
        writer=IDLE_WRITER,
        tiers=[],
        downsampler_error=None,
        plan=PLAN,
        period_ms=2000,
        thresholds=Thresholds(writer_lag_s=30, downsampling_slack_s=300),
    )
    args.update(kw)
    return assess(**args)


def test_limits_follow_the_chain_of_each_tier():
    limits = max_tier_lags_ms(PLAN, period_ms=2000, slack_ms=0)
    # 1m: grace + 1m + one period; 5m: grace + 1m + 5m + two periods; …
    assert limits["1m"] == 5000 + MIN + 2000
    assert limits["5m"] == 5000 + MIN + 5 * MIN + 2 * 2000
    assert limits["1d"] == 5000 + (1 + 5 + 15 + 60 + 240 + 1440) * MIN + 6 * 2000
    coarse = build_plan(("1m", "1h"), grace_ms=0)
    assert max_tier_lags_ms(coarse, period_ms=0, slack_ms=10)["1h"] == 61 * MIN + 10


@pytest.mark.parametrize(
    "in_database, interval_ms, period",
    [
        (False, 2000, 2000),
        (False, 0, None),  # DuckDB
        (True, 0, 60_000),
        (True, 120_000, 120_000),
    ],
)  # Influx
def test_scheduler_period(in_database, interval_ms, period):
    assert scheduler_period_ms(in_database, interval_ms) == period


def test_all_well_is_ready():
    limits = max_tier_lags_ms(PLAN, 2000, 300_000)
    verdict = judge(tiers=[tier(t.name, limits[t.name]) for t in PLAN.tiers])  # exactly at the limit: fine
    assert verdict.ready and verdict.reasons == [] and verdict.store_ok
    assert all(t.ok for t in verdict.tiers)


@pytest.mark.parametrize(
    "kw, reason",
    [
        (dict(running=False), "starting or stopping"),
        (dict(store_ok=False, store_error="gone"), "store: gone"),
        (dict(writer=WriterState(10, 1.0, 0.2, last_error="disk full")), "writer: disk full"),
        (dict(writer=WriterState(10, 1.0, 0.2, spilling=True, spilled_rows=7)), "writer: 7 trades wait in the spool"),
        (
            dict(writer=WriterState(10, 31.0, 0.2)),
            "writer: the oldest of 10 trades has waited 31s for the store (limit 30s)",
        ),
        (dict(downsampler_error="boom"), "downsampling: boom"),
        (dict(tiers=[tier("1m", 10, error="bad sql")]), "downsampling: tier 1m: bad sql"),
        (
            dict(tiers=[tier("5m", 5000 + 6 * MIN + 4000 + 300_000 + 1)]),
            "downsampling: tier 5m is 669s behind (limit 669s)",
        ),
    ],
)
def test_each_problem_is_a_reason(kw, reason):
    verdict = judge(**kw)
    assert not verdict.ready
    assert any(r.startswith(reason) for r in verdict.reasons), verdict.reasons


def test_a_long_flush_interval_is_not_lag_and_nothing_pending_is_not_lag():
    assert judge(writer=WriterState(10, 50.0, flush_interval_s=20.0)).ready  # limit is 3 × 20 s
    assert not judge(writer=WriterState(10, 61.0, flush_interval_s=20.0)).ready
    assert judge(writer=WriterState(0, 500.0, 0.2)).ready


def test_lag_is_not_judged_without_a_scheduler_or_before_the_first_run():
    huge = [tier(t.name, 10**12) for t in PLAN.tiers]
    verdict = judge(tiers=huge, period_ms=None)
    assert verdict.ready and all(t.max_lag_ms is None for t in verdict.tiers)
    assert judge(tiers=[tier("1m", None)]).ready
    behind = judge(tiers=huge)
    assert len([r for r in behind.reasons if r.startswith("downsampling: tier")]) == len(PLAN.tiers)
