"""The price band's rule, pure: where it applies and where it does not."""

from __future__ import annotations

import numpy as np

from service.core.priceband import Reference, band_for, newest, outside

MINUTE_MS = 60_000


def test_a_band_is_a_factor_either_side_of_the_last_price():
    band = band_for(Reference(100.0, 0), 25.0, MINUTE_MS, 15 * MINUTE_MS)
    assert band is not None and (band.low, band.high) == (80.0, 125.0)
    assert outside(band, np.array([79.9, 80.0, 125.0, 125.1, 1e300])).tolist() == [True, False, False, True, True]


def test_no_band_without_a_recent_market_or_when_turned_off():
    assert band_for(None, 20.0, 0, MINUTE_MS) is None  # a symbol's first trade
    assert band_for(Reference(100.0, 0), 0.0, 0, MINUTE_MS) is None  # off for the symbol
    assert band_for(Reference(100.0, 0), 20.0, MINUTE_MS + 1, MINUTE_MS) is None  # it stopped trading
    assert band_for(Reference(100.0, 0), 20.0, MINUTE_MS, MINUTE_MS) is not None


def test_the_reference_is_the_newest_trade_by_trade_time():
    ref = newest(None, np.array([5, 9, 7]), np.array([1.0, 2.0, 3.0]))
    assert ref == Reference(2.0, 9)
    assert newest(ref, np.array([8]), np.array([50.0])) == ref  # a late trade does not move it
    assert newest(ref, np.array([], dtype=np.int64), np.array([])) == ref
