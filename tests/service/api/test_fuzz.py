"""Fuzzing: every endpoint in the OpenAPI schema Litestar serves (schemathesis) and the
WebSocket protocol (hypothesis). No 5xx, no crash, every error in the documented shape."""

from __future__ import annotations

import json
import signal
import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from tests.conftest import ServerProcess


@pytest.fixture(scope="module")
def fuzz_server():
    with tempfile.TemporaryDirectory(prefix="tvflux-fuzz-") as data_dir:
        server = ServerProcess(data_dir, {"TVFLUX_SYNTHETIC_RATE": "50"})
        server.start()
        yield server
        assert server.proc.poll() is None, "the server crashed under fuzzing"
        server.stop(signal.SIGKILL)


def test_no_endpoint_answers_5xx(fuzz_server):
    """schemathesis generates requests for every operation of the served schema (its
    pytest plugin predates pytest 9, so its strategies are driven by hypothesis here)."""
    schema = schemathesis.openapi.from_url(fuzz_server.base_url + "/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    seen = []
    calls = 0
    for operation in operations:
        if operation.path == "/health/ready":
            continue  # readiness may legitimately answer 503

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case):
            nonlocal calls
            calls += 1
            response = case.call(base_url=fuzz_server.base_url, timeout=30)
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
            if response.status_code >= 400:
                assert_error_shape(response)

        check()
        seen.append(f"{operation.method.upper()} {operation.path}")
    assert "POST /api/trades" in seen and "GET /api/bars" in seen
    print(f"fuzzed {len(seen)} operations with {calls} requests")
    assert calls >= 5 * len(seen)


def assert_error_shape(response):
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)


junk = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    st.builds(
        json.dumps,
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
            max_leaves=12,
        ),
    ),
    st.builds(
        lambda op, i, s, r: json.dumps({"op": op, "id": i, "symbol": s, "resolution": r}),
        st.sampled_from(["subscribe", "unsubscribe", "ping", "SUBSCRIBE", "", "x"]),
        st.one_of(st.text(max_size=130), st.integers()),
        st.sampled_from(["BTCUSD", "", "nope", "ETHUSD"]),
        st.sampled_from(["1", "1S", "1M", "W", "0", "", "99999"]),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(junk, min_size=1, max_size=8))
def test_ws_protocol_survives_junk(fuzz_server, frames):
    with connect(fuzz_server.ws_url + "/ws") as ws:
        for frame in frames:
            ws.send(frame)
        ws.send(json.dumps({"op": "ping"}))
        while True:  # every reply is a known message type; the connection stays usable
            msg = json.loads(ws.recv(timeout=10))
            assert msg["type"] in {"bar", "reset", "error", "pong"}, msg
            if msg["type"] == "error":
                assert isinstance(msg["error"]["code"], str) and msg["error"]["message"]
            if msg["type"] == "pong":
                break


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(junk, min_size=1, max_size=5))
def test_ws_ingest_survives_junk(fuzz_server, frames):
    with connect(fuzz_server.ws_url + "/ws/ingest") as ws:
        for i, frame in enumerate(frames, start=1):
            ws.send(frame)
            reply = json.loads(ws.recv(timeout=10))
            assert reply["type"] in {"ack", "error"}
            if reply["type"] == "error":
                assert reply["seq"] == i and reply["error"]["code"]
            else:
                assert reply["seq"] == i


trade_like = st.fixed_dictionaries(
    {},
    optional={
        "symbol": st.one_of(st.sampled_from(["BTCUSD", "ETHUSD"]), st.text(max_size=40), st.integers()),
        "price": st.one_of(st.floats(), st.integers(), st.text(max_size=5), st.none()),
        "size": st.one_of(st.floats(), st.integers(min_value=-10, max_value=10**30), st.none()),
        "time": st.one_of(st.integers(min_value=-10, max_value=2**70), st.floats(), st.text(max_size=5)),
        "id": st.one_of(st.text(max_size=80), st.integers(), st.none()),
        "extra": st.integers(),
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(junk, st.lists(trade_like, max_size=5).map(lambda ts: json.dumps(ts, allow_nan=True))))
def test_post_trades_survives_junk(fuzz_server, body):
    status, reply = fuzz_server.post("/api/trades", raw=body.encode() if isinstance(body, str) else body)
    assert status == 200 or 400 <= status < 500, (status, reply)
    if status == 200:
        assert set(reply) == {"accepted", "duplicates"}
    else:
        assert set(reply) == {"error"} and reply["error"]["code"] and reply["error"]["message"]
