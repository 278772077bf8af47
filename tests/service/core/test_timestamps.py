import numpy as np

from service.core.timestamps import NS_PER_MS, TimestampAllocator


def test_same_millisecond_gets_distinct_ordered_ns():
    a = TimestampAllocator()
    a.start_symbol("X", None)
    ns = a.allocate("X", np.array([5, 5, 6, 5], dtype=np.int64))
    assert ns.tolist() == [5 * NS_PER_MS, 5 * NS_PER_MS + 1, 6 * NS_PER_MS, 5 * NS_PER_MS + 2]
    more = a.allocate("X", np.array([5, 6], dtype=np.int64))
    assert more.tolist() == [5 * NS_PER_MS + 3, 6 * NS_PER_MS + 1]


def test_symbols_are_independent():
    a = TimestampAllocator()
    a.start_symbol("X", None)
    a.start_symbol("Y", None)
    assert a.allocate("X", np.array([1]))[0] == a.allocate("Y", np.array([1]))[0] == NS_PER_MS


def test_restart_continues_after_the_last_stored_timestamp():
    a = TimestampAllocator()
    a.start_symbol("X", 10 * NS_PER_MS + 4)
    assert a.allocate("X", np.array([10, 11]))[0] == 10 * NS_PER_MS + 5
    # an older millisecond must be looked up in the store first
    assert a.missing("X", np.array([9, 10, 11, 9])) == [9]
    a.seed("X", 9, 9 * NS_PER_MS + 2)
    assert a.missing("X", np.array([9])) == []
    assert a.allocate("X", np.array([9]))[0] == 9 * NS_PER_MS + 3


def test_memory_is_bounded_and_forgotten_milliseconds_need_lookup():
    a = TimestampAllocator(window_ms=1_000)
    a.start_symbol("X", None)
    for start in range(0, 10_000, 100):
        a.allocate("X", np.arange(start, start + 100, dtype=np.int64))
    clock = a._clocks["X"]
    assert len(clock.next_offset) <= 1_600
    assert a.missing("X", np.array([5])) == [5]


def test_all_unique_under_random_batches():
    rng = np.random.default_rng(1)
    a = TimestampAllocator(window_ms=50)
    a.start_symbol("X", None)
    seen = []
    for _ in range(200):
        ms = rng.integers(0, 100, size=20)
        for m in a.missing("X", ms):
            prior = [v for v in seen if v // NS_PER_MS == m]
            a.seed("X", m, max(prior) if prior else None)
        seen.extend(a.allocate("X", ms).tolist())
    assert len(seen) == len(set(seen))
