"""The chart shows each symbol with its own price scale (``/udf/symbols``: pricescale and
minmov from the tick size the symbol was added with), in headless Chromium."""

from __future__ import annotations

import time
from typing import Any

from tests.frontend.helpers import hook, open_chart


def test_a_coin_priced_in_millionths_keeps_its_digits(page: Any, fe_server: Any) -> None:
    s = fe_server
    status, body = s.post("/api/admin/symbols", {"symbol": "SHIBUSD", "tickSize": 0.00000001, "volumePrecision": 0})
    assert status == 200, body
    try:
        t = int(time.time() * 1000) - 61_000
        s.post_trades(
            [{"symbol": "SHIBUSD", "price": p, "size": 1e6, "time": t + i} for i, p in enumerate((0.00001234, 0.00001299))]
        )
        open_chart(page, s, "?symbol=SHIBUSD&resolution=1")
        assert hook(page, "__tvflux.state.precision") == 8
        assert hook(page, "__tvflux.candleSeries.options().priceFormat.minMove") == 1e-8
        bar = hook(page, "__tvflux.bars()")[-1]
        assert (bar["high"], bar["low"]) == (0.00001299, 0.00001234)  # not a flat 0.00 candle
        page.wait_for_function("() => document.getElementById('lg-h').textContent === '0.00001299'")

        assert s.post("/api/admin/symbols", {"symbol": "SHIBUSD", "tickSize": 0.25})[0] == 200
        page.reload()  # a tick of 0.25: two decimals, steps of a quarter
        page.wait_for_function("() => window.__tvflux && window.__tvflux.ready")
        assert hook(page, "__tvflux.state.precision") == 2
        assert hook(page, "__tvflux.candleSeries.options().priceFormat.minMove") == 0.25
    finally:
        s.request("DELETE", "/api/admin/symbols?symbol=SHIBUSD&data=true")
