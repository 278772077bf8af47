import pytest

from service.core.errors import ConfigError
from service.core.plan import RAW, build_plan, default_plan
from service.core.resolution import DAY_MS, MINUTE_MS, SUPPORTED, parse_resolution


def test_default_plan_tiers_sources_and_chunks():
    plan = default_plan()
    assert [(t.name, t.source, t.chunk_ms // DAY_MS) for t in plan.tiers] == [
        ("1m", RAW, 1),
        ("5m", "1m", 3),
        ("15m", "5m", 7),
        ("1h", "15m", 14),
        ("4h", "1h", 30),
        ("1d", "4h", 90),
    ]


@pytest.mark.parametrize(
    "res, tier",
    [
        ("1S", None),
        ("30S", None),
        ("1", "1m"),
        ("3", "1m"),
        ("5", "5m"),
        ("15", "15m"),
        ("30", "15m"),
        ("45", "15m"),
        ("60", "1h"),
        ("120", "1h"),
        ("180", "1h"),
        ("240", "4h"),
        ("360", "1h"),
        ("480", "4h"),
        ("720", "4h"),
        ("1D", "1d"),
        ("3D", "1d"),
        ("1W", "1d"),
        ("1M", "1d"),
    ],
)
def test_serving_tier_is_largest_that_divides(res, tier):
    served = default_plan().serving_tier(parse_resolution(res))
    assert (served.name if served else None) == tier


def test_every_supported_resolution_is_tiled_exactly_by_its_tier():
    plan = default_plan()
    for text in SUPPORTED:
        res = parse_resolution(text)
        tier = plan.serving_tier(res)
        if tier is None:
            continue
        start = res.bucket_start_ms(1_700_000_000_000)
        assert (res.next_start_ms(start) - start) % tier.size_ms == 0
        assert start % tier.size_ms == 0


def test_chain_walks_down_to_raw():
    plan = default_plan()
    assert [t.name for t in plan.chain(plan.tier("1d"))] == ["1d", "4h", "1h", "15m", "5m", "1m"]


def test_custom_plan_sources_are_largest_divisor():
    plan = build_plan(["1h", "1m", "1d"])
    assert [(t.name, t.source) for t in plan.tiers] == [("1m", RAW), ("1h", "1m"), ("1d", "1h")]


@pytest.mark.parametrize("tiers", [["7m"], ["1x"], [], ["1h", "60m"], ["1m", "90s"]])
def test_bad_plans_are_refused(tiers):
    with pytest.raises(ConfigError):
        build_plan(tiers)


def test_first_window_starts_at_earliest_data_and_is_chunked():
    plan = default_plan()
    tier = plan.tier("1m")
    now = 10 * DAY_MS
    w = plan.next_window(tier, watermark_ms=None, source_watermark_ms=None, earliest_ms=DAY_MS + 61_000, now_ms=now)
    assert (w.start_ms, w.end_ms) == (DAY_MS + 60_000, 2 * DAY_MS + 60_000)


def test_window_follows_live_edge_with_lookback_and_grace():
    plan = build_plan(["1m", "5m"], lookback_ms=2 * MINUTE_MS, grace_ms=5_000)
    one = plan.tier("1m")
    now = 100 * MINUTE_MS + 3_000  # grace keeps the 99th minute open
    w = plan.next_window(one, watermark_ms=97 * MINUTE_MS, source_watermark_ms=None, earliest_ms=None, now_ms=now)
    assert (w.start_ms, w.end_ms) == (95 * MINUTE_MS, 99 * MINUTE_MS)
    assert (
        plan.next_window(one, watermark_ms=99 * MINUTE_MS, source_watermark_ms=None, earliest_ms=None, now_ms=now)
        is None
    )


def test_higher_tier_never_passes_its_source():
    plan = default_plan()
    five = plan.tier("5m")
    w = plan.next_window(five, watermark_ms=0, source_watermark_ms=17 * MINUTE_MS, earliest_ms=None, now_ms=DAY_MS)
    assert w.end_ms == 15 * MINUTE_MS
    assert plan.next_window(five, watermark_ms=0, source_watermark_ms=None, earliest_ms=0, now_ms=DAY_MS) is None
