"""Price bands: a fat-finger guard for live trades, as exchanges have.

A live trade whose price is more than a factor ``1 + pct/100`` away from its symbol's
*reference* — the price of the newest trade accepted for it — is refused (with ``pct`` 20:
below ``reference / 1.2`` or above ``reference × 1.2``, i.e. −16.7 % … +20 %; symmetric in
log terms, so any ``pct`` keeps the band above zero). One ``price: 1e300`` would otherwise
stretch every bar of the symbol, from 1 minute to 1 month, to ±1e300.

The band does not apply where there is no recent market to be relative to: a symbol's first
trades (no reference), a reference older than the window (a symbol that stopped trading), a
symbol whose band is off (``priceBandPct: 0``, for a listing whose first trades find the
price), and bulk history (``POST /api/admin/trades``, ``tvflux import``): past prices are
not judged by today's.

Pure: references and times are passed in.
"""

from __future__ import annotations

import datetime as dt

import msgspec
import numpy as np


class Reference(msgspec.Struct, frozen=True):
    price: float
    time_ms: int  # the trade time of the trade it is the price of


class Band(msgspec.Struct, frozen=True):
    low: float
    high: float
    reference: float
    pct: float

    def reason(self, symbol: str, price: float, reference_time_ms: int) -> str:
        when = dt.datetime.fromtimestamp(reference_time_ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        return (
            f"price {price:.15g} is outside the price band of {symbol}: {self.low:.10g} to {self.high:.10g} "
            f"(a factor 1 + {self.pct:g}% around {self.reference:.15g}, its last trade's price at {when} UTC); "
            "a mistyped price? The band is TVFLUX_PRICE_BAND_PCT, per symbol `tvflux symbols add "
            f"{symbol} --price-band-pct N` (or --no-price-band)"
        )

    def details(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high, "reference": self.reference, "pct": self.pct}


def band_for(reference: Reference | None, pct: float, now_ms: int, window_ms: int) -> Band | None:
    """The band a live trade of the symbol must fall in now, or ``None`` (no band)."""
    if reference is None or pct <= 0 or now_ms - reference.time_ms > window_ms:
        return None
    factor = 1.0 + pct / 100.0
    return Band(reference.price / factor, reference.price * factor, reference.price, pct)


def outside(band: Band, price: np.ndarray) -> np.ndarray:
    """Which prices fall outside ``band`` (a boolean mask)."""
    return (price < band.low) | (price > band.high)


def newest(reference: Reference | None, ts_ms: np.ndarray, price: np.ndarray) -> Reference | None:
    """The reference after accepting trades ``(ts_ms, price)``: the price of the newest
    trade by trade time, unless the current reference is newer (a late trade does not move
    it)."""
    if ts_ms.shape[0] == 0:
        return reference
    i = int(np.argmax(ts_ms))  # the first of equal times; any of them is "the market then"
    t = int(ts_ms[i])
    if reference is not None and reference.time_ms > t:
        return reference
    return Reference(float(price[i]), t)
