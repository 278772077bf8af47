import numpy as np

from service.core.synthetic import SyntheticMarket, start_price


def test_same_seed_same_trades():
    a = SyntheticMarket(["BTCUSD", "ETHUSD"], seed=3).trades(0, 60_000, 50)
    b = SyntheticMarket(["BTCUSD", "ETHUSD"], seed=3).trades(0, 60_000, 50)
    assert [x.symbol for x in a] == [x.symbol for x in b]
    for x, y in zip(a, b):
        assert np.array_equal(x.ts_ns, y.ts_ns) and np.array_equal(x.price, y.price)


def test_rate_window_and_realism():
    batches = SyntheticMarket(["BTCUSD", "ETHUSD", "LTCUSD"], seed=1).trades(1_000_000, 1_000_000 + 3_600_000, 100)
    total = sum(len(b) for b in batches)
    assert 0.9 * 360_000 < total < 1.1 * 360_000
    for b in batches:
        assert (np.diff(b.ts_ns) >= 0).all()
        assert b.ts_ns.min() >= 1_000_000 * 1_000_000
        assert (b.price > 0).all() and (b.size > 0).all()
        # an hour of a 60%-vol market stays within a few percent of where it started
        assert abs(b.price[-1] / start_price(b.symbol) - 1) < 0.2
        # sizes are right-skewed
        assert b.size.mean() > np.median(b.size)


def test_zero_rate_or_empty_window_gives_nothing():
    m = SyntheticMarket(["BTCUSD"])
    assert m.trades(0, 1000, 0) == [] and m.trades(5, 5, 100) == []
