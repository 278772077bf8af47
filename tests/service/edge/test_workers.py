"""``tvflux serve --workers 2`` as a user runs it: one public port, two edge processes
holding the clients, the core behind them. Live bars (v1 and v2), history, ingest over
HTTP and over ``/ws/ingest`` all go through the one port; an edge killed mid-stream is
replaced, and its clients reconnect to the same port and continue with no wrong bar."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request

import psutil
import pytest
from websockets.sync.client import connect

from tests.service.api.test_ws import now_ms, recv_until


def edge_pids(core_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(core_pid)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture
def workers(server_factory):
    server = server_factory(workers="2", push_interval_ms="50", synthetic_rate="0")
    assert server.proc is not None
    wait_for(lambda: len(edge_pids(server.proc.pid)) == 2, 20, "two edge processes")
    return server


def subscribe_v2(ws, sub_id: str, symbol: str, resolution: str) -> str:
    ws.send(json.dumps({"op": "subscribe", "id": sub_id, "symbol": symbol, "resolution": resolution}))
    msg, _ = recv_until(ws, lambda m: m["type"] == "subscribed" and m["id"] == sub_id)
    return msg["topic"]


def test_live_bars_history_and_ingest_through_the_one_port(workers):
    s = workers
    t0 = now_ms()
    with connect(s.ws_url + "/ws?v=2") as a, connect(s.ws_url + "/ws?v=2") as b, connect(s.ws_url + "/ws") as v1:
        topic = subscribe_v2(a, "x", "BTCUSD", "1S")
        assert topic == "BTCUSD@1S" and subscribe_v2(b, "y", "BTCUSD", "1S") == topic
        v1.send(json.dumps({"op": "subscribe", "id": "old", "symbol": "BTCUSD", "resolution": "1S"}))
        s.post_trades([{"symbol": "BTCUSD", "price": 4321.5, "size": 2, "time": t0}])  # HTTP ingest, proxied
        got_a, _ = recv_until(a, lambda m: m["type"] == "bar" and m["bar"]["close"] == 4321.5, timeout_s=10)
        got_b, _ = recv_until(b, lambda m: m["type"] == "bar" and m["bar"]["close"] == 4321.5, timeout_s=10)
        assert got_a == got_b and got_a["topic"] == topic
        old, _ = recv_until(v1, lambda m: m["type"] == "bar" and m["bar"]["close"] == 4321.5, timeout_s=10)
        assert old["id"] == "old" and old["bar"] == got_a["bar"]
        # /ws/ingest is relayed to the core with its acks
        with connect(s.ws_url + "/ws/ingest") as ingest:
            ingest.send(json.dumps([{"symbol": "BTCUSD", "price": 4400.0, "size": 1, "time": now_ms()}]))
            ack = json.loads(ingest.recv(timeout=10))
            assert ack == {"type": "ack", "seq": 1, "accepted": 1, "duplicates": 0}
        recv_until(a, lambda m: m["type"] == "bar" and m["bar"]["high"] == 4400.0, timeout_s=10)
    # history through an edge: the same bars the core holds
    status, body = s.get(f"/api/bars?symbol=BTCUSD&resolution=1S&from={t0 // 1000 - 5}&to={now_ms() // 1000 + 1}")
    assert status == 200, body
    assert body["bars"][0]["open"] == 4321.5 and max(b["high"] for b in body["bars"]) == 4400.0
    status, page = s.get("/")
    assert status == 200 and "<html" in page.lower()
    status, ready = s.get("/health/ready")
    assert status == 200 and ready["role"] == "edge" and ready["upstream"]["live"] is True


def test_a_killed_edge_is_replaced_and_its_clients_continue_on_the_same_port(workers):
    s = workers
    assert s.proc is not None
    before = edge_pids(s.proc.pid)
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(connect(s.ws_url + "/ws?v=2")) for _ in range(8)]  # over both edges
        for i, ws in enumerate(sockets):
            subscribe_v2(ws, f"s{i}", "ETHUSD", "1S")
        # the kernel spreads connections over the edges: kill one that holds some of ours
        ports = {ws.socket.getsockname()[1] for ws in sockets}
        victim = next(
            pid
            for pid in before
            if any(c.raddr and c.raddr.port in ports for c in psutil.Process(pid).net_connections(kind="tcp"))
        )
        os.kill(victim, signal.SIGKILL)
        cut = []
        for ws in sockets:
            try:
                ws.send(json.dumps({"op": "ping"}))
                recv_until(ws, lambda m: m["type"] == "pong", timeout_s=3)
            except Exception:
                cut.append(ws)
        assert cut, "no client was on the killed edge"
        after = wait_for(
            lambda: (p := edge_pids(s.proc.pid)) and len(p) == 2 and victim not in p and p, 20, "a new edge"
        )
        assert victim not in after
        # what the datafeed does: reconnect to the same URL, subscribe again, refetch history
        for i, _ in enumerate(cut):
            with connect(s.ws_url + "/ws?v=2") as ws:
                subscribe_v2(ws, f"again{i}", "ETHUSD", "1S")
                t = now_ms()
                s.post_trades([{"symbol": "ETHUSD", "price": 2000.0 + i, "size": 1, "time": t}])
                bar, _ = recv_until(ws, lambda m, i=i: m["type"] == "bar" and m["bar"]["close"] == 2000.0 + i, 10)
                status, body = s.get(f"/api/bars?symbol=ETHUSD&resolution=1S&from={t // 1000 - 1}&to={t // 1000 + 1}")
                assert status == 200 and body["bars"][-1]["time"] == bar["bar"]["time"]
                assert body["bars"][-1]["close"] == 2000.0 + i


def test_stopping_the_core_stops_its_edges(workers):
    s = workers
    assert s.proc is not None
    pids = edge_pids(s.proc.pid)
    s.stop(signal.SIGKILL)  # however the core dies, no edge is left holding the port

    def gone() -> bool:
        for pid in pids:
            try:
                os.kill(pid, 0)
                return False
            except ProcessLookupError:
                continue
        return True

    wait_for(gone, 15, "the edges to exit")


def test_a_stalled_edge_never_slows_the_core(workers):
    """SIGSTOP one edge: the core's pushes to it only pile up in that one connection (the
    core writes without waiting; past TVFLUX_CLIENT_BUFFER_MAX_BYTES it would cut it off),
    ingest at the core goes on at full speed, and after SIGCONT clients on either edge get
    live bars."""
    s = workers
    assert s.proc is not None
    core_port = int(re.search(r"core on 127\.0\.0\.1:(\d+)", s.log()).group(1))  # type: ignore[union-attr]
    stalled = edge_pids(s.proc.pid)[0]
    with connect(s.ws_url + "/ws?v=2") as ws:
        subscribe_v2(ws, "x", "BTCUSD", "1S")
        os.kill(stalled, signal.SIGSTOP)
        try:
            started = time.monotonic()
            for i in range(100):
                body = json.dumps([{"symbol": "BTCUSD", "price": 100.0 + i, "size": 1, "time": now_ms()}]).encode()
                request = urllib.request.Request(
                    f"http://127.0.0.1:{core_port}/api/trades", data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    assert response.status == 200
            took_s = time.monotonic() - started
        finally:
            os.kill(stalled, signal.SIGCONT)
        assert took_s < 10, f"100 ingest requests took {took_s:.1f}s with an edge stopped"
    # whichever edge a new client lands on, live bars flow (the stopped one caught up or reconnected)
    for _ in range(4):
        with connect(s.ws_url + "/ws?v=2") as ws:
            subscribe_v2(ws, "y", "BTCUSD", "1S")
            price = 500.0 + _
            s.post_trades([{"symbol": "BTCUSD", "price": price, "size": 1, "time": now_ms()}])
            recv_until(ws, lambda m, p=price: m["type"] == "bar" and m["bar"]["close"] == p, timeout_s=15)


def test_a_removed_symbol_ends_its_subscriptions_at_the_edges_and_is_refused_there(workers):
    s = workers
    assert s.post("/api/admin/symbols", {"symbol": "EDGEUSD"})[0] == 200  # proxied to the core
    time.sleep(6)  # the edges learn the new symbol (they refresh the core's list every 5 s)
    with connect(s.ws_url + "/ws?v=2") as a, connect(s.ws_url + "/ws") as v1:
        subscribe_v2(a, "x", "EDGEUSD", "1S")
        v1.send(json.dumps({"op": "subscribe", "id": "old", "symbol": "EDGEUSD", "resolution": "1"}))
        s.post_trades([{"symbol": "EDGEUSD", "price": 5.0, "size": 1, "time": now_ms()}])
        recv_until(a, lambda m: m["type"] == "bar", timeout_s=10)
        recv_until(v1, lambda m: m["type"] == "bar", timeout_s=10)
        assert s.request("DELETE", "/api/admin/symbols?symbol=EDGEUSD")[0] == 200
        for ws, sub_id in ((a, "x"), (v1, "old")):
            err, _ = recv_until(ws, lambda m: m["type"] == "error", timeout_s=3)  # at once, not at the refresh
            assert err["id"] == sub_id and err["error"]["code"] == "unknown_symbol", err
        time.sleep(6)
        a.send(json.dumps({"op": "subscribe", "id": "y", "symbol": "EDGEUSD", "resolution": "1S"}))
        err, _ = recv_until(a, lambda m: m["type"] == "error")
        assert err["id"] == "y" and err["error"]["code"] == "unknown_symbol"


def stats(server) -> dict:
    with urllib.request.urlopen(server.base_url + "/api/stats", timeout=10) as resp:
        return json.loads(resp.read())


def test_stats_count_the_clients_at_the_edges_not_the_edges(workers):
    s = workers
    with connect(s.ws_url + "/ws?v=2") as a, connect(s.ws_url + "/ws?v=2") as b, connect(s.ws_url + "/ws") as c:
        subscribe_v2(a, "x", "BTCUSD", "1S")
        subscribe_v2(a, "y", "ETHUSD", "1")
        subscribe_v2(b, "z", "BTCUSD", "1S")
        c.send(json.dumps({"op": "ping"}))
        recv_until(c, lambda m: m["type"] == "pong")
        # the edges report every 2 s: three clients, three subscriptions, two edges
        seen = wait_for(
            lambda: (lambda got: got if (got["wsClients"], got["subscriptions"]) == (3, 3) else None)(stats(s)),
            10,
            "the edges' clients in /api/stats",
        )
        assert seen["edges"] == 2
