"""Edges on other hosts, for real: four network namespaces made here — one core, one NATS
broker, two edge hosts — and this test as the clients' host. Live bars reach clients of
both edges as the same bytes; history goes through the edges; stopping the broker makes
the edges unready and tells their clients, and when it is back they get a ``reset`` and
continue; a stalled edge does not slow the core's ingest."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests import netns
from tests.nats_server import nats_server_binary_or_skip
from tests.service.api.test_ws import now_ms, recv_until

TVFLUX = str(Path(sys.executable).parent / "tvflux")
PORT = 8000
TOKEN = "multihost-test-token"


def http(url: str, body: object = None, token: str | None = None, timeout_s: float = 10) -> tuple[int, object]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_status(url: str, want: int, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = http(url, timeout_s=2)
            if last[0] == want:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{what}: no {want} from {url} in {timeout_s}s (last: {last})")


@pytest.fixture
def hosts():
    why = netns.unavailable()
    if why is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"the multi-host test cannot run in CI: {why}", pytrace=False)
        pytest.skip(why)
    nats = nats_server_binary_or_skip()
    net = netns.Network(["core", "broker", "edge1", "edge2"])
    with tempfile.TemporaryDirectory(prefix="tvflux-multihost-") as tmp:
        work = Path(tmp)
        broker_url = f"nats://{net['broker'].address}:4222"
        base = {k: v for k, v in os.environ.items() if not k.startswith("TVFLUX_")}

        def start_broker():
            return net["broker"].spawn(
                [nats, "-a", net["broker"].address, "-p", "4222"], env=base, log=work / "nats.log"
            )

        try:
            broker = start_broker()
            core_env = {
                **base,
                "TVFLUX_HOST": net["core"].address,
                "TVFLUX_PORT": str(PORT),
                "TVFLUX_DATA_DIR": str(work / "core"),
                "TVFLUX_BROKER_URL": broker_url,
                "TVFLUX_INGEST_TOKEN": TOKEN,
                "TVFLUX_ADMIN_TOKEN": TOKEN + "-admin",
                "TVFLUX_SYNTHETIC_RATE": "0",
                "TVFLUX_SYNTHETIC_BACKFILL_S": "0",
                "TVFLUX_PRICE_BAND_PCT": "0",  # made-up prices (100, then 200)
                "TVFLUX_PUSH_INTERVAL_MS": "50",
                "TVFLUX_LOG_LEVEL": "INFO",
            }
            net["core"].spawn([TVFLUX, "serve"], env=core_env, log=work / "core.log")
            core_url = f"http://{net['core'].address}:{PORT}"
            edges = {}
            for name in ("edge1", "edge2"):
                env = {
                    **core_env,
                    "TVFLUX_HOST": net[name].address,
                    "TVFLUX_DATA_DIR": str(work / name),
                    "TVFLUX_BROKER_URL": "",
                }
                edges[name] = net[name].spawn(
                    [TVFLUX, "edge", "--core", core_url, "--broker", broker_url], env=env, log=work / f"{name}.log"
                )
            wait_status(core_url + "/health/ready", 200, 60, "the core")
            for name in edges:
                wait_status(f"http://{net[name].address}:{PORT}/health/ready", 200, 30, name)
            yield net, core_url, edges, start_broker, broker, work
        except BaseException:
            for log in sorted(work.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
            raise
        finally:
            net.close()


def post_trade(core_url: str, price: float, symbol: str = "BTCUSD") -> None:
    status, body = http(
        core_url + "/api/trades", [{"symbol": symbol, "price": price, "size": 1, "time": now_ms()}], token=TOKEN
    )
    assert status == 200, body


def subscribe(ws, sub_id: str) -> None:
    ws.send(json.dumps({"op": "subscribe", "id": sub_id, "symbol": "BTCUSD", "resolution": "1S"}))


def raw_until(ws, predicate, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            raw = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        if predicate(json.loads(raw)):
            return raw
    raise AssertionError(f"no matching frame in {timeout_s}s")


@pytest.mark.timeout(240)
def test_two_edge_hosts_one_core_one_broker(hosts):
    net, core_url, edges, start_broker, broker, work = hosts
    edge1 = f"ws://{net['edge1'].address}:{PORT}"
    edge2 = f"ws://{net['edge2'].address}:{PORT}"
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(connect(edge1 + "/ws?v=2"))
        b = stack.enter_context(connect(edge2 + "/ws?v=2"))
        old = stack.enter_context(connect(edge2 + "/ws"))
        for ws, sub_id in ((a, "a"), (b, "b"), (old, "old")):
            subscribe(ws, sub_id)
        recv_until(a, lambda m: m["type"] == "subscribed")
        recv_until(b, lambda m: m["type"] == "subscribed")

        # the same bytes, encoded once by the core, through the broker to both hosts
        def bar_at(price):
            return lambda m: m["type"] == "bar" and m["bar"]["close"] == price

        post_trade(core_url, 101.5)
        got_a, got_b = raw_until(a, bar_at(101.5)), raw_until(b, bar_at(101.5))
        assert got_a == got_b and json.loads(got_a)["topic"] == "BTCUSD@1S"
        v1 = json.loads(raw_until(old, bar_at(101.5)))
        assert v1["id"] == "old" and v1["bar"] == json.loads(got_a)["bar"]

        # history through an edge is the core's
        t = now_ms() // 1000
        path = f"/api/bars?symbol=BTCUSD&resolution=1S&from={t - 30}&to={t + 2}"
        assert http(f"http://{net['edge1'].address}:{PORT}{path}") == http(core_url + path)
        # an edge host is not the core's loopback: admin actions through it need the token
        status, body = http(f"http://{net['edge1'].address}:{PORT}/api/downsampling/run", body={})
        assert status == 401, body

        # the broker goes away: edges unready, their clients told; ingest goes on at the core
        broker.send_signal(signal.SIGTERM)
        broker.wait(10)
        for name in edges:
            wait_status(f"http://{net[name].address}:{PORT}/health/ready", 503, 20, f"{name} to report unready")
        for ws in (a, b):
            recv_until(ws, lambda m: m["type"] == "status" and m["live"] is False, timeout_s=20)
        post_trade(core_url, 102.5)
        status, ready = http(core_url + "/health/ready")
        assert status == 200 and ready["broker"]["connected"] is False

        # back: a reset (refetch history: 102.5 is in it), then live bars again
        start_broker()
        for ws in (a, b):
            recv_until(ws, lambda m: m["type"] == "status" and m["live"] is True, timeout_s=30)
            recv_until(ws, lambda m: m["type"] == "reset" and m["topic"] == "BTCUSD@1S", timeout_s=10)
        for name in edges:
            wait_status(f"http://{net[name].address}:{PORT}/health/ready", 200, 20, f"{name} to be ready again")
        status, bars = http(core_url + f"/api/bars?symbol=BTCUSD&resolution=1S&from={t - 30}&to={now_ms() // 1000 + 2}")
        assert status == 200 and any(bar["close"] == 102.5 for bar in bars["bars"])
        post_trade(core_url, 103.5)
        assert raw_until(a, bar_at(103.5)) == raw_until(b, bar_at(103.5))

        # a stalled edge host does not slow the core's ingest, nor the other edge
        edges["edge2"].send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            for i in range(50):
                post_trade(core_url, 200.0 + i)
            took_s = time.monotonic() - started
            raw_until(a, bar_at(249.0))
            assert took_s < 10, f"50 ingest requests took {took_s:.1f}s with an edge stalled"
        finally:
            edges["edge2"].send_signal(signal.SIGCONT)
