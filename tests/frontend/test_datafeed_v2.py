"""frontend/datafeed.js on live protocol v2, several edge URLs, and the old protocol.

Same harness as test_datafeed_conformance.py (a bare document with only
``/static/datafeed.js``, counting sockets and recording every frame the server sent), same
real service. v2: the server answers each subscribe with a topic and sends each topic's
frames once per connection; the datafeed fans them out to every listener of the topic.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import TVFLUX, free_port
from tests.frontend.helpers import wait_until
from tests.frontend.test_datafeed_conformance import harness, js
from tests.service.edge.test_workers import edge_pids

__all__ = ["harness"]  # the fixture, shared with the conformance tests

FAST_RECONNECT = "reconnect: { minDelayMs: 100, maxDelayMs: 400 }"


def post_now(server: Any, symbol: str, price: float) -> int:
    t = int(time.time() * 1000)
    server.post_trades([{"symbol": symbol, "price": price, "size": 0.01, "time": t}])
    return t


def ticks(page: Any, gid: str) -> list[dict[str, Any]]:
    return page.evaluate("id => cf.ticks[id]", gid)


def saw(page: Any, gid: str, price: float) -> Any:
    return next((b for b in ticks(page, gid) if b["high"] >= price), None)


def post_late(server: Any, symbol: str) -> None:
    """A trade older than the live bar: the server tells the series' listeners to refetch."""
    server.post_trades([{"symbol": symbol, "price": 60_500.0, "size": 0.01, "time": int(time.time() * 1000) - 20 * 60_000}])


def test_two_listeners_share_a_topic(harness: Any, fe_server: Any) -> None:
    js(harness, "await cf.listen('a', 'BTCUSD', '1'); await cf.listen('b', 'BTCUSD', '1');")
    subscribed = lambda: [f for f in harness.evaluate("window.__frames") if f["type"] == "subscribed"]  # noqa: E731
    wait_until(lambda: len(subscribed()) == 2, timeout_s=10, what="both subscribes answered")
    assert sorted((f["id"], f["topic"]) for f in subscribed()) == [("a", "BTCUSD@1"), ("b", "BTCUSD@1")]

    # Both are bound to the topic from here on: every bar frame after this mark must reach
    # both. (Counting from the mark: the bar `a` got on subscribing, before `b` was bound,
    # was for `a` only.) The prices top anything other tests post in this session.
    harness.evaluate("() => { cf.mark = { frames: window.__frames.length, a: cf.ticks.a.length, b: cf.ticks.b.length }; }")
    t = post_now(fe_server, "BTCUSD", 5_000_000.0)
    for gid in ("a", "b"):
        bar = wait_until(lambda gid=gid: saw(harness, gid, 5_000_000.0), timeout_s=10, what=f"the posted trade on listener {gid}")
        assert bar["time"] == t // 60_000 * 60_000
    assert harness.evaluate("window.__sockets") == [fe_server.ws_url + "/ws?v=2"]

    # The server sent each bar once (by topic) and both listeners got every one of them.
    # One evaluate: frames and ticks are read in the same task, no frame in between.
    wire, got_a, got_b = harness.evaluate(
        """() => {
          const bars = window.__frames.slice(cf.mark.frames).filter((f) => f.type === 'bar');
          if (bars.some((f) => 'id' in f || f.topic !== 'BTCUSD@1')) return [-1, 0, 0];
          return [bars.length, cf.ticks.a.length - cf.mark.a, cf.ticks.b.length - cf.mark.b];
        }"""
    )
    assert wire > 0, "bar frames must carry the topic and no id"
    assert got_a == got_b == wire, (wire, got_a, got_b)
    # Each listener got its own bar object (the library may keep and mutate what it gets).
    assert harness.evaluate("cf.ticks.a[cf.ticks.a.length - 1] !== cf.ticks.b[cf.ticks.b.length - 1]")

    # A reset of the topic reaches both listeners.
    before = harness.evaluate("[cf.resets.a, cf.resets.b]")
    post_late(fe_server, "BTCUSD")
    wait_until(
        lambda: harness.evaluate("cf.resets.a") > before[0] and harness.evaluate("cf.resets.b") > before[1],
        timeout_s=15,
        what="a reset on both listeners",
    )
    assert {"type": "reset", "topic": "BTCUSD@1"} in harness.evaluate("window.__frames")

    # After one listener leaves, the topic still streams to the other and only to it.
    js(harness, "cf.feed.unsubscribeBars('a');")
    n_a = len(ticks(harness, "a"))
    post_now(fe_server, "BTCUSD", 6_000_000.0)
    wait_until(lambda: saw(harness, "b", 6_000_000.0), timeout_s=10, what="the remaining listener seeing the trade")
    assert len(ticks(harness, "a")) == n_a, "onTick called after unsubscribeBars"
    for gid in ("a", "b"):
        times = [b["time"] for b in ticks(harness, gid)]
        assert all(x <= y for x, y in zip(times, times[1:])), f"{gid}: onTick went back in time"


