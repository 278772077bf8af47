"""Helpers shared by the frontend tests."""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from collections.abc import Callable
from typing import Any

import httpx

# Debian's chromium needs these in this sandbox; Playwright adds its own temp profile.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

SEED_MINUTE_HOURS = 12  # > 2 pages of 300 one-minute bars: scroll-back must page
SEED_MINUTE_STEP_S = 15
SEED_DAYS = 40  # enough daily bars for 1D/1W/1M views
SEED_DAY_STEP_S = 1800


def find_chromium() -> str | None:
    for candidate in (os.environ.get("TVFLUX_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def bars(http: httpx.Client, symbol: str, resolution: str, **params: Any) -> list[dict[str, Any]]:
    params.setdefault("to", int(time.time()) + 86_400)
    r = http.get("/api/bars", params={"symbol": symbol, "resolution": resolution, **params})
    r.raise_for_status()
    return r.json()["bars"]


def wait_until(check: Callable[[], Any], *, timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - the server may be restarting
            last_exc = exc
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


def open_chart(page: Any, server: Any, query: str = "") -> None:
    """Load the chart page and wait until the first history page is drawn and live."""
    page.goto(server.base_url + "/" + query)
    page.wait_for_function("() => window.__tvflux && window.__tvflux.ready && window.__tvflux.barsCount() > 0")
    page.wait_for_function("() => document.getElementById('status').dataset.state === 'open'")


def hook(page: Any, expr: str) -> Any:
    return page.evaluate(f"() => {expr}")


def chart_bars(page: Any) -> list[dict[str, Any]]:
    """The bars the chart page holds (times in epoch seconds); the empty slots of gaps are not bars."""
    return hook(page, "__tvflux.bars()")


def wait_reload(page: Any, loads_before: int) -> None:
    page.wait_for_function("n => __tvflux.historyLoads > n && __tvflux.ready", arg=loads_before)


def pick_symbol(page: Any, symbol: str) -> None:
    """Choose a symbol the way a user does: type it into the search box, press Enter."""
    page.click("#symbol")
    page.fill("#symbol", symbol)
    page.wait_for_function("s => [...document.querySelectorAll('#symbol-list [role=option]')].some((o) => o.dataset.symbol === s)", arg=symbol)
    page.press("#symbol", "Enter")


# ---- demo/test history: deterministic, posted through POST /api/trades ----------------


def seed_window(now_ms: int) -> tuple[int, int, int]:
    """(sparse start, dense start, end) in epoch ms; ends before the live minute."""
    end = now_ms - now_ms % 60_000 - 60_000
    dense_start = end - SEED_MINUTE_HOURS * 3_600_000
    return dense_start - SEED_DAYS * 86_400_000, dense_start, end


def seed_trades(symbol: str, level: float, window: tuple[int, int, int]) -> list[dict[str, Any]]:
    sparse_start, dense_start, end = window
    rng = random.Random(f"tvflux-frontend-{symbol}")  # same chart every run
    times = list(range(sparse_start, dense_start, SEED_DAY_STEP_S * 1000))
    times += list(range(dense_start, end, SEED_MINUTE_STEP_S * 1000))
    # Walk backwards from `level` so the history meets the live (synthetic) price
    # instead of leaving a cliff at the live edge.
    prices = [level]
    for t in reversed(times[1:]):
        # volatility per step scales with sqrt(step): ~2 % over the dense 12 h
        sigma = 0.0004 if t >= dense_start else 0.003
        prices.append(prices[-1] * math.exp(rng.gauss(0.0, sigma)))
    prices.reverse()
    # ids make the post idempotent, should a session ever seed twice
    return [
        {"symbol": symbol, "price": round(p, 2), "size": round(rng.uniform(0.01, 2.0), 4), "time": t, "id": f"fe-seed-{t}"}
        for t, p in zip(times, prices)
    ]
