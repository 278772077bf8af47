"""The application-side pieces of the benchmark's Redis strategy and the answer check
(pure: no Redis server needed)."""

from __future__ import annotations

import numpy as np

from bench.history import compare
from bench.redis_bars import BAR_DTYPE, aggregate, zadd_resp
from service.core.models import Bar


def per_second(n: int, start_s: int = 1_700_000_000, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = np.zeros(n, dtype=BAR_DTYPE)
    arr["t"] = start_s + np.sort(rng.choice(np.arange(4 * n), size=n, replace=False))
    arr["open"] = rng.uniform(90, 110, n)
    arr["close"] = rng.uniform(90, 110, n)
    arr["high"] = np.maximum(arr["open"], arr["close"]) + rng.uniform(0, 1, n)
    arr["low"] = np.minimum(arr["open"], arr["close"]) - rng.uniform(0, 1, n)
    arr["volume"] = rng.uniform(0, 5, n)
    arr["trades"] = rng.integers(1, 9, n)
    return arr


def reference(arr: np.ndarray, size_s: int) -> list[Bar]:
    out: dict[int, list[float]] = {}
    for r in arr:
        b = int(r["t"]) // size_s * size_s
        if b not in out:
            out[b] = [r["open"], r["high"], r["low"], r["close"], r["volume"]]
        else:
            o = out[b]
            o[1], o[2], o[3], o[4] = max(o[1], r["high"]), min(o[2], r["low"]), r["close"], o[4] + r["volume"]
    return [Bar(b * 1000, *map(float, v)) for b, v in sorted(out.items())]


def test_aggregation_across_pages_matches_a_direct_computation():
    arr = per_second(5_000)
    for size_s in (60, 300, 3600):
        whole = aggregate(iter([arr]), size_s * 1000)
        paged = aggregate(iter(np.array_split(arr, 7)), size_s * 1000)  # a bucket may straddle pages
        expected = reference(arr, size_s)
        assert compare(expected, whole) is None
        assert compare(expected, paged) is None


def test_compare_reports_differences():
    a = [Bar(0, 1.0, 2.0, 0.5, 1.5, 3.0)]
    assert compare(a, [Bar(0, 1.0, 2.0, 0.5, 1.5, 3.0 + 1e-12)]) is None
    assert "bars instead of" in compare(a, [])
    assert "differs" in compare(a, [Bar(0, 1.0, 2.5, 0.5, 1.5, 3.0)])


def test_zadd_resp_is_valid_protocol():
    arr = per_second(3)
    raw = zadd_resp("bars1s:X", arr)
    lines = raw.split(b"\r\n")
    assert lines[0] == b"*8" and lines[2] == b"ZADD" and lines[4] == b"bars1s:X"
    # score, then the 56-byte member, three times
    body = raw[raw.index(b"bars1s:X\r\n") + len(b"bars1s:X\r\n") :]
    for rec in arr:
        score = str(int(rec["t"])).encode()
        head = b"$%d\r\n%s\r\n$56\r\n" % (len(score), score)
        assert body.startswith(head)
        member = body[len(head) : len(head) + 56]
        assert np.frombuffer(member, dtype=BAR_DTYPE)[0] == rec
        body = body[len(head) + 58 :]
    assert body == b""
