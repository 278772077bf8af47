"""Save README screenshots of the chart and admin pages from a running tvflux server.

    .venv/bin/python -m tests.frontend.screenshot --base-url http://127.0.0.1:8000 [--seed] [--theme dark]

writes ``docs/img/chart.png`` and ``docs/img/admin.png`` (1280x720). ``--seed`` first
posts the same deterministic history the browser tests use (12 h of trades every 15 s,
40 days every 30 min, for BTCUSD and ETHUSD), so a fresh server shows a full chart;
the trades carry ids, so seeding twice is harmless.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

from tests.frontend.helpers import CHROMIUM_ARGS, find_chromium, seed_trades, seed_window

ROOT = Path(__file__).resolve().parents[2]
LEVELS = {"BTCUSD": 60_000.0, "ETHUSD": 3_000.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--theme", choices=("light", "dark"), default="light")
    parser.add_argument("--symbol", default="BTCUSD")
    parser.add_argument("--resolution", default="5")
    parser.add_argument("--seed", action="store_true", help="post demo history first")
    args = parser.parse_args(argv)
    base = args.base_url.rstrip("/")

    chromium = find_chromium()
    if chromium is None:
        print("Chromium not found: apt-get install chromium (or set TVFLUX_CHROMIUM)", file=sys.stderr)
        return 2
    if args.seed:
        window = seed_window(int(time.time() * 1000))
        with httpx.Client(base_url=base, timeout=30) as http:
            for symbol, level in LEVELS.items():
                http.post("/api/admin/trades", json=seed_trades(symbol, level, window)).raise_for_status()

    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        ctx = browser.new_context(viewport={"width": 1280, "height": 720}, color_scheme=args.theme, device_scale_factor=1)
        page = ctx.new_page()

        page.goto(f"{base}/?symbol={args.symbol}&resolution={args.resolution}")
        page.wait_for_function("() => window.__tvflux && __tvflux.ready && __tvflux.barsCount() > 0", timeout=30_000)
        page.wait_for_function("() => document.getElementById('status').dataset.state === 'open'", timeout=30_000)
        # Put the crosshair on a recent candle so the legend shows what it is for.
        bar = page.evaluate("() => __tvflux.bars().at(-12)")
        if bar:
            x = page.evaluate("t => __tvflux.chart.timeScale().timeToCoordinate(t)", bar["time"])
            y = page.evaluate("p => __tvflux.candleSeries.priceToCoordinate(p)", bar["high"])
            box = page.locator("#chart").bounding_box()
            if x is not None and y is not None and box:
                page.mouse.move(box["x"] + x, box["y"] + y)
        page.wait_for_timeout(300)  # one animation frame or two for the crosshair to paint
        page.screenshot(path=str(args.out / "chart.png"))

        page.goto(f"{base}/admin")
        page.wait_for_function("() => window.__tvfluxAdmin && __tvfluxAdmin.polls >= 1", timeout=30_000)
        page.screenshot(path=str(args.out / "admin.png"), full_page=True)
        browser.close()
    print(f"wrote {args.out / 'chart.png'} and {args.out / 'admin.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