def test_stale_topic_frames_and_answers_are_ignored(harness: Any) -> None:
    """Frames of a topic nobody listens to, and a late answer to a replaced subscribe, reach
    no listener (both can be in flight across an unsubscribe)."""
    js(harness, "await cf.listen('s', 'ETHUSD', '1');")
    harness.wait_for_function("() => cf.feed.live.subs.get('s').topic === 'ETHUSD@1' && cf.ticks.s.length > 0")
    out = harness.evaluate(
        """() => {
          const live = cf.feed.live, n = cf.ticks.s.length, last = cf.ticks.s[n - 1];
          const frame = (m) => live.onMessage(JSON.stringify(m));
          frame({ type: 'bar', topic: 'NOSUCH@1', bar: { ...last }, closed: false });
          frame({ type: 'reset', topic: 'NOSUCH@1' });
          const quiet = cf.ticks.s.length === n && cf.resets.s === 0;
          // The library re-uses guid 's' for another series before the server answered
          // the old subscribe: that old answer must not bind 's' to the old topic.
          live.pending.set('s', [{ stale: true }, live.subs.get('s')]);
          frame({ type: 'subscribed', id: 's', topic: 'BTCUSD@60' });
          return { quiet, stale: live.topics.has('BTCUSD@60'), still: live.subs.get('s').topic };
        }"""
    )
    assert out == {"quiet": True, "stale": False, "still": "ETHUSD@1"}


def test_status_pauses_without_reconnecting(harness: Any) -> None:
    js(
        harness,
        """
        cf.statuses = [];
        cf.st = new TvfluxDatafeed({ baseUrl: "", onStatus: (s) => cf.statuses.push(s) });
        await cf.listen('st', 'LTCUSD', '1', cf.st);
        """,
    )
    harness.wait_for_function("() => cf.st.connectionState === 'open' && cf.ticks.st.length > 0")
    assert harness.evaluate("cf.st.status") == {"live": True, "reason": None}
    # What an edge sends when it loses its upstream, then when it is back (we cannot make
    # this server lose one, so the frames are handed to the datafeed as the socket would).
    out = harness.evaluate(
        """() => {
          const warned = [], warn = console.warn;
          console.warn = (...a) => { warned.push(a.join(' ')); warn(...a); };
          try {
            cf.st.live.onMessage(JSON.stringify({ type: 'status', live: false, reason: 'upstream lost' }));
          } finally { console.warn = warn; }
          const live = cf.st.live;
          return { status: cf.st.status, statuses: cf.statuses.slice(), warned,
                   open: cf.st.connectionState, same: live.ws !== null && live.ws.readyState === 1,
                   retry: live.reconnectTimer !== null };
        }"""
    )
    assert out["status"] == {"live": False, "reason": "upstream lost"}
    assert out["statuses"] == [{"live": False, "reason": "upstream lost"}]
    assert any("upstream lost" in w for w in out["warned"]), out["warned"]
    assert out["open"] == "open" and out["same"] and not out["retry"], "status must not reconnect"
    # Bars keep being handled on the same socket while paused, and the resume is reported.
    n = len(ticks(harness, "st"))
    wait_until(lambda: len(ticks(harness, "st")) > n, timeout_s=10, what="ticks on the same socket")
    js(harness, "cf.st.live.onMessage(JSON.stringify({ type: 'status', live: true }));")
    assert harness.evaluate("cf.statuses") == [{"live": False, "reason": "upstream lost"}, {"live": True, "reason": None}]
    assert harness.evaluate("window.__sockets.length") == 1, "status must not reconnect"
    js(harness, "cf.st.destroy();")


