"""Histograms and the lag clock behind /metrics and /health/ready."""

from __future__ import annotations

import random

import pytest

from service.core.instruments import Histogram, LabeledHistograms, LagClock


def test_histogram_buckets_are_cumulative_with_le_semantics():
    h = Histogram([1, 10, 100])
    for v in (0.5, 1, 1.0001, 10, 99, 100, 101, 5000):
        h.observe(v)
    assert h.cumulative() == [("1.0", 2), ("10.0", 4), ("100.0", 6), ("+Inf", 8)]
    assert h.count == 8 and h.sum == pytest.approx(0.5 + 1 + 1.0001 + 10 + 99 + 100 + 101 + 5000)
    with pytest.raises(ValueError):
        Histogram([1, 1, 2])


def test_labeled_histograms_are_created_on_use_and_listed_sorted():
    lh = LabeledHistograms([0.1])
    lh.observe("60", 0.05)
    lh.observe("1D", 0.2)
    lh.observe("60", 0.3)
    assert [(k, h.count, h.cumulative()[0][1]) for k, h in lh.items()] == [("1D", 1, 0), ("60", 2, 1)]


@pytest.mark.parametrize("seed", range(20))
def test_lag_clock_never_understates_and_overstates_by_less_than_its_resolution(seed):
    rng = random.Random(seed)
    clock = LagClock(resolution_s=1.0)
    submitted: dict[int, float] = {}  # seq -> time, the truth
    done = 0
    now, seq = 0.0, 0
    for _ in range(500):
        now += rng.choice([0.0, 0.01, 0.3, 0.9, 2.5, 7.0])
        if rng.random() < 0.6:
            seq += 1
            submitted[seq] = now
            clock.mark(seq, now)
        elif seq > done:
            done = rng.randint(done, seq)  # a flush finishes a prefix
            clock.done_through(done)
            if done == seq:
                clock.clear()  # what the writer does when nothing is left
        waiting = [t for s, t in submitted.items() if s > done]
        true_age = now - min(waiting) if waiting else 0.0
        reported = clock.oldest_age_s(now)
        assert true_age <= reported < true_age + 1.0 + 1e-9
    assert len(clock._marks) <= 1 + sum(1 for _ in range(int(now) + 1))  # bounded by elapsed seconds
