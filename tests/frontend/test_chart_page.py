"""The chart page (frontend/index.html + app.js) in headless Chromium against the real service.

The page exposes ``window.__tvflux`` (bars it holds, load counters, the Lightweight
Charts objects); tests read state from there and from the server, and check pixels only
where pixels are the point (candles actually drawn).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

from tests.frontend.helpers import bars, chart_bars, hook, open_chart, pick_symbol, wait_reload, wait_until

# Counts pixels of the candle colours on the largest canvas of the chart: proof that
# candles were painted, not just that data was handed to the library.
PAINTED_PIXELS_JS = """
() => {
  const canvases = [...document.querySelectorAll('#chart canvas')];
  const css = getComputedStyle(document.documentElement);
  const rgb = (name) => {
    const h = css.getPropertyValue(name).trim().replace('#', '');
    return [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16));
  };
  const up = rgb('--up'), down = rgb('--down');
  const near = (d, i, c) => Math.abs(d[i] - c[0]) < 8 && Math.abs(d[i + 1] - c[1]) < 8 && Math.abs(d[i + 2] - c[2]) < 8 && d[i + 3] > 200;
  let best = { up: 0, down: 0 };
  for (const c of canvases) {
    if (!c.width || !c.height) continue;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let u = 0, n = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (near(d, i, up)) u++;
      else if (near(d, i, down)) n++;
    }
    if (u + n > best.up + best.down) best = { up: u, down: n };
  }
  return best;
}
"""


def assert_ascending_unique(times: list[int]) -> None:
    assert all(a < b for a, b in zip(times, times[1:])), "bar times must be strictly ascending"


def stable_server_bars(http: Any, symbol: str, resolution: str, count: int, older_than_s: int) -> dict[int, dict[str, Any]]:
    """Server bars keyed by time in seconds, leaving out the still-changing recent ones."""
    return {b["time"] // 1000: b for b in bars(http, symbol, resolution, countback=count) if b["time"] // 1000 < older_than_s}


def assert_matches_server(page: Any, server_bars: dict[int, dict[str, Any]]) -> None:
    assert server_bars, "the server returned no bars to compare with"
    mine = {b["time"]: b for b in chart_bars(page)}
    for t, sb in server_bars.items():
        assert t in mine, f"bar {t} from the server is missing on the chart"
        for k in ("open", "high", "low", "close", "volume"):
            assert mine[t][k] == sb[k], f"{k} of bar {t}: chart {mine[t][k]} != server {sb[k]}"


def test_page_loads_without_console_errors(page, fe_server, seeded, console):
    open_chart(page, fe_server)
    # A live tick too, so the live code path has run before we look at the console.
    ticks = hook(page, "__tvflux.ticks")
    last = hook(page, "__tvflux.lastBar()")
    fe_server.post_trades([{"symbol": hook(page, "__tvflux.state.symbol"), "price": last["close"], "size": 0.1, "time": int(time.time() * 1000)}])
    page.wait_for_function("n => __tvflux.ticks > n", arg=ticks)
    assert hook(page, "__tvflux.mode") == "lightweight"
    assert page.locator("#status .label").inner_text() == "Live"
    console.assert_clean()


def test_candles_are_drawn(page, fe_server, seeded):
    open_chart(page, fe_server, "?symbol=BTCUSD&resolution=1")
    n = hook(page, "__tvflux.barsCount()")
    assert n >= 300  # one full history page: the seed has 12 h of minutes
    assert hook(page, "__tvflux.candleSeries.data().length") == n
    assert hook(page, "__tvflux.volumeSeries.data().length") == n
    # Thousands of pixels in the candle colours: a few hundred candles were painted.
    wait_until(lambda: sum(page.evaluate(PAINTED_PIXELS_JS).values()) > 2000, timeout_s=5, what="candles painted on the canvas")
    # Legend shows the latest bar when the crosshair is away (compared in one go in the
    # page: live ticks keep changing the last bar).
    page.wait_for_function("() => document.getElementById('lg-c').textContent === __tvflux.lastBar().close.toFixed(__tvflux.state.precision)")


def test_posted_trade_appears_live(page, fe_server, seeded):
    open_chart(page, fe_server, "?symbol=ETHUSD&resolution=1")
    top = max(b["high"] for b in chart_bars(page))
    price = round(top * 3, 2)  # far outside anything on screen
    now_ms = int(time.time() * 1000)
    fe_server.post_trades([{"symbol": "ETHUSD", "price": price, "size": 0.25, "time": now_ms}])
    minute = now_ms // 60_000 * 60  # the trade's bar, in seconds
    page.wait_for_function("t => __tvflux.bars().some((b) => b.time === t[0] && b.high >= t[1])", arg=[minute, price], timeout=10_000)
    # It reached the chart library, not just our array (a later minute may have begun).
    drawn = page.evaluate("t => __tvflux.candleSeries.data().find((d) => d.time === t)", minute)
    assert drawn["high"] == price


def test_out_of_order_bar_never_breaks_the_chart(page, fe_server, seeded, console):
    open_chart(page, fe_server, "?symbol=BTCUSD&resolution=1")
    n = hook(page, "__tvflux.barsCount()")
    first = hook(page, "__tvflux.firstBar()")
    # Forget what the datafeed has passed to this listener, so its own filter lets an old
    # bar through (as after a resubscribe): the page's guard must then drop it, because
    # Lightweight Charts throws on an update older than its last bar.
    page.evaluate(
        """(bar) => {
          const f = __tvflux.feed, id = __tvflux.state.listenerGuid;
          f.live.subs.get(id).lastTime = null;
          f.live.onMessage(JSON.stringify({ type: 'bar', id, closed: true,
            bar: { ...bar, time: bar.time * 1000 } }));
        }""",
        first,
    )
    assert hook(page, "__tvflux.droppedTicks") == 1, "page guard did not drop the old bar"
    assert hook(page, "__tvflux.barsCount()") >= n
    assert hook(page, "__tvflux.firstBar().time") == first["time"]
    console.assert_clean()  # no "Cannot update oldest data" from the library


def test_switch_symbol_and_resolution(page, fe_server, seeded, http):
    open_chart(page, fe_server, "?symbol=BTCUSD&resolution=1")
    stable_before = seeded.end_ms // 1000

    loads = hook(page, "__tvflux.historyLoads")
    pick_symbol(page, "ETHUSD")
    wait_reload(page, loads)
    assert hook(page, "__tvflux.state.symbol") == "ETHUSD"
    assert "symbol=ETHUSD" in page.url
    assert_matches_server(page, stable_server_bars(http, "ETHUSD", "1", 100, stable_before))

    for resolution, aligned in (
        ("15", lambda t: t % 900 == 0),
        ("1D", lambda t: t % 86_400 == 0),
        ("1W", lambda t: t % 86_400 == 0 and (t // 86_400 - 4) % 7 == 0),  # Mondays
        ("1M", lambda t: datetime.fromtimestamp(t, timezone.utc).day == 1 and t % 86_400 == 0),
    ):
        loads = hook(page, "__tvflux.historyLoads")
        page.click(f"#resolutions button[data-resolution='{resolution}']")
        wait_reload(page, loads)
        assert hook(page, "__tvflux.state.resolution") == resolution
        assert page.get_attribute(f"#resolutions button[data-resolution='{resolution}']", "aria-pressed") == "true"
        assert f"resolution={resolution}" in page.url
        times = [b["time"] for b in chart_bars(page)]
        assert len(times) >= 2, resolution
        assert_ascending_unique(times)
        assert all(aligned(t) for t in times), f"{resolution} bars not aligned: {times[:5]}"
        if resolution == "15":
            assert_matches_server(page, stable_server_bars(http, "ETHUSD", "15", 40, stable_before - 900))

    # Every switch unsubscribed the previous listener: one subscription is left.
    wait_until(lambda: http.get("/api/stats").json()["subscriptions"] == 1, timeout_s=5, what="exactly one server-side subscription")


def test_reconnects_and_refetches_after_server_restart(page, fe_server, seeded, console):
    # While the server is down Chromium logs the refused WebSocket and fetch attempts.
    console.allow(r"WebSocket connection to .* failed")
    console.allow(r"ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_EMPTY_RESPONSE|Failed to load resource")
    open_chart(page, fe_server, "?symbol=BTCUSD&resolution=1")
    loads = hook(page, "__tvflux.historyLoads")
    fe_server.stop()
    try:
        page.wait_for_function("() => document.getElementById('status').dataset.state !== 'open'", timeout=10_000)
        assert page.locator("#status .label").inner_text() in ("Disconnected", "Connecting…")
    finally:
        fe_server.start()
    page.wait_for_function("() => document.getElementById('status').dataset.state === 'open'", timeout=30_000)
    assert page.locator("#status .label").inner_text() == "Live"
    # onResetCacheNeeded after the reconnect made the page refetch its history.
    page.wait_for_function("n => __tvflux.historyLoads > n && __tvflux.ready", arg=loads, timeout=15_000)
    assert hook(page, "__tvflux.barsCount()") >= 300
    # And the listener was re-subscribed: a new trade arrives live.
    price = round(max(b["high"] for b in chart_bars(page)) * 2, 2)
    fe_server.post_trades([{"symbol": "BTCUSD", "price": price, "size": 0.1, "time": int(time.time() * 1000)}])
    page.wait_for_function("p => __tvflux.lastBar().high >= p", arg=price, timeout=10_000)


def test_scrolling_left_loads_older_bars_until_no_data(page, fe_server, seeded):
    open_chart(page, fe_server, "?symbol=BTCUSD&resolution=1")
    first0 = hook(page, "__tvflux.firstBar().time")
    n0 = hook(page, "__tvflux.barsCount()")
    assert hook(page, "__tvflux.olderLoads") == 0

    # Drag the chart to the right, like a user looking at the past.
    box = page.locator("#chart").bounding_box()
    y = box["y"] + box["height"] * 0.5
    for _ in range(10):
        if hook(page, "__tvflux.olderLoads") > 0:
            break
        page.mouse.move(box["x"] + box["width"] * 0.1, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.8, y, steps=8)
        page.mouse.up()
        page.wait_for_timeout(100)  # let the range-change handler fire
    page.wait_for_function("() => __tvflux.olderLoads > 0 && !__tvflux.state.loadingOlder")
    assert hook(page, "__tvflux.firstBar().time") < first0
    assert hook(page, "__tvflux.barsCount()") > n0

    # Keep going to the beginning: paging must stop at noData, not loop forever.
    for _ in range(30):
        if hook(page, "__tvflux.state.exhausted"):
            break
        loads = hook(page, "__tvflux.olderLoads")
        # to the leftmost point: the bars and the empty slots of gaps (the sparse part has many)
        page.evaluate("() => __tvflux.chart.timeScale().scrollToPosition(-(__tvflux.barsCount() + __tvflux.gapPoints()), false)")
        page.wait_for_function("n => (__tvflux.olderLoads > n && !__tvflux.state.loadingOlder) || __tvflux.state.exhausted", arg=loads)
    assert hook(page, "__tvflux.state.exhausted")
    times = [b["time"] for b in chart_bars(page)]
    assert_ascending_unique(times)
    assert all(t % 60 == 0 for t in times)
    assert times[0] <= seeded.start_ms // 1000, "scrolling back did not reach the first seeded trade"
    assert hook(page, "__tvflux.candleSeries.data().length") == len(times)


def test_date_range_shows_exactly_that_range(page, fe_server, seeded, http):
    open_chart(page, fe_server, "?symbol=BTCUSD&resolution=60")
    start = datetime.fromtimestamp(seeded.start_ms / 1000, timezone.utc).date() + timedelta(days=3)
    end = start + timedelta(days=6)  # inclusive
    from_s = int(datetime(start.year, start.month, start.day, tzinfo=timezone.utc).timestamp())
    to_s = int(datetime(end.year, end.month, end.day, tzinfo=timezone.utc).timestamp()) + 86_400

    loads = hook(page, "__tvflux.historyLoads")
    page.fill("#range-from", start.isoformat())
    page.fill("#range-to", end.isoformat())
    page.click("#range-apply")
    wait_reload(page, loads)
    assert hook(page, "__tvflux.state.mode") == "range"
    assert page.is_visible("#range-live")

    times = [b["time"] for b in chart_bars(page)]
    # The seed has a trade every 30 minutes there, so every hour of the 7 days has a bar.
    assert times == list(range(from_s, to_s, 3600))
    expected = {b["time"] // 1000: b for b in bars(http, "BTCUSD", "60", **{"from": from_s, "to": to_s})}
    assert_matches_server(page, expected)
    # A fixed range does not follow live data.
    assert hook(page, "__tvflux.state.listenerGuid") is None

    # An inverted range is refused with a message and changes nothing.
    page.fill("#range-from", end.isoformat())
    page.fill("#range-to", start.isoformat())
    page.click("#range-apply")
    assert "before the start" in page.locator("#notice").inner_text()
    assert len(chart_bars(page)) == len(times)

    # A range without data says so.
    loads = hook(page, "__tvflux.historyLoads")
    page.fill("#range-from", "2001-01-01")
    page.fill("#range-to", "2001-01-02")
    page.click("#range-apply")
    wait_reload(page, loads)
    assert hook(page, "__tvflux.barsCount()") == 0
    assert "No bars" in page.locator("#notice").inner_text()

    # "Live" goes back to the live edge.
    loads = hook(page, "__tvflux.historyLoads")
    page.click("#range-live")
    wait_reload(page, loads)
    assert hook(page, "__tvflux.state.mode") == "live"
    assert hook(page, "__tvflux.lastBar().time") >= seeded.end_ms // 1000 - 3600


def test_legend_follows_crosshair(page, fe_server, seeded):
    open_chart(page, fe_server, "?symbol=BTCUSD&resolution=5")
    target = chart_bars(page)[-20]
    prec = hook(page, "__tvflux.state.precision")
    x = page.evaluate("t => __tvflux.chart.timeScale().timeToCoordinate(t)", target["time"])
    y = page.evaluate("p => __tvflux.candleSeries.priceToCoordinate(p)", target["close"])
    assert x is not None and y is not None
    box = page.locator("#chart").bounding_box()
    page.mouse.move(box["x"] + x, box["y"] + y)
    page.wait_for_function("v => document.getElementById('lg-o').textContent === v", arg=f"{target['open']:.{prec}f}")
    assert page.locator("#lg-h").inner_text() == f"{target['high']:.{prec}f}"
    assert page.locator("#lg-l").inner_text() == f"{target['low']:.{prec}f}"
    assert page.locator("#lg-c").inner_text() == f"{target['close']:.{prec}f}"
    assert page.locator("#lg-t").inner_text().startswith(datetime.fromtimestamp(target["time"], timezone.utc).strftime("%Y-%m-%d %H:%M"))
    # Leaving the chart shows the latest bar again.
    page.mouse.move(1, 1)
    page.wait_for_function(
        "() => document.getElementById('lg-t').textContent.startsWith(new Date(__tvflux.lastBar().time * 1000).toISOString().slice(0, 16).replace('T', ' '))"
    )


def test_theme_follows_os_then_remembers_the_choice(new_page, fe_server, seeded):
    page = new_page(color_scheme="dark")
    open_chart(page, fe_server)
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    dark_bg = hook(page, "__tvflux.chart.options().layout.background.color")
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    light_bg = hook(page, "__tvflux.chart.options().layout.background.color")
    assert light_bg.lower() == "#ffffff" and dark_bg.lower() != light_bg.lower()
    page.reload()
    open_chart(page, fe_server)
    # The explicit choice beats the OS preference on the next visit.
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    assert hook(page, "__tvflux.chart.options().layout.background.color").lower() == "#ffffff"


def test_usable_at_phone_width(new_page, fe_server, seeded):
    page = new_page(width=375, height=740)
    open_chart(page, fe_server, "?symbol=BTCUSD&resolution=1")
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 375, "page scrolls sideways at 375 px"
    for el in page.locator("#toolbar button, #toolbar select, #toolbar input").all():
        if not el.is_visible():
            continue
        b = el.bounding_box()
        assert b["x"] >= 0 and b["x"] + b["width"] <= 375, f"control sticks out: {el.evaluate('e => e.outerHTML')[:80]}"
    chart = page.locator("#chart").bounding_box()
    assert chart["width"] >= 360 and chart["height"] >= 400
    loads = hook(page, "__tvflux.historyLoads")
    page.click("#resolutions button[data-resolution='60']")
    wait_reload(page, loads)
    wait_until(lambda: sum(page.evaluate(PAINTED_PIXELS_JS).values()) > 500, timeout_s=5, what="candles painted at phone width")


# A minimal stand-in for the licensed library: records the widget options and drives the
# datafeed the way the library starts a chart (onReady, resolveSymbol, getBars,
# subscribeBars), so the page's Charting Library wiring is tested without the library.
FAKE_LIBRARY = """
window.TradingView = { widget: function (opts) {
  const self = this; window.__fakeWidget = { opts, bars: null, ticks: 0, themes: [] };
  this.changeTheme = (t) => window.__fakeWidget.themes.push(t);
  this.onChartReady = (cb) => { self._ready = cb; };
  opts.datafeed.onReady((cfg) => {
    window.__fakeWidget.config = cfg;
    opts.datafeed.resolveSymbol(opts.symbol, (info) => {
      window.__fakeWidget.info = info;
      const to = Math.floor(Date.now() / 1000) + 60;
      opts.datafeed.getBars(info, opts.interval, { from: to - 3600, to, countBack: 50, firstDataRequest: true }, (bars, meta) => {
        window.__fakeWidget.bars = bars;
        opts.datafeed.subscribeBars(info, opts.interval, () => { window.__fakeWidget.ticks++; }, 'fake-1', () => {});
        if (self._ready) self._ready();
      }, (e) => { window.__fakeWidget.error = e; });
    }, (e) => { window.__fakeWidget.error = e; });
  });
} };
"""


def test_uses_the_charting_library_when_installed(page, fe_server, seeded):
    page.route("**/charting_library/charting_library.standalone.js", lambda route: route.fulfill(status=200, content_type="text/javascript", body=FAKE_LIBRARY))
    page.route("**/api/frontend", lambda route: route.fulfill(json={"chartingLibrary": True}))  # as if installed
    page.goto(fe_server.base_url + "/?symbol=ETHUSD&resolution=15")
    page.wait_for_function("() => window.__fakeWidget && window.__fakeWidget.bars && window.__tvflux.ready")
    opts = page.evaluate("() => { const o = __fakeWidget.opts; return {library_path: o.library_path, symbol: o.symbol, interval: o.interval, timezone: o.timezone, theme: o.theme, autosize: o.autosize, feed: o.datafeed instanceof TvfluxDatafeed, container: o.container && o.container.id} }")
    assert opts == {"library_path": "/charting_library/", "symbol": "ETHUSD", "interval": "15", "timezone": "Etc/UTC", "theme": "light", "autosize": True, "feed": True, "container": "chart"}
    assert hook(page, "__tvflux.mode") == "charting_library"
    assert page.evaluate("__fakeWidget.bars.length") == 50
    assert page.evaluate("__fakeWidget.info.session") == "24x7"
    assert not page.is_visible("#resolutions") and not page.is_visible("#symbol")
    page.wait_for_function("() => document.getElementById('status').dataset.state === 'open'")
    page.click("#theme-toggle")
    assert page.evaluate("__fakeWidget.themes") == ["dark"]


def test_a_plain_load_logs_no_console_error_and_requests_nothing_that_fails(page, fe_server, seeded, console):
    failed = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    open_chart(page, fe_server)
    page.wait_for_timeout(500)
    assert failed == []  # no probe of the Charting Library's file: the server says it is absent
    assert console.errors == []
    assert hook(page, "__tvflux.mode") == "lightweight"


def test_a_bad_symbol_or_resolution_in_the_link_is_reported_not_ignored(page, fe_server, seeded):
    open_chart(page, fe_server, "?symbol=NOPE&resolution=7")
    notice = page.locator("#link-notice")
    assert notice.is_visible()
    text = notice.inner_text()
    assert 'Unknown symbol "NOPE"' in text and "showing BTCUSD" in text, text
    assert 'Unsupported resolution "7"' in text and "showing 1" in text, text
    # the address bar says what is on screen, and the chart's own messages don't hide the notice
    assert "symbol=BTCUSD" in page.url and "resolution=1" in page.url and "NOPE" not in page.url
    page.wait_for_timeout(500)
    assert notice.is_visible()
    page.click("#link-notice .dismiss")
    assert not notice.is_visible()

    open_chart(page, fe_server, "?symbol=ETHUSD&resolution=D")  # a good link (an alias): no notice
    assert not page.locator("#link-notice").is_visible()
    assert hook(page, "document.querySelector('#resolutions [aria-pressed=true]').dataset.resolution") == "1D"


def test_date_fields_show_the_days_the_chart_shows(page, fe_server, seeded):
    def day(seconds: float) -> str:
        return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d")

    open_chart(page, fe_server, "?symbol=BTCUSD&resolution=1")
    visible = page.evaluate("() => { const r = __tvflux.chart.timeScale().getVisibleRange(); return [Number(r.from), Number(r.to)]; }")
    last_bar = hook(page, "__tvflux.bars()[__tvflux.bars().length - 1].time")
    page.wait_for_function("v => document.getElementById('range-to').value === v", arg=day(min(visible[1], last_bar)))
    assert page.input_value("#range-from") == day(visible[0])
    assert page.input_value("#range-to") == day(time.time()) or page.input_value("#range-to") == day(last_bar)
    # daily bars over weeks: the fields follow
    page.click("#resolutions [data-resolution='1D']")
    page.wait_for_function("() => __tvflux.ready && __tvflux.barsCount() > 10")
    page.wait_for_function("() => document.getElementById('range-from').value < new Date(Date.now() - 20 * 86400e3).toISOString().slice(0, 10)")


def test_the_chart_page_works_unchanged_through_edge_workers(page, server_factory):
    """``tvflux serve --workers 2``: the page, its history and its live bars all come
    through the edges on the one port (history proxied to the core, live bars from the
    edge's own hub), and a trade posted to that port shows up on the chart."""
    server = server_factory(workers="2", synthetic_rate="30", synthetic_backfill_s="3600")
    open_chart(page, server, "?symbol=BTCUSD&resolution=1")
    assert hook(page, "__tvflux.barsCount()") >= 30  # an hour of synthetic minutes
    wait_until(lambda: sum(page.evaluate(PAINTED_PIXELS_JS).values()) > 500, timeout_s=5, what="candles painted")
    assert page.locator("#status .label").inner_text() == "Live"
    top = max(b["high"] for b in chart_bars(page))
    price = round(top * 3, 2)
    now_ms = int(time.time() * 1000)
    server.post_trades([{"symbol": "BTCUSD", "price": price, "size": 0.25, "time": now_ms}])
    minute = now_ms // 60_000 * 60
    page.wait_for_function("t => __tvflux.bars().some((b) => b.time === t[0] && b.high >= t[1])", arg=[minute, price], timeout=10_000)
