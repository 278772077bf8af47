"""frontend/datafeed.js driven the way the TradingView Charting Library drives it.

A bare harness document (same origin as the service, which needs no test route) loads
only ``/static/datafeed.js`` and counts WebSocket constructions. Everything else is the
real service.

The library's rules checked here: callbacks are asynchronous; getBars pages back with
``countBack`` until ``noData``; bars come in ascending, unique, resolution-aligned times;
``onTick`` never goes back in time and stops at ``unsubscribeBars``; every listener
shares one socket; resets reach ``onResetCacheNeededCallback``. The datafeed speaks its
default, protocol v2 (``/ws?v=2``, frames by topic); test_datafeed_v2.py covers what is
specific to v2 (shared topics, edge URLs, ``status``) and the old protocol.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import pytest

from tests.frontend.helpers import wait_until

HARNESS_HTML = """<!doctype html>
<meta charset="utf-8"><link rel="icon" href="data:,">
<script>
  // Count sockets (the datafeed must multiplex every listener over one) and keep what
  // the server sent, parsed, to check the protocol on the wire.
  window.__sockets = [];
  window.__frames = [];
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      window.__sockets.push(String(url));
      // Registered before the datafeed's onmessage, so a frame is recorded before the
      // datafeed acts on it, in the same event.
      this.addEventListener("message", (e) => window.__frames.push(JSON.parse(e.data)));
    }
  };
</script>
<script src="/static/datafeed.js"></script>
<script>
  const feed = new TvfluxDatafeed({ baseUrl: "" });
  const cf = (window.cf = { feed, ticks: {}, resets: {} });
  cf.onReady = () => new Promise((resolve) => {
    let returned = false;
    feed.onReady((cfg) => resolve({ cfg, sync: !returned }));
    returned = true;
  });
  cf.resolve = (name) => new Promise((resolve) => {
    let returned = false;
    feed.resolveSymbol(name, (info) => resolve({ info, sync: !returned }), (err) => resolve({ error: String(err) }));
    returned = true;
  });
  cf.search = (q) => new Promise((resolve) => feed.searchSymbols(q, "", "", resolve));
  cf.getBars = (info, res, params) => new Promise((resolve) =>
    feed.getBars(info, res, params, (bars, meta) => resolve({ bars, meta }), (err) => resolve({ error: String(err) })));
  cf.step = (res) => (TvfluxDatafeed.resolutionToMs(res) || 31 * 86400000) / 1000;
  // Page back from now with countBack until noData, like the library's scroll-back.
  cf.pageAll = async (symbol, res, countBack, maxPages) => {
    const { info } = await cf.resolve(symbol);
    const step = cf.step(res);
    let to = Math.floor(Date.now() / 1000) + step;
    const pages = [];
    let bars = [];
    for (let i = 0; i < maxPages; i++) {
      const r = await cf.getBars(info, res, { from: to - countBack * step, to, countBack, firstDataRequest: i === 0 });
      if (r.error) return { error: r.error, pages };
      pages.push({ to, n: r.bars.length, noData: r.meta.noData, nextTime: r.meta.nextTime ?? null,
                   maxTime: r.bars.length ? r.bars[r.bars.length - 1].time : null });
      bars = r.bars.concat(bars);
      if (r.meta.noData) break;
      to = Math.floor(r.bars[0].time / 1000);
    }
    return { bars, pages };
  };
  cf.listen = async (id, symbol, res, feedObj) => {
    const f = feedObj || feed;
    const { info } = await cf.resolve(symbol);
    cf.ticks[id] = [];
    cf.resets[id] = 0;
    f.subscribeBars(info, res, (bar) => cf.ticks[id].push(bar), id, () => { cf.resets[id] += 1; });
  };
