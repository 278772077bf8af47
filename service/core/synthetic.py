"""A seeded synthetic market: realistic-looking trades for any symbols.

* arrivals: a Poisson process per symbol (the total rate split by a fixed weight);
* prices: geometric Brownian motion whose volatility switches between a calm and a
  stormy regime (a two-state Markov chain, mean stay ~20 minutes), ticked to 0.01;
* sizes: log-normal (right-skewed: many small trades, a few large), scaled per symbol
  so that the notional of a typical trade is similar across price levels.

Pure: callers pass the time window; the same seed and the same windows give the same
trades. Vectorised with numpy, so ``tvflux generate`` makes millions of trades a second.
"""

from __future__ import annotations

import zlib

import numpy as np

from service.core.models import TradeColumns

_LEVELS = {"BTCUSD": 60_000.0, "ETHUSD": 3_000.0, "LTCUSD": 80.0}
_WEIGHTS = {"BTCUSD": 0.5, "ETHUSD": 0.35, "LTCUSD": 0.15}
ANNUAL_VOL = 0.6  # typical for large crypto pairs
_SECONDS_PER_YEAR = 365 * 86_400
_CALM, _STORMY = 0.6, 2.5  # volatility multipliers of the two regimes
_REGIME_MEAN_S = 20 * 60
TICK = 0.01


def start_price(symbol: str) -> float:
    """The price a symbol starts at: known levels for the defaults, a stable pseudo-random
    level between 1 and 1000 for any other symbol."""
    if symbol in _LEVELS:
        return _LEVELS[symbol]
    return 1.0 + (zlib.crc32(symbol.encode()) % 99_900) / 100.0


class SyntheticMarket:
    def __init__(self, symbols: tuple[str, ...] | list[str], *, seed: int = 7) -> None:
        if not symbols:
            raise ValueError("need at least one symbol")
        self.symbols = tuple(symbols)
        self._rng = np.random.default_rng(seed)
        self._price = {s: start_price(s) for s in self.symbols}
        self._stormy = {s: False for s in self.symbols}
        weights = np.array([_WEIGHTS.get(s, 0.2) for s in self.symbols])
        self._share = dict(zip(self.symbols, weights / weights.sum()))

    def continue_from(self, symbol: str, price: float) -> None:
        """Carry on from ``price`` (a restart continues from the last stored price instead
        of jumping back to the seed's level). Symbols the market does not trade are ignored."""
        if symbol in self._price and price > 0:
            self._price[symbol] = float(price)

    def trades(self, start_ms: int, end_ms: int, rate_per_s: float) -> list[TradeColumns]:
        """Trades with times in ``[start_ms, end_ms)`` at ``rate_per_s`` over all symbols,
        one :class:`TradeColumns` per symbol that traded, times ascending. ``ts_ns`` is
        the millisecond time in ns (not yet made unique)."""
        span_ms = end_ms - start_ms
        if span_ms <= 0 or rate_per_s <= 0:
            return []
        rng = self._rng
        out = []
        for symbol in self.symbols:
            expected = rate_per_s * self._share[symbol] * span_ms / 1000.0
            n = int(rng.poisson(expected))
            self._switch_regime(symbol, span_ms)
            if n == 0:
                continue
            ts_ms = np.sort(rng.integers(start_ms, end_ms, size=n, dtype=np.int64))
            gaps_s = np.diff(ts_ms, prepend=ts_ms[0]).astype(np.float64) / 1000.0
            vol = ANNUAL_VOL * (_STORMY if self._stormy[symbol] else _CALM) / np.sqrt(_SECONDS_PER_YEAR)
            # The path diffuses with elapsed time only (so volatility does not depend on
            # the trade rate); a tiny bid/ask-like jitter around it makes equal-time trades
            # differ without accumulating.
            log_path = np.log(self._price[symbol]) + np.cumsum(rng.standard_normal(n) * vol * np.sqrt(gaps_s))
            self._price[symbol] = float(np.exp(log_path[-1]))
            jitter = 1.0 + rng.standard_normal(n) * 2e-5
            price = np.maximum(np.round(np.exp(log_path) * jitter, 2), TICK)
            notional = rng.lognormal(mean=np.log(500.0), sigma=1.4, size=n)
            size = np.maximum(np.round(notional / price, 6), 1e-6)
            out.append(TradeColumns(symbol, ts_ms * 1_000_000, price, size))
        return out

    def _switch_regime(self, symbol: str, span_ms: int) -> None:
        switch_probability = 1.0 - np.exp(-span_ms / 1000.0 / _REGIME_MEAN_S)
        if self._rng.random() < switch_probability:
            self._stormy[symbol] = not self._stormy[symbol]
