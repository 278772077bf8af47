"""Access control: tokens for ingest and admin actions, never echoed; limits per client."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

INGEST, ADMIN = "ingest-secret-123", "admin-secret-456"


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    from tests.conftest import ServerProcess

    server = ServerProcess(
        str(tmp_path_factory.mktemp("locked")),
        {
            "TVFLUX_SYNTHETIC_RATE": "0",
            "TVFLUX_INGEST_TOKEN": INGEST,
            "TVFLUX_ADMIN_TOKEN": ADMIN,
            "TVFLUX_MAX_CONNECTIONS_PER_CLIENT": "3",
            "TVFLUX_CORS_ORIGINS": "https://charts.example",
            "TVFLUX_LOG_LEVEL": "DEBUG",
        },
    )
    server.start()
    yield server
    server.stop()


def call(server, method, path, token=None, body=None):
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        server.base_url + path,
        method=method,
        headers=headers,
        data=json.dumps(body).encode() if body is not None else None,
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


def trade():
    return [{"symbol": "BTCUSD", "price": 1.0, "size": 1.0, "time": int(time.time() * 1000)}]


@pytest.mark.parametrize("token", [None, "", "wrong", INGEST + "x"])
def test_ingest_refused_without_valid_token(locked, token):
    status, body, headers = call(locked, "POST", "/api/trades", token, trade())
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert headers["WWW-Authenticate"].startswith("Bearer")


def test_ingest_and_admin_with_tokens(locked):
    assert call(locked, "POST", "/api/trades", INGEST, trade())[0] == 200
    assert call(locked, "POST", "/api/trades", ADMIN, trade())[0] == 200  # admin may ingest too
    assert call(locked, "POST", "/api/downsampling/run?wait=600", INGEST)[0] == 401
    assert call(locked, "POST", "/api/downsampling/run?wait=600", None)[0] == 401
    assert call(locked, "POST", "/api/downsampling/run?wait=600", ADMIN)[0] == 200
    assert call(locked, "GET", "/api/bars?symbol=BTCUSD&resolution=1&countback=1")[0] == 200  # reads stay open


def test_ws_ingest_needs_token(locked):
    with connect(locked.ws_url + "/ws/ingest") as ws:
        err = json.loads(ws.recv(timeout=5))
        assert err["error"]["code"] == "unauthorized"
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd.code == 4401
    with connect(locked.ws_url + f"/ws/ingest?token={INGEST}") as ws:
        ws.send(json.dumps(trade()))
        assert json.loads(ws.recv(timeout=5))["type"] == "ack"
    with connect(locked.ws_url + "/ws/ingest", additional_headers={"Authorization": f"Bearer {INGEST}"}) as ws:
        ws.send(json.dumps(trade()))
        assert json.loads(ws.recv(timeout=5))["type"] == "ack"


def test_tokens_never_reach_logs_or_errors(locked):
    call(locked, "POST", "/api/trades", "wrong-" + INGEST, trade())
    log = locked.log()
    assert INGEST not in log and ADMIN not in log
    _, body, _ = call(locked, "POST", "/api/trades", "nope", trade())
    assert INGEST not in json.dumps(body)


def test_connections_per_client_are_bounded(locked):
    opened = [connect(locked.ws_url + "/ws").__enter__() for _ in range(3)]
    try:
        with connect(locked.ws_url + "/ws") as extra:
            err = json.loads(extra.recv(timeout=5))
            assert err["error"]["code"] == "overloaded"
            with pytest.raises(ConnectionClosed) as info:
                extra.recv(timeout=5)
            assert info.value.rcvd.code == 4029
    finally:
        for ws in opened:
            ws.close()
    time.sleep(0.3)
    with connect(locked.ws_url + "/ws") as again:  # slots are given back
        again.send(json.dumps({"op": "ping"}))
        assert json.loads(again.recv(timeout=5)) == {"type": "pong"}


def test_cors_allows_only_configured_origin(locked):
    req = urllib.request.Request(
        locked.base_url + "/api/symbols",
        method="OPTIONS",
        headers={"Origin": "https://charts.example", "Access-Control-Request-Method": "GET"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == "https://charts.example"
    req = urllib.request.Request(locked.base_url + "/api/symbols", headers={"Origin": "https://evil.example"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.headers.get("Access-Control-Allow-Origin") != "https://evil.example"