</script>
"""

PAGED = [  # (resolution, countBack): the library asks for roughly a screen at a time
    ("1S", 1000),
    ("1", 500),
    ("5", 200),
    ("60", 200),
    ("1D", 100),
    ("1W", 50),
    ("1M", 50),
]


def aligned(resolution: str, t_ms: int) -> bool:
    if resolution.endswith("S"):
        return t_ms % (int(resolution[:-1]) * 1000) == 0
    if resolution.isdigit():
        return t_ms % (int(resolution) * 60_000) == 0
    day = t_ms // 86_400_000
    if t_ms % 86_400_000:
        return False
    if resolution == "1D":
        return True
    if resolution == "1W":
        return (day - 4) % 7 == 0  # 1970-01-05 was the first Monday
    if resolution == "1M":
        return datetime.fromtimestamp(t_ms / 1000, timezone.utc).day == 1
    raise AssertionError(resolution)


@pytest.fixture
def harness(page: Any, fe_server: Any, seeded: Any, console: Any) -> Any:
    console.allow(r"/favicon\.ico")  # asked for by the JS document we start from
    # The document must really come from the server: Chromium's Local Network Access
    # checks block a WebSocket to 127.0.0.1 from a page of unknown address space (one
    # fulfilled by Playwright's router). So load a real same-origin URL, then swap the
    # document for the harness.
    page.goto(fe_server.base_url + "/static/datafeed.js")
    page.set_content(HARNESS_HTML)
    page.wait_for_function("() => window.cf && window.TvfluxDatafeed")
    return page


def js(page: Any, body: str, arg: Any = None) -> Any:
    return page.evaluate(f"async (arg) => {{ {body} }}", arg)


def test_on_ready_resolve_and_search(harness: Any, console: Any) -> None:
    console.allow(r"status of 404 .*/udf/symbols\?symbol=NOSUCHSYMBOL")
    ready = js(harness, "return cf.onReady();")
    assert ready["sync"] is False, "onReady must call back asynchronously"
    for r in ("1S", "5S", "15S", "30S", "1", "3", "5", "15", "30", "45", "60", "120", "180", "240", "360", "480", "720", "1D", "3D", "1W", "1M"):
        assert r in ready["cfg"]["supported_resolutions"], r

    res = js(harness, "return cf.resolve('BTCUSD');")
    assert res["sync"] is False, "resolveSymbol must call back asynchronously"
    info = res["info"]
    assert info["ticker"] == "BTCUSD"
    assert info["session"] == "24x7" and info["timezone"] == "Etc/UTC"
    assert isinstance(info["pricescale"], int) and info["pricescale"] >= 1
    assert info["has_intraday"] and info["has_seconds"] and info["has_daily"] and info["has_weekly_and_monthly"]
    assert info["seconds_multipliers"] == ["1", "5", "15", "30"]
    assert "60" in info["intraday_multipliers"] and "1D" in info["supported_resolutions"]
    assert info["data_status"] == "streaming"
    # "EXCHANGE:SYMBOL", as the library's symbol search hands it back, resolves too.
    assert js(harness, "return cf.resolve('tvflux:ETHUSD');")["info"]["ticker"] == "ETHUSD"
    assert js(harness, "return cf.resolve('NOSUCHSYMBOL');")["error"] == "unknown_symbol"

    found = js(harness, "return cf.search('eth');")
    assert [s["symbol"] for s in found] == ["ETHUSD"]
    assert {s["symbol"] for s in js(harness, "return cf.search('');")} >= {"BTCUSD", "ETHUSD", "LTCUSD"}


@pytest.mark.parametrize(("resolution", "count_back"), PAGED)
def test_get_bars_pages_back_to_no_data(harness: Any, seeded: Any, resolution: str, count_back: int) -> None:
    out = js(harness, "return cf.pageAll('BTCUSD', arg[0], arg[1], 60);", [resolution, count_back])
    assert "error" not in out, out.get("error")
    pages, bars = out["pages"], out["bars"]
    assert pages[-1]["noData"] and pages[-1]["n"] == 0, f"paging did not end in noData: {pages[-3:]}"
    for page, nxt in zip(pages, pages[1:]):
        # countBack wins over from: a short page is only allowed right before noData.
        assert page["n"] == count_back or nxt["noData"], (page, nxt)
    for page in pages:
        assert page["n"] <= count_back
        if page["maxTime"] is not None:
            assert page["maxTime"] < page["to"] * 1000, "a bar at or after the exclusive 'to'"
    times = [b["time"] for b in bars]
    assert times, "no bars at all"
    assert all(a < b for a, b in zip(times, times[1:])), "bar times must be ascending and unique across pages"
    bad = [t for t in times if not aligned(resolution, t)]
    assert not bad, f"{len(bad)} bars not aligned to {resolution}, e.g. {bad[:3]}"
    for b in bars:
        assert b["low"] <= min(b["open"], b["close"]) <= max(b["open"], b["close"]) <= b["high"], b
        assert b["volume"] >= 0
    # Paging reached the oldest seeded data.
    assert times[0] <= seeded.start_ms


def test_resolutions_agree(harness: Any, seeded: Any) -> None:
    """A 60-minute bar is exactly its 1-minute bars composed (seeded, closed hours)."""
    m1 = js(harness, "return cf.pageAll('ETHUSD', '1', 1000, 5);")["bars"]
    h1 = js(harness, "return cf.pageAll('ETHUSD', '60', 200, 3);")["bars"]
    by_hour: dict[int, list[dict[str, Any]]] = {}
    for b in m1:
        by_hour.setdefault(b["time"] // 3_600_000 * 3_600_000, []).append(b)
    lo, hi = seeded.minute_start_ms + 3_600_000, seeded.end_ms - 3_600_000  # whole hours inside the dense seed
    checked = 0
    for h in h1:
        if not (lo <= h["time"] < hi):
            continue
        parts = by_hour[h["time"]]
        assert h["open"] == parts[0]["open"] and h["close"] == parts[-1]["close"]
        assert h["high"] == max(p["high"] for p in parts) and h["low"] == min(p["low"] for p in parts)
        assert h["volume"] == pytest.approx(sum(p["volume"] for p in parts), rel=1e-9)
        checked += 1
    assert checked >= 8


def test_get_bars_reports_errors(harness: Any, console: Any) -> None:
    console.allow(r"status of 400 .*/api/bars\?symbol=BTCUSD&resolution=7&")
    r = js(harness, "const {info} = await cf.resolve('BTCUSD'); return cf.getBars(info, '7', {from: 0, to: 100, countBack: 10, firstDataRequest: true});")
    assert "error" in r and "resolution" in r["error"].lower()


def test_subscribe_switch_resolution_unsubscribe(harness: Any, fe_server: Any) -> None:
    def post(price: float) -> int:
        t = int(time.time() * 1000)
        fe_server.post_trades([{"symbol": "BTCUSD", "price": price, "size": 0.01, "time": t}])
        return t

    def ticks(gid: str) -> list[dict[str, Any]]:
        return harness.evaluate("id => cf.ticks[id]", gid)

    def saw(gid: str, price: float) -> Any:
        return next((b for b in ticks(gid) if b["high"] >= price), None)

    js(harness, "await cf.listen('g1', 'BTCUSD', '1');")
    t1 = post(1_000_000.0)
    bar = wait_until(lambda: saw("g1", 1_000_000.0), timeout_s=10, what="the posted trade on the 1-minute listener")
    assert bar["time"] == t1 // 60_000 * 60_000

    # Resolution switch, the library's way: unsubscribe the old guid, subscribe a new one.
    js(harness, "cf.feed.unsubscribeBars('g1'); await cf.listen('g2', 'BTCUSD', '5');")
    g1_count = len(ticks("g1"))
    t2 = post(2_000_000.0)
    bar = wait_until(lambda: saw("g2", 2_000_000.0), timeout_s=10, what="the posted trade on the 5-minute listener")
    assert bar["time"] == t2 // 300_000 * 300_000
    assert len(ticks("g1")) == g1_count, "onTick called after unsubscribeBars"

    for gid, res in (("g1", "1"), ("g2", "5")):
        times = [b["time"] for b in ticks(gid)]
        assert all(a <= b for a, b in zip(times, times[1:])), f"{gid}: onTick went back in time"
        assert all(aligned(res, t) for t in times)
    assert harness.evaluate("window.__sockets") == [fe_server.ws_url + "/ws?v=2"], "listeners must share one v2 WebSocket"
    # v2 on the wire: each subscribe answered with its topic, bars sent by topic only.
    frames = harness.evaluate("window.__frames")
    assert {"type": "subscribed", "id": "g2", "topic": "BTCUSD@5"} in frames
    bar_frames = [f for f in frames if f["type"] == "bar"]
    assert bar_frames and all("topic" in f and "id" not in f for f in bar_frames)

    # The datafeed itself drops an older bar even if a server sent one, and passes an
    # update of the current bar. One synchronous evaluate, so no real frame interleaves.
    counts = harness.evaluate(
        """() => {
          const t = cf.ticks.g2, last = t[t.length - 1], inject = (bar) =>
            cf.feed.live.onMessage(JSON.stringify({ type: 'bar', topic: 'BTCUSD@5', bar, closed: false }));
          const before = t.length;
          inject({ ...last, time: last.time - 300000 });
          const afterOlder = t.length;
          inject({ ...last });
          return [before, afterOlder, t.length];
        }"""
    )
    assert counts[1] == counts[0], "an older bar reached onTick"
    assert counts[2] == counts[0] + 1, "an update of the current bar was dropped"

    # A late trade (older than the live bar) makes the server tell subscribers to refetch.
    resets = harness.evaluate("cf.resets.g2")
    fe_server.post_trades([{"symbol": "BTCUSD", "price": 61_000.0, "size": 0.01, "time": int(time.time() * 1000) - 30 * 60_000}])
    wait_until(lambda: harness.evaluate("cf.resets.g2") > resets, timeout_s=15, what="a reset after a late trade")

    js(harness, "cf.feed.unsubscribeBars('g2');")
    n = len(ticks("g2"))
    post(3_000_000.0)
    js(harness, "await cf.listen('g3', 'BTCUSD', '1');")
    wait_until(lambda: saw("g3", 3_000_000.0), timeout_s=10, what="a fresh listener seeing the trade")
    assert len(ticks("g2")) == n


def test_heartbeat_timeout_reconnects_and_resubscribes(harness: Any, console: Any) -> None:
    js(
        harness,
        """
        cf.hb = new TvfluxDatafeed({ baseUrl: "", heartbeat: { intervalMs: 150, timeoutMs: 400 },
                                     reconnect: { minDelayMs: 100, maxDelayMs: 400 } });
        cf.hbStates = [];
        cf.hb.onConnectionChange((s) => cf.hbStates.push(s));
        cf.pings = 0;
        const send = cf.hb.live.send.bind(cf.hb.live);
        cf.hb.live.send = (m) => { if (m.op === 'ping') cf.pings += 1; return send(m); };
        await cf.listen('h1', 'LTCUSD', '1', cf.hb);  // a symbol no other test writes to
        """,
    )
    harness.wait_for_function("() => cf.hb.connectionState === 'open' && cf.ticks.h1.length > 0")
    url = harness.evaluate("window.__sockets[0]")
    # Pongs keep a healthy link up: several heartbeats, no second socket.
    harness.wait_for_function("() => cf.pings >= 5")
    assert harness.evaluate("window.__sockets.length") == 1

    # Now the link goes silent (a half-open TCP connection): no pong, no bars.
    # Only that socket goes silent: the next one's first frames (in v2 the `subscribed`
    # answers that bind listeners to topics) may come before this test could undo a hook.
    js(
        harness,
        """
        cf.resetsBefore = cf.resets.h1;
        const live = cf.hb.live, silent = live.ws, real = live.onMessage;
        live.onMessage = function (data) { if (this.ws !== silent) real.call(this, data); };
        """,
    )
    harness.wait_for_function("() => window.__sockets.length >= 2", timeout=5000)
    js(harness, "cf.ticksBefore = cf.ticks.h1.length;")
    # The reconnect asks the listener to refetch: bars may have been missed meanwhile.
    harness.wait_for_function("() => cf.hb.connectionState === 'open' && cf.resets.h1 > cf.resetsBefore")
    # Re-subscribed on the new socket: ticks flow again (synthetic trades run in the session server).
    harness.wait_for_function("() => cf.ticks.h1.length > cf.ticksBefore", timeout=10_000)
    states = harness.evaluate("cf.hbStates")
    assert states[:3] == ["closed", "connecting", "open"] and "closed" in states[3:], states
    # With a single URL every reconnect retries that one.
    assert set(harness.evaluate("window.__sockets.slice(1)")) == {url}
    js(harness, "cf.hb.destroy();")
