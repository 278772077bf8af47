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


def test_a_steered_walk_arrives_at_its_target_without_a_jump():
    """Generated history that ends where stored trades begin must end at their price: the
    walk is a bridge to it, in hourly spans as ``tvflux generate`` writes them."""
    hour = 3_600_000
    market = SyntheticMarket(["BTCUSD"], seed=4)
    market.continue_from("BTCUSD", 60_000.0)
    market.steer("BTCUSD", 45_000.0, 48 * hour)
    prices = np.concatenate([b.price for lo in range(0, 48 * hour, hour) for b in market.trades(lo, lo + hour, 5)])
    assert abs(prices[0] / 60_000 - 1) < 0.01  # it starts where it was
    assert abs(prices[-1] / 45_000 - 1) < 0.001  # and ends at the target
    steps = np.abs(np.diff(np.log(prices)))
    assert steps.max() < 0.01  # no cliff anywhere on the way (a 25% move over two days)


def test_different_spans_of_one_seed_are_different_walks():
    def walk(start_ms):
        market = SyntheticMarket(["BTCUSD"], seed=[1, start_ms, start_ms + 86_400_000])
        return market.trades(start_ms, start_ms + 86_400_000, 1)[0].price

    one, two = walk(0), walk(86_400_000)
    assert not np.allclose(one[: min(len(one), len(two))] / one[0], two[: min(len(one), len(two))] / two[0])
    assert np.array_equal(walk(0), walk(0))  # and the same span is reproducible


def test_start_near_stays_within_two_sigma_of_the_price():
    for seed in range(20):
        market = SyntheticMarket(["ETHUSD"], seed=seed)
        market.start_near("ETHUSD", 3_000.0, 365 * 86_400_000)
        start = market.trades(0, 60_000, 10)[0].price[0]
        assert 3_000 * np.exp(-1.3) < start < 3_000 * np.exp(1.3)
