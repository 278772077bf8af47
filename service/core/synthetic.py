"""A seeded synthetic market: realistic-looking trades for any symbols.

* arrivals: a Poisson process per symbol (the total rate split by a fixed weight);
* prices: geometric Brownian motion whose volatility switches between a calm and a
  stormy regime (a two-state Markov chain, mean stay ~20 minutes), ticked to 0.01;
* sizes: log-normal (right-skewed: many small trades, a few large), scaled per symbol
  so that the notional of a typical trade is similar across price levels.

Pure: callers pass the time window; the same seed and the same windows give the same
trades. Vectorised with numpy, so ``tvflux generate`` makes millions of trades a second.

Joining stored prices: :meth:`SyntheticMarket.steer` makes a symbol's walk end at a given
price at a given time (a Brownian bridge: the walk drifts towards the target at the rate
``(ln target - ln price) / time left``, and the last span lands on it), and
:meth:`SyntheticMarket.start_near` draws where a walk that must end at a price would have
started. ``tvflux generate`` uses both so generated history meets the stored trades on
either side without a cliff.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

from service.core.models import TradeColumns
from service.core.timestamps import NS_PER_MS

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
    def __init__(self, symbols: tuple[str, ...] | list[str], *, seed: int | Sequence[int] = 7) -> None:
        """``seed``: an integer, or several (``tvflux generate`` mixes its ``--seed`` with
        the span it writes, so two spans never repeat the same walk)."""
        if not symbols:
            raise ValueError("need at least one symbol")
        self.symbols = tuple(symbols)
        self._rng = np.random.default_rng(seed if isinstance(seed, int) else [int(x) for x in seed])
        self._targets: dict[str, tuple[float, int]] = {}  # symbol -> (ln price, at ms): see steer()
        self._price = {s: start_price(s) for s in self.symbols}
        self._stormy = {s: False for s in self.symbols}
        weights = np.array([_WEIGHTS.get(s, 0.2) for s in self.symbols])
        self._share = dict(zip(self.symbols, weights / weights.sum()))

    def continue_from(self, symbol: str, price: float) -> None:
        """Carry on from ``price`` (a restart continues from the last stored price instead
        of jumping back to the seed's level). Symbols the market does not trade are ignored."""
        if symbol in self._price and price > 0:
            self._price[symbol] = float(price)

    def steer(self, symbol: str, price: float, at_ms: int) -> None:
        """Make the walk of ``symbol`` arrive at ``price`` at ``at_ms`` (a Brownian bridge):
        each span of :meth:`trades` before ``at_ms`` drifts towards it by the share of the
        time left that it covers, and the span that reaches ``at_ms`` ends on it."""
        if symbol in self._price and price > 0:
            self._targets[symbol] = (math.log(price), at_ms)

    def start_near(self, symbol: str, price: float, span_ms: int) -> None:
        """Start ``symbol`` where a walk that reaches ``price`` after ``span_ms`` plausibly
        began: ``price`` moved by the market's volatility over the span (within 2 sigma)."""
        if symbol not in self._price or price <= 0:
            return
        sigma = ANNUAL_VOL * math.sqrt(max(span_ms, 0) / 1000 / _SECONDS_PER_YEAR)
        z = float(np.clip(self._rng.standard_normal(), -2.0, 2.0))
        self._price[symbol] = float(price * math.exp(sigma * z))

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
                self._arrive_empty(symbol, end_ms)
                continue
            ts_ms = np.sort(rng.integers(start_ms, end_ms, size=n, dtype=np.int64))
            gaps_s = np.diff(ts_ms, prepend=ts_ms[0]).astype(np.float64) / 1000.0
            vol = ANNUAL_VOL * (_STORMY if self._stormy[symbol] else _CALM) / np.sqrt(_SECONDS_PER_YEAR)
            # The path diffuses with elapsed time only (so volatility does not depend on
            # the trade rate); a tiny bid/ask-like jitter around it makes equal-time trades
            # differ without accumulating.
            start_log = math.log(self._price[symbol])
            log_path = start_log + np.cumsum(rng.standard_normal(n) * vol * np.sqrt(gaps_s))
            log_path = self._bridge(symbol, log_path, start_log, ts_ms, start_ms, end_ms)
            self._price[symbol] = float(np.exp(log_path[-1]))
            jitter = 1.0 + rng.standard_normal(n) * 2e-5
            price = np.maximum(np.round(np.exp(log_path) * jitter, 2), TICK)
            notional = rng.lognormal(mean=np.log(500.0), sigma=1.4, size=n)
            size = np.maximum(np.round(notional / price, 6), 1e-6)
            out.append(TradeColumns(symbol, ts_ms * NS_PER_MS, price, size))
        return out

    def _bridge(
        self, symbol: str, log_path: np.ndarray, start_log: float, ts_ms: np.ndarray, start_ms: int, end_ms: int
    ) -> np.ndarray:
        """``log_path`` pulled towards the symbol's target (see :meth:`steer`), if any."""
        target = self._targets.get(symbol)
        if target is None:
            return log_path
        target_log, at_ms = target
        left_ms = at_ms - start_ms
        if left_ms <= 0:
            del self._targets[symbol]
            return log_path
        share = (ts_ms - start_ms).astype(np.float64) / left_ms
        if end_ms < at_ms:  # drift towards the target by the share of the time left
            return log_path + share * (target_log - start_log)
        # the span that reaches the target lands on it: the walk's own end is moved there
        del self._targets[symbol]
        return log_path + share / share[-1] * (target_log - log_path[-1]) if share[-1] > 0 else log_path

    def _arrive_empty(self, symbol: str, end_ms: int) -> None:
        """A span without trades that reaches the target still arrives there."""
        target = self._targets.get(symbol)
        if target is not None and end_ms >= target[1]:
            self._price[symbol] = math.exp(target[0])
            del self._targets[symbol]

    def _switch_regime(self, symbol: str, span_ms: int) -> None:
        switch_probability = 1.0 - np.exp(-span_ms / 1000.0 / _REGIME_MEAN_S)
        if self._rng.random() < switch_probability:
            self._stormy[symbol] = not self._stormy[symbol]
