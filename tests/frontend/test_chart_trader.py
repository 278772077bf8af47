"""What a trader expects of the chart page (issue 20, item 6), in headless Chromium against
the real service: a time-zone choice applied everywhere, the seconds resolutions, a symbol
search that copes with hundreds of symbols, few bars fitted to the view, gaps kept visible,
and a stale symbol not called "Live"."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from tests.frontend.helpers import bars, chart_bars, hook, open_chart, pick_symbol, wait_reload, wait_until

KOLKATA = ZoneInfo("Asia/Kolkata")  # +05:30 all year: no daylight saving to dodge
NEW_YORK = ZoneInfo("America/New_York")


def local(epoch_s: int, zone: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return datetime.fromtimestamp(epoch_s, zone).strftime(fmt)


def hover_bar(page: Any, t: int, price: float) -> None:
    x = page.evaluate("t => __tvflux.chart.timeScale().timeToCoordinate(t)", t)
    y = page.evaluate("p => __tvflux.candleSeries.priceToCoordinate(p)", price)
    assert x is not None and y is not None, f"bar {t} is not on screen"
    box = page.locator("#chart").bounding_box()
    page.mouse.move(box["x"] + x, box["y"] + y)


def x_of(page: Any, t: int) -> float:
    x = page.evaluate("t => __tvflux.chart.timeScale().timeToCoordinate(t)", t)
    assert x is not None, f"time {t} is not on the time axis"
    return float(x)


def slots_between(page: Any, t1: int, t2: int) -> float:
    """How many slots of the time axis (bars and empty ones) lie from time t1 to t2."""
    return float(
        page.evaluate(
            "([a, b]) => { const ts = __tvflux.chart.timeScale();"
            " return ts.coordinateToLogical(ts.timeToCoordinate(b)) - ts.coordinateToLogical(ts.timeToCoordinate(a)); }",
            [t1, t2],
        )
    )


def trade_run(symbol: str, start_ms: int, end_ms: int, step_ms: int, price: float, tag: str) -> list[dict[str, Any]]:
    """A trade every ``step_ms`` in [start_ms, end_ms), gently moving, with ids."""
    return [
        {"symbol": symbol, "price": round(price + (i % 7) * 0.5, 2), "size": 0.1, "time": t, "id": f"{tag}-{t}"}
        for i, t in enumerate(range(start_ms, end_ms, step_ms))
    ]


# ---- time zone ---------------------------------------------------------------------------


def test_time_zone_choice_applies_to_axis_legend_and_date_fields(new_page, fe_server, seeded):
    page = new_page(timezone_id="Asia/Kolkata")
    open_chart(page, fe_server, "?symbol=BTCUSD&resolution=5")

    # UTC by default, and it says so
    assert page.input_value("#tz") == "UTC"
    assert page.locator("#tz-label").inner_text().startswith("UTC")
    target = chart_bars(page)[-20]
    t = target["time"]
    assert page.evaluate("t => __tvflux.chart.options().localization.timeFormatter(t)", t) == local(t, timezone.utc)
    hover_bar(page, t, target["close"])
    page.wait_for_function(
        "v => document.getElementById('lg-t').textContent === v", arg=f"{local(t, timezone.utc)} UTC"
    )
    page.mouse.move(1, 1)

    # the browser's zone: axis ticks, crosshair label, legend, date fields and their labels follow
    page.select_option("#tz", "browser")
    assert "UTC+5:30" in page.locator("#tz-label").inner_text()
    assert page.evaluate("t => __tvflux.chart.options().localization.timeFormatter(t)", t) == local(t, KOLKATA)
    hour = t - t % 3600  # a tick the library puts on a UTC hour: labelled with its Kolkata time
    tick = page.evaluate("t => __tvflux.chart.options().timeScale.tickMarkFormatter(t, 3, 'en-US')", hour)
    assert tick == local(hour, KOLKATA, "%H:%M") and tick.endswith(":30")
    hover_bar(page, t, target["close"])
    page.wait_for_function(
        "v => document.getElementById('lg-t').textContent === v", arg=f"{local(t, KOLKATA)} UTC+5:30"
    )
    page.mouse.move(1, 1)
    page.wait_for_function(
        "v => document.getElementById('range-to').value === v",
        arg=local(chart_bars(page)[-1]["time"], KOLKATA, "%Y-%m-%d"),
    )
    assert "Asia/" in page.get_attribute("#range-from", "aria-label")

    # a range of days is days in that zone: a Kolkata day starts at 18:30 UTC the day before
    day = (datetime.fromtimestamp(seeded.start_ms / 1000, KOLKATA) + timedelta(days=5)).date()
    from_s = int(datetime(day.year, day.month, day.day, tzinfo=KOLKATA).timestamp())
    loads = hook(page, "__tvflux.historyLoads")
    page.click("#resolutions button[data-resolution='30']")
    wait_reload(page, loads)
    loads = hook(page, "__tvflux.historyLoads")
    page.fill("#range-from", day.isoformat())
    page.fill("#range-to", day.isoformat())
    page.click("#range-apply")
    wait_reload(page, loads)
    # the seed has a trade every 30 minutes there: exactly the 48 half hours of that Kolkata day
    assert [b["time"] for b in chart_bars(page)] == list(range(from_s, from_s + 86_400, 1800))

    # the choice is remembered, and a zone from the list works the same way
    page.reload()
    page.wait_for_function("() => window.__tvflux && __tvflux.ready")
    assert page.input_value("#tz") == "browser"
    assert "UTC+5:30" in page.locator("#tz-label").inner_text()
    page.select_option("#tz", "America/New_York")
    label = page.locator("#tz-label").inner_text()
    assert label.startswith("New York UTC\u2212"), label
    last = chart_bars(page)[-1]["time"]
    assert page.evaluate("t => __tvflux.chart.options().localization.timeFormatter(t)", last) == local(last, NEW_YORK)


def test_daily_bars_keep_their_utc_date_in_any_zone(new_page, fe_server, seeded):
    """A 1D bar is a UTC day (that is how the server builds it): in New York it is not
    written as the evening of the day before."""
    page = new_page(timezone_id="America/New_York")
    open_chart(page, fe_server, "?symbol=BTCUSD&resolution=1D")
    page.select_option("#tz", "browser")
    t = chart_bars(page)[-3]["time"]
    assert page.evaluate("t => __tvflux.chart.options().localization.timeFormatter(t)", t) == local(
        t, timezone.utc, "%Y-%m-%d"
    )
    assert (
        page.evaluate("t => __tvflux.chart.options().timeScale.tickMarkFormatter(t, 2, 'en-US')", t) is None
    )  # the library's UTC label


# ---- seconds resolutions ---------------------------------------------------------------


def test_seconds_resolutions_are_offered_and_drawn(page, fe_server, seeded, http):
    open_chart(page, fe_server, "?symbol=ETHUSD&resolution=1")
    stable_before = seeded.end_ms // 1000
    for resolution, step in (("1S", 1), ("5S", 5), ("15S", 15), ("30S", 30)):
        loads = hook(page, "__tvflux.historyLoads")
        page.click(f"#resolutions button[data-resolution='{resolution}']")
        wait_reload(page, loads)
        assert f"resolution={resolution}" in page.url
        times = [b["time"] for b in chart_bars(page)]
        assert len(times) >= 10, resolution
        assert all(t % step == 0 for t in times), f"{resolution} bars not aligned: {times[:5]}"
        # the seconds show on the legend
        assert len(page.locator("#lg-t").inner_text().split(" ")[1]) == len("HH:MM:SS")
    # the 30S bars of the seed (a trade every 15 s) are the server's
    server = {
        b["time"] // 1000: b for b in bars(http, "ETHUSD", "30S", countback=400) if b["time"] // 1000 < stable_before
    }
    mine = {b["time"]: b for b in chart_bars(page)}
    assert server and all(mine.get(t, {}).get("close") == b["close"] for t, b in server.items() if t >= min(mine))
    # a link may name them too
    open_chart(page, fe_server, "?symbol=ETHUSD&resolution=15S")
    assert not page.locator("#link-notice").is_visible()
    assert hook(page, "__tvflux.state.resolution") == "15S"


# ---- symbol search ---------------------------------------------------------------------


def test_symbol_search_keeps_hundreds_of_symbols_usable(new_page, server_factory, console):
    names = [f"C{i:03d}USD" for i in range(300)]
    server = server_factory(synthetic_rate="0", symbols=",".join(names))
    now_ms = int(time.time() * 1000)
    for name in ("C000USD", "C123USD", "C250USD"):
        server.post_trades(trade_run(name, now_ms - 3_600_000, now_ms - 1000, 20_000, 100.0, name))

    page = new_page(color_scheme="dark")
    searches: list[str] = []
    page.on("request", lambda r: searches.append(r.url) if "/udf/search" in r.url else None)
    listed: list[str] = []
    page.on("request", lambda r: listed.append(r.url) if "/api/symbols" in r.url else None)
    open_chart(page, server, "?symbol=C000USD&resolution=1")
    assert listed == [], "the page loaded the whole symbol list"

    # focusing shows the first ones; typing narrows them, asking the server, debounced
    page.click("#symbol")
    page.wait_for_selector("#symbol-list:not([hidden]) [role=option]")
    assert page.locator("#symbol-list [role=option]").count() == 30
    assert "type more" in page.locator("#symbol-list .more").inner_text()
    before = len(searches)
    page.locator("#symbol").press_sequentially("C12", delay=20)  # faster than the debounce
    page.wait_for_function(
        "() => { const o = [...document.querySelectorAll('#symbol-list [role=option]')];"
        " return o.length === 10 && o.every((e) => e.dataset.symbol.startsWith('C12')); }"
    )
    assert len(searches) - before == 1, f"one search for three keystrokes, not {len(searches) - before}"

    # the keyboard: ArrowDown moves the active option, Enter picks it
    page.press("#symbol", "ArrowDown")
    page.press("#symbol", "ArrowDown")
    page.press("#symbol", "ArrowDown")
    active = page.get_attribute("#symbol", "aria-activedescendant")
    picked = page.get_attribute(f"#{active}", "data-symbol")
    assert picked == "C123USD"
    loads = hook(page, "__tvflux.historyLoads")
    page.press("#symbol", "Enter")
    wait_reload(page, loads)
    assert hook(page, "__tvflux.state.symbol") == "C123USD" and "symbol=C123USD" in page.url
    assert hook(page, "__tvflux.barsCount()") > 0
    assert page.locator("#symbol-list").is_hidden()

    # Escape gives up and leaves the symbol as it was; an unknown name offers nothing to pick
    page.fill("#symbol", "C25")
    page.wait_for_selector("#symbol-list [role=option][data-symbol=C250USD]")
    page.press("#symbol", "Escape")
    assert page.input_value("#symbol") == "C123USD" and page.locator("#symbol-list").is_hidden()
    page.click("#symbol")
    page.fill("#symbol", "NOSUCH")
    page.wait_for_function("() => document.querySelector('#symbol-list .empty') !== null")
    page.press("#symbol", "Enter")
    assert hook(page, "__tvflux.state.symbol") == "C123USD"

    # the mouse, and the dark theme: the list is drawn in the page's dark panel colour
    page.fill("#symbol", "C250")
    option = page.locator("#symbol-list [role=option][data-symbol=C250USD]")
    option.wait_for()
    panel = page.evaluate("() => getComputedStyle(document.getElementById('symbol-list')).backgroundColor")
    assert panel == "rgb(28, 32, 48)"  # --panel of the dark theme
    loads = hook(page, "__tvflux.historyLoads")
    option.click()
    wait_reload(page, loads)
    assert hook(page, "__tvflux.state.symbol") == "C250USD"

    # a link to the 299th symbol is found without listing them all
    page.goto(server.base_url + "/?symbol=C299USD&resolution=1")
    page.wait_for_function("() => window.__tvflux && __tvflux.ready")
    assert hook(page, "__tvflux.state.symbol") == "C299USD" and not page.locator("#link-notice").is_visible()
    assert listed == []
    console.assert_clean()


def test_a_failing_search_at_boot_still_shows_the_linked_symbol(page, fe_server, seeded, console):
    """The page checks a link's symbol through /udf/search; a server that cannot answer it
    then (restarting, overloaded) must not leave a dead page."""
    console.allow(r"status of 503 .*/udf/search")
    page.route(
        "**/udf/search*",
        lambda route: route.fulfill(status=503, json={"error": {"code": "unavailable", "message": "restarting"}}),
    )
    open_chart(page, fe_server, "?symbol=ETHUSD&resolution=5")
    assert hook(page, "__tvflux.state.symbol") == "ETHUSD" and hook(page, "__tvflux.barsCount()") > 0
    assert not page.locator("#link-notice").is_visible()
    # the search works again once the server does
    page.unroute("**/udf/search*")
    loads = hook(page, "__tvflux.historyLoads")
    pick_symbol(page, "BTCUSD")
    wait_reload(page, loads)
    assert hook(page, "__tvflux.state.symbol") == "BTCUSD"


def test_symbol_search_fits_a_phone(new_page, fe_server, seeded):
    page = new_page(width=375, height=740)
    open_chart(page, fe_server, "?symbol=BTCUSD&resolution=1")
    page.click("#symbol")
    page.wait_for_selector("#symbol-list:not([hidden]) [role=option]")
    box = page.locator("#symbol-list").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 375
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 375
    loads = hook(page, "__tvflux.historyLoads")
    page.click("#symbol-list [role=option][data-symbol=ETHUSD]")
    wait_reload(page, loads)
    assert hook(page, "__tvflux.state.symbol") == "ETHUSD"


# ---- few bars ----------------------------------------------------------------------------


def test_a_resolution_with_few_bars_is_fitted_to_the_view(page, fe_server, seeded):
    open_chart(page, fe_server, "?symbol=BTCUSD&resolution=1W")
    times = [b["time"] for b in chart_bars(page)]
    assert 3 <= len(times) <= 10
    width = page.evaluate("() => __tvflux.chart.timeScale().width()")
    first, last = x_of(page, times[0]), x_of(page, times[-1])
    # spread over the middle of the chart, not squeezed against the right edge
    assert first < width * 0.45 < width * 0.55 < last, (first, last, width)
    assert abs((first + last) / 2 - width / 2) < width * 0.1
    # candles of a sane width, not a third of the screen each
    spacing = (last - first) / (len(times) - 1)
    assert 20 <= spacing <= 61, spacing

    # many bars: back to the default zoom at the live edge
    loads = hook(page, "__tvflux.historyLoads")
    page.click("#resolutions button[data-resolution='1']")
    wait_reload(page, loads)
    assert page.evaluate("() => __tvflux.chart.timeScale().options().barSpacing") == 6
    last_bar = chart_bars(page)[-1]["time"]
    assert width - 60 < x_of(page, last_bar) < width


# ---- gaps ----------------------------------------------------------------------------------


def test_a_deleted_range_and_an_outage_show_as_gaps(page, fe_server, seeded, console):
    now_ms = int(time.time() * 1000)
    start = now_ms - now_ms % 60_000 - 4 * 3_600_000  # 3 hours of trades, ending an hour ago
    fe_server.post_trades(
        trade_run("GAPUSD", start, start + 3 * 3_600_000, 20_000, 50.0, "gap"), history=True
    )  # a new symbol
    open_chart(page, fe_server, "?symbol=GAPUSD&resolution=1")
    spacing = page.evaluate("() => __tvflux.chart.timeScale().options().barSpacing")
    cut_from, cut_to = start + 3_600_000, start + 2 * 3_600_000  # the middle hour
    before, after = (cut_from - 60_000) // 1000, cut_to // 1000
    assert abs(x_of(page, after) - x_of(page, before) - spacing * 61) < 0.5  # 61 minutes apart, a bar each

    # an operator deletes the middle hour: the chart resets and the hour stays on the axis, empty
    loads = hook(page, "__tvflux.historyLoads")
    r = fe_server.request("DELETE", f"/api/trades?symbol=GAPUSD&from={cut_from}&to={cut_to}")
    assert r[0] == 200, r
    wait_reload(page, loads)
    times = [b["time"] for b in chart_bars(page)]
    assert before in times and after in times and not any(before < t < after for t in times)
    assert abs(x_of(page, after) - x_of(page, before) - spacing * 61) < 0.5, "the deleted hour was squeezed out"
    assert hook(page, "__tvflux.gapPoints()") == 60
    # the crosshair over the gap says there were no trades, with that minute's time
    inside = before + 30 * 60
    box = page.locator("#chart").bounding_box()
    page.mouse.move(box["x"] + x_of(page, inside), box["y"] + box["height"] / 2)
    page.wait_for_function("() => document.getElementById('lg-t').textContent.endsWith('no trades')")
    assert page.locator("#lg-t").inner_text().startswith(local(inside, timezone.utc))
    assert page.locator("#lg-c").inner_text() == "—"

    # a two-day outage: drawn as wide as GAP_MAX_POINTS slots, its labels still true
    old = start - 2 * 86_400_000
    fe_server.post_trades(trade_run("GAPUSD", old - 3_600_000, old, 20_000, 50.0, "gap-old"))
    loads = hook(page, "__tvflux.historyLoads")
    page.evaluate("() => __tvflux.loadLive()")
    wait_reload(page, loads)
    page.evaluate("() => __tvflux.chart.timeScale().fitContent()")
    cap = page.evaluate("() => TvfluxGaps.GAP_MAX_POINTS")
    assert hook(page, "__tvflux.gapPoints()") == 60 + cap
    last_old, first_new = (old - 60_000) // 1000, start // 1000
    assert page.evaluate("() => __tvflux.chart.timeScale().getVisibleLogicalRange().to") > 0
    assert round(slots_between(page, last_old, first_new)) == cap + 1

    # the symbol trades again after a quiet hour: the live bar lands after its gap, not
    # next to the bar an hour before
    points = hook(page, "__tvflux.gapPoints()")
    last_bar = chart_bars(page)[-1]["time"]
    ticks = hook(page, "__tvflux.ticks")
    trade_ms = int(time.time() * 1000)
    fe_server.post_trades([{"symbol": "GAPUSD", "price": 51.0, "size": 0.1, "time": trade_ms}])
    page.wait_for_function("n => __tvflux.ticks > n", arg=ticks)
    new_bar = trade_ms // 60_000 * 60
    assert chart_bars(page)[-1]["time"] == new_bar
    missing = (new_bar - last_bar) // 60 - 1
    assert missing >= 59
    assert round(slots_between(page, last_bar, new_bar)) == missing + 1
    assert hook(page, "__tvflux.gapPoints()") == points + missing
    console.assert_clean()


# ---- stale -----------------------------------------------------------------------------------


def test_a_symbol_without_recent_trades_is_not_called_live(page, fe_server, seeded):
    now_ms = int(time.time() * 1000)
    end = now_ms - now_ms % 60_000 - 2 * 86_400_000  # its last trade: two days ago
    fe_server.post_trades(trade_run("OLDUSD", end - 3_600_000, end, 20_000, 10.0, "old"), history=True)  # a new symbol
    last_trade_s = (end - 20_000) // 1000
    open_chart(page, fe_server, "?symbol=OLDUSD&resolution=5")
    want = f"No trades since {local(last_trade_s, timezone.utc)} UTC"
    page.wait_for_function("v => document.querySelector('#status .label').textContent === v", arg=want)
    assert page.get_attribute("#status", "data-fresh") == "stale"
    assert page.get_attribute("#status", "data-state") == "open"  # the connection itself is fine

    # in the chosen zone too
    page.select_option("#tz", "Asia/Kolkata")
    assert page.locator("#status .label").inner_text() == f"No trades since {local(last_trade_s, KOLKATA)} UTC+5:30"
    page.select_option("#tz", "UTC")

    # a symbol that trades is Live
    pick_symbol(page, "BTCUSD")
    page.wait_for_function("() => document.getElementById('status').dataset.fresh === 'live'")
    assert page.locator("#status .label").inner_text() == "Live"

    # and the old one comes alive with its next trade, without a reload
    pick_symbol(page, "OLDUSD")
    page.wait_for_function("() => document.getElementById('status').dataset.fresh === 'stale'")
    ticks = hook(page, "__tvflux.ticks")
    fe_server.post_trades([{"symbol": "OLDUSD", "price": 10.5, "size": 0.2, "time": int(time.time() * 1000)}])
    page.wait_for_function("n => __tvflux.ticks > n", arg=ticks)
    wait_until(
        lambda: page.locator("#status .label").inner_text() == "Live", timeout_s=5, what="status Live after a trade"
    )