def test_ws_urls_skip_a_dead_edge(harness: Any, fe_server: Any, console: Any) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/ws"  # nothing listens there
    console.allow(re.escape(f"WebSocket connection to '{dead}?v=2' failed"))
    real = fe_server.ws_url + "/ws"
    js(
        harness,
        f"""
        cf.rr = new TvfluxDatafeed({{ baseUrl: "", wsUrls: [arg[0], arg[1]], {FAST_RECONNECT} }});
        await cf.listen('r', 'LTCUSD', '1', cf.rr);
        """,
        [dead, real],
    )
    harness.wait_for_function("() => cf.rr.connectionState === 'open' && cf.ticks.r.length > 0")
    assert harness.evaluate("window.__sockets") == [dead + "?v=2", real + "?v=2"]
    assert harness.evaluate("cf.rr.currentWsUrl") == real

    # Round robin: the next reconnect goes back to the first URL (still dead), then on.
    js(harness, "cf.resetsBefore = cf.resets.r; cf.rr.live.dropSocket();")
    harness.wait_for_function("() => window.__sockets.length >= 4 && cf.rr.connectionState === 'open'")
    assert harness.evaluate("window.__sockets") == [dead + "?v=2", real + "?v=2", dead + "?v=2", real + "?v=2"]
    # Reconnected: re-subscribed (ticks flow) and told to refetch what it may have missed.
    harness.wait_for_function("() => cf.resets.r > cf.resetsBefore")
    n = len(ticks(harness, "r"))
    wait_until(lambda: len(ticks(harness, "r")) > n, timeout_s=10, what="ticks after the reconnect")
    js(harness, "cf.rr.destroy();")


def test_edge_dies_datafeed_moves_to_the_next(harness: Any, fe_server: Any, server_factory: Any, console: Any) -> None:
    """Two real servers as edges; the first is killed: the listener heals on the second."""
    edge = server_factory(synthetic_rate="30")
    first, second = edge.ws_url + "/ws", fe_server.ws_url + "/ws"
    console.allow(re.escape(f"WebSocket connection to '{first}?v=2' failed"))
    js(
        harness,
        f"""
        cf.ed = new TvfluxDatafeed({{ baseUrl: "", wsUrls: [arg[0], arg[1]], {FAST_RECONNECT} }});
        cf.edStates = [];
        cf.ed.onConnectionChange((s) => cf.edStates.push(s));
        await cf.listen('e', 'LTCUSD', '1', cf.ed);
        """,
        [first, second],
    )
    harness.wait_for_function("() => cf.ed.connectionState === 'open' && cf.ticks.e.length > 0")
    assert harness.evaluate("window.__sockets") == [first + "?v=2"]

    js(harness, "cf.resetsBefore = cf.resets.e;")
    edge.stop(signal.SIGKILL)
    harness.wait_for_function("(url) => cf.ed.currentWsUrl === url && cf.ed.connectionState === 'open'", arg=second)
    assert harness.evaluate("window.__sockets") == [first + "?v=2", second + "?v=2"]
    assert "closed" in harness.evaluate("cf.edStates")[3:]
    # The listener was asked to refetch history and gets live bars from the second edge.
    harness.wait_for_function("() => cf.resets.e > cf.resetsBefore")
    post_now(fe_server, "LTCUSD", 900_000.0)
    wait_until(lambda: saw(harness, "e", 900_000.0), timeout_s=10, what="a trade of the second edge on the listener")
    js(harness, "cf.ed.destroy();")


