"""Percentiles, summaries and tables of loadgen reports (pure, no I/O)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loadgen.stats import Meter, fmt_latency, fmt_num, markdown_table, percentile, rate, summarize, table


@pytest.mark.parametrize(
    ("samples", "q", "expected"),
    [
        ([5.0], 50, 5.0),
        ([5.0], 99, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.5),  # order does not matter
        (list(range(1, 101)), 99, 99.01),  # linear interpolation between closest ranks
        (list(range(1, 101)), 95, 95.05),
    ],
)
def test_percentile_table(samples, q, expected):
    assert percentile(samples, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_none_and_bad_q_is_refused():
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_is_consistent():
    rng = np.random.default_rng(3)
    data = rng.exponential(10.0, size=10_001)
    s = summarize(data)
    assert s["n"] == 10_001
    assert s["min"] <= s["p50"] <= s["p95"] <= s["p99"] <= s["max"]
    assert s["p50"] == pytest.approx(float(np.median(data)), abs=1e-3)
    assert s["max"] == pytest.approx(float(data.max()), abs=1e-3)
    assert s["mean"] == pytest.approx(float(data.mean()), abs=1e-3)


def test_summarize_empty_and_single():
    empty = {"n": 0, "mean": None, "p50": None, "p95": None, "p99": None, "p999": None, "max": None, "min": None}
    assert summarize([]) == empty
    one = summarize([2.5])
    assert one["n"] == 1 and one["p50"] == one["p99"] == one["p999"] == one["max"] == one["min"] == 2.5


def test_rate_and_meter():
    assert rate(10, 2.0) == 5.0
    assert rate(10, 0.0) == 0.0
    m = Meter()
    m.add(3)
    m.add()
    assert m.delta() == 4 and m.delta() == 0 and m.total == 4


def test_formatting():
    assert fmt_num(1234567) == "1,234,567"
    assert fmt_num(1.5, "ms", 1) == "1.5 ms"
    assert fmt_num(None) == "-"
    assert fmt_num(math.inf) == "inf"
    assert fmt_latency(summarize([])) == "no samples"
    assert "p99 3.0" in fmt_latency(summarize([1.0, 2.0, 3.0]))


def test_tables_align_columns():
    text = table([["a", 1], ["bbb", 22]], ["name", "n"])
    lines = text.splitlines()
    assert lines[0] == "name   n"
    assert lines[1] == "----  --"
    assert lines[2] == "a      1"
    assert lines[3] == "bbb   22"
    md = markdown_table([["x", None]], ["k", "v"])
    assert md.splitlines() == ["| k | v |", "|:---|---:|", "| x | - |"]
