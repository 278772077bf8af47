"""Random trades through the running server; history for every accepted resolution must
equal an independent aggregation (pandas), through /api/bars and /udf/history, whether
served from raw trades, the writer's pending trades, or the downsampled tiers."""

from __future__ import annotations

import itertools
import signal
import tempfile
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from service.core.resolution import SUPPORTED, parse_resolution
from tests.conftest import ServerProcess
from tests.reference import reference_bars

SYMBOLS = [f"P{i}" for i in range(40)]
_fresh = itertools.count()
_posted: dict[str, list[dict]] = {}  # every trade ever posted per symbol (symbols get reused)


@pytest.fixture(scope="module")
def prop_server():
    with tempfile.TemporaryDirectory(prefix="tvflux-prop-") as data_dir:
        server = ServerProcess(
            data_dir,
            {
                "TVFLUX_SYNTHETIC_RATE": "0",
                "TVFLUX_SYMBOLS": ",".join(SYMBOLS),
                "TVFLUX_DOWNSAMPLE_INTERVAL_MS": "0",
                "TVFLUX_GRACE_MS": "0",
                "TVFLUX_FLUSH_INTERVAL_MS": "50",
            },
        )
        server.start()
        yield server
        server.stop(signal.SIGKILL)


def post(server, symbol, trades):
    server.post_trades(trades)
    _posted.setdefault(symbol, []).extend(trades)


def check(server, symbol, trades):
    """Bars over the span of ``trades``, against the reference over everything posted."""
    lo_ms = min(t["time"] for t in trades)
    hi_ms = max(t["time"] for t in trades)
    trades = _posted[symbol]
    for text in SUPPORTED:
        res = parse_resolution(text)
        from_s, to_s = lo_ms // 1000, hi_ms // 1000 + 1
        want = [w for w in reference_bars(trades, res) if res.bucket_start_ms(from_s * 1000) <= w["time"] < to_s * 1000]
        status, body = server.get(f"/api/bars?symbol={symbol}&resolution={text}&from={from_s}&to={to_s}")
        assert status == 200, body
        got = body["bars"]
        assert [b["time"] for b in got] == [w["time"] for w in want], text
        for b, w in zip(got, want):
            assert (b["open"], b["high"], b["low"], b["close"]) == (w["open"], w["high"], w["low"], w["close"]), text
            assert b["volume"] == pytest.approx(w["volume"], rel=1e-9)
        status, udf = server.get(f"/udf/history?symbol={symbol}&resolution={text}&from={from_s}&to={to_s}")
        assert (
            udf["s"] == "ok"
            and udf["t"] == [w["time"] // 1000 for w in want]
            and udf["c"] == [w["close"] for w in want]
        )


trade = st.fixed_dictionaries(
    {
        "offset_ms": st.integers(0, 2 * 3_600_000),
        "price": st.floats(0.01, 1e5, allow_nan=False).map(lambda p: round(p, 2)),
        "size": st.floats(1e-4, 100, allow_nan=False),
    }
)


# No shrinking: each example is a few hundred requests to a live server, and the failing
# input is printed anyway.
@settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    first=st.lists(trade, min_size=1, max_size=40),
    late=st.lists(trade, max_size=15),
    days_ago=st.integers(0, 40),
    same_ms=st.booleans(),
)
def test_history_matches_reference_for_every_resolution(prop_server, first, late, days_ago, same_ms):
    symbol = SYMBOLS[next(_fresh) % len(SYMBOLS)]
    base = int(time.time() * 1000) - days_ago * 86_400_000 - 3 * 3_600_000
    trades = [
        {"symbol": symbol, "price": t["price"], "size": t["size"], "time": base + (0 if same_ms else t["offset_ms"])}
        for t in first
    ]
    post(prop_server, symbol, trades)
    check(prop_server, symbol, trades)  # raw trades / writer's pending, no tiers yet
    prop_server.post("/api/downsampling/run?wait=600")
    check(prop_server, symbol, trades)  # now from the tiers
    if late:
        more = [{"symbol": symbol, "price": t["price"], "size": t["size"], "time": base + t["offset_ms"]} for t in late]
        post(prop_server, symbol, more)  # behind the watermarks: dirty windows
        prop_server.post("/api/downsampling/run?wait=600")
        check(prop_server, symbol, trades + more)