def test_protocol_1_still_works(harness: Any, fe_server: Any) -> None:
    js(
        harness,
        """
        cf.v1 = new TvfluxDatafeed({ baseUrl: "", protocol: 1 });
        await cf.listen('p', 'ETHUSD', '1', cf.v1);
        await cf.listen('q', 'ETHUSD', '1', cf.v1);
        """,
    )
    post_now(fe_server, "ETHUSD", 400_000.0)
    for gid in ("p", "q"):
        wait_until(lambda gid=gid: saw(harness, gid, 400_000.0), timeout_s=10, what=f"the posted trade on v1 listener {gid}")
    v1_url = fe_server.ws_url + "/ws"
    assert v1_url in harness.evaluate("window.__sockets")
    assert harness.evaluate("cf.v1.live.ws.url") == v1_url  # no ?v=: the old protocol
    # Old protocol on the wire: no topics, one bar message per listener id.
    frames = harness.evaluate("window.__frames")
    v1_bars = [f for f in frames if f["type"] == "bar" and f.get("id") in ("p", "q")]
    assert {f["id"] for f in v1_bars} == {"p", "q"} and not any("topic" in f for f in v1_bars)
    assert not any(f["type"] == "subscribed" and f["id"] in ("p", "q") for f in frames)

    before = harness.evaluate("[cf.resets.p, cf.resets.q]")
    post_late(fe_server, "ETHUSD")
    wait_until(
        lambda: harness.evaluate("cf.resets.p") > before[0] and harness.evaluate("cf.resets.q") > before[1],
        timeout_s=15,
        what="a v1 reset on both listeners",
    )
    js(harness, "cf.v1.destroy();")


def test_unknown_protocol_is_refused(harness: Any) -> None:
    err = harness.evaluate("() => { try { new TvfluxDatafeed({ protocol: 3 }); return null; } catch (e) { return String(e); } }")
    assert err is not None and "protocol" in err


# ---- real edges: tvflux serve --workers, and tvflux edge with its core going away ----------


def test_killed_edges_are_survived(harness: Any, server_factory: Any, console: Any) -> None:
    """``tvflux serve --workers 2``: both edge processes are killed under the datafeed; the
    core starts new ones on the same port and the listener heals on one of them."""
    server = server_factory(workers="2", synthetic_rate="30")
    wait_until(lambda: len(edge_pids(server.proc.pid)) == 2, timeout_s=20, what="two edge processes")
    url = server.ws_url + "/ws"
    # While no edge listens, connecting fails (and Chromium says so on the console).
    console.allow(re.escape(f"WebSocket connection to '{url}?v=2' failed"))
    js(
        harness,
        f"""
        cf.wk = new TvfluxDatafeed({{ baseUrl: "", wsUrl: arg, {FAST_RECONNECT} }});
        await cf.listen('w', 'LTCUSD', '1', cf.wk);
        """,
        url,
    )
    harness.wait_for_function("() => cf.wk.connectionState === 'open' && cf.ticks.w.length > 0", timeout=20_000)
    before = edge_pids(server.proc.pid)
    js(harness, "cf.resetsBefore = cf.resets.w;")
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: len(p := edge_pids(server.proc.pid)) == 2 and not set(p) & set(before),
        timeout_s=20,
        what="two new edge processes",
    )
    # Reconnected to the one URL, re-subscribed (retrying while the new edge had no upstream
    # yet), told to refetch history, and ticking again.
    harness.wait_for_function("() => cf.wk.connectionState === 'open' && cf.resets.w > cf.resetsBefore", timeout=20_000)
    n = len(ticks(harness, "w"))
    wait_until(lambda: len(ticks(harness, "w")) > n, timeout_s=20, what="ticks from a new edge")
    assert set(harness.evaluate("window.__sockets")) == {url + "?v=2"}
    times = [b["time"] for b in ticks(harness, "w")]
    assert all(x <= y for x, y in zip(times, times[1:])), "onTick went back in time"
    js(harness, "cf.wk.destroy();")


