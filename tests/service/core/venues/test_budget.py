"""Politeness rules (service/core/venues/budget.py), as tables over time."""

from __future__ import annotations

import pytest

from service.core.venues.budget import RestGate, TokenBucket, backoff_s


@pytest.mark.parametrize("rate, burst", [(4, 1), (4, 4), (2, 1)])
def test_token_bucket_never_exceeds_burst_plus_rate_in_any_second(rate, burst):
    """Binance closes a connection sending more than 5 messages in a second: a bucket of
    rate 4 and burst 1 can never do that, however eagerly its client sends."""
    bucket = TokenBucket(rate_per_s=rate, burst=burst)
    sent = []
    now = 0.0
    while len(sent) < 20:  # a client sending as fast as the bucket lets it
        now += bucket.wait_s(now)
        bucket.spend(now)
        sent.append(now)
    assert sent[:burst] == [0.0] * burst
    busiest = max(sum(1 for t in sent[i:] if t < start + 1.0) for i, start in enumerate(sent))
    assert busiest <= burst + rate, sent
    assert sent[-1] == pytest.approx((20 - burst) / rate)


def test_a_heavy_request_waits_for_a_full_bucket():
    bucket = TokenBucket(rate_per_s=10, burst=20)
    bucket.spend(0.0, 20)
    assert bucket.wait_s(0.0, 50) == pytest.approx(2.0)  # capped at the burst


def test_rest_gate_spends_weight_and_backs_off_on_429():
    gate = RestGate(rate_per_s=20, burst=200, limit_per_min=6000)
    assert gate.wait_s(100.0, 4) == 0
    gate.spend(100.0, 4)
    gate.answered(100.0, 429, retry_after_s=7, used_weight=None)
    assert gate.wait_s(100.0, 4) == pytest.approx(7) and not gate.banned
    assert gate.wait_s(107.0, 4) == 0
    assert (gate.requests, gate.weight_spent) == (1, 4)


def test_rest_gate_stops_on_418_for_the_ban():
    gate = RestGate(rate_per_s=20, burst=200)
    gate.answered(50.0, 418, retry_after_s=120, used_weight=None)
    assert gate.banned and gate.wait_s(50.0, 1) == pytest.approx(120)
    gate.answered(60.0, 429, retry_after_s=1, used_weight=None)  # a shorter back-off does not lift a ban
    assert gate.banned and gate.wait_s(60.0, 1) == pytest.approx(110)


def test_rest_gate_pauses_until_the_next_minute_near_the_reported_limit():
    gate = RestGate(rate_per_s=20, burst=200, limit_per_min=6000, pause_at=0.8)
    gate.answered(125.0, 200, retry_after_s=None, used_weight=4000)
    assert gate.wait_s(125.0, 4) == 0 and gate.reported_weight == 4000
    gate.answered(125.0, 200, retry_after_s=None, used_weight=4800)
    assert gate.wait_s(125.0, 4) == pytest.approx(55.0) and not gate.banned


@pytest.mark.parametrize(
    "attempt, jitter, wait",
    [(0, 1.0, 0.5), (1, 1.0, 1.0), (3, 1.0, 4.0), (3, 0.5, 2.0), (10, 1.0, 30.0), (10, 0.0, 0.0), (99, 0.999, 29.97)],
)
def test_backoff_is_exponential_capped_and_jittered(attempt, jitter, wait):
    assert backoff_s(attempt, base_s=0.5, cap_s=30.0, jitter=jitter) == pytest.approx(wait)