@pytest.fixture
def edge_without_core(server_factory: Any) -> Iterator[tuple[Any, str]]:
    """A ``tvflux edge`` whose core (synthetic trades on) is not started yet: (core, edge /ws URL)."""
    core = server_factory(start=False, synthetic_rate="30")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tvflux-edge-") as data_dir:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TVFLUX_")},
            "TVFLUX_HOST": "127.0.0.1",
            "TVFLUX_PORT": str(port),
            "TVFLUX_DATA_DIR": data_dir,
            "TVFLUX_LOG_LEVEL": "WARNING",
        }
        with open(os.path.join(data_dir, "edge.log"), "ab") as log:
            edge = subprocess.Popen([TVFLUX, "edge", "--core", core.base_url], env=env, stdout=log, stderr=log)
        try:
            import httpx

            def up() -> bool:
                assert edge.poll() is None, f"tvflux edge exited with {edge.returncode}"
                return httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2).status_code == 200

            wait_until(up, timeout_s=20, what="tvflux edge listening")
            yield core, f"ws://127.0.0.1:{port}/ws"
        finally:
            edge.kill()
            edge.wait(10)


def test_edge_losing_its_core(harness: Any, edge_without_core: tuple[Any, str]) -> None:
    """An edge that never reached its core refuses subscribes (it does not know the core's
    symbols yet); once it has them it takes subscribes even while its upstream is down and
    says `status`. The datafeed keeps its socket, shows the pause, and heals when the core
    is back."""
    core, url = edge_without_core
    js(
        harness,
        f"""
        cf.statuses = [];
        cf.eg = new TvfluxDatafeed({{ baseUrl: "", wsUrl: arg, onStatus: (s) => cf.statuses.push(s), {FAST_RECONNECT} }});
        await cf.listen('u', 'LTCUSD', '1', cf.eg);
        """,
        url,
    )
    # No core: the edge answers the subscribe with an error that passes; the datafeed retries.
    harness.wait_for_function(
        "() => window.__frames.filter((f) => f.type === 'error' && f.id === 'u' && f.error.code === 'store_unavailable').length >= 2",
        timeout=20_000,
    )
    assert harness.evaluate("cf.eg.connectionState") == "open" and harness.evaluate("cf.ticks.u.length") == 0

    # The core comes: the edge says it is live, the datafeed subscribes again at once, the
    # listener gets bars and is reset (it missed everything since its history).
    core.start()
    harness.wait_for_function("() => cf.ticks.u.length > 0 && cf.resets.u >= 1", timeout=30_000)
    assert {"type": "status", "live": True} in harness.evaluate("window.__frames")

    # The core dies: the edge reports the loss; the socket stays, no reconnect.
    resets = harness.evaluate("cf.resets.u")
    core.stop(signal.SIGKILL)
    harness.wait_for_function("() => cf.statuses.length >= 1", timeout=20_000)
    status = harness.evaluate("cf.eg.status")
    assert status["live"] is False and status["reason"], status
    assert harness.evaluate("cf.eg.connectionState") == "open"

    # Back again: live, every topic reset, bars flow on the same socket.
    core.start()
    harness.wait_for_function("(r) => cf.eg.status.live && cf.resets.u > r", arg=resets, timeout=30_000)
    n = len(ticks(harness, "u"))
    wait_until(lambda: len(ticks(harness, "u")) > n, timeout_s=20, what="ticks after the core is back")
    statuses = harness.evaluate("cf.statuses.map((s) => s.live)")
    # [False, True] for the kill and restart, maybe preceded by one such pair from the first
    # start (a subscribe taken between the symbols and the upstream link is told live false)
    assert statuses[-2:] == [False, True] and statuses in ([False, True], [False, True, False, True]), statuses
    assert harness.evaluate("window.__sockets") == [url + "?v=2"], "status must not reconnect"
    js(harness, "cf.eg.destroy();")
