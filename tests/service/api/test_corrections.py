"""Trade corrections through the API and the CLI, on a real server: DELETE /api/trades by
id and by range, live bars corrected with a reset, history exact, the audit log."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse

from websockets.sync.client import connect

from tests.conftest import TVFLUX


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def recv_until(ws, predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv(timeout=max(0.05, deadline - time.monotonic())))
        seen.append(msg)
        if predicate(msg):
            return msg, seen
    raise AssertionError(f"no matching message in {seen}")


def test_delete_by_id_and_range_corrects_history_live_bars_and_is_audited(quiet_server):
    s = quiet_server
    t0 = now_ms() - 30 * 60_000
    trades = [
        {"symbol": "BTCUSD", "price": 100.0 + i, "size": 1.0, "time": t0 + i * 60_000, "id": f"c{i}"} for i in range(20)
    ]
    trades.append({"symbol": "BTCUSD", "price": 5000.0, "size": 7.0, "time": now_ms(), "id": "bust-me"})
    s.post_trades(trades)
    assert s.post("/api/downsampling/run?wait=600")[0] == 200
    with connect(s.ws_url + "/ws") as ws:
        ws.send(json.dumps({"op": "subscribe", "id": "d", "symbol": "BTCUSD", "resolution": "1D"}))
        first, _ = recv_until(ws, lambda m: m["type"] == "bar")
        assert first["bar"]["high"] == 5000.0
        status, body = s.request("DELETE", "/api/trades?symbol=BTCUSD&id=bust-me&id=c3&id=unknown")
        assert status == 200 and body == {"deleted": 2}, body
        # the corrected bar, then a reset (a push sends its reset after its bars)
        fixed, _ = recv_until(ws, lambda m: m["type"] == "bar" and m["bar"]["high"] != 5000.0)
        assert fixed["bar"]["high"] == 119.0 and fixed["bar"]["volume"] == first["bar"]["volume"] - 8
        recv_until(ws, lambda m: m["type"] == "reset")
    lo, hi = t0 + 10 * 60_000, t0 + 15 * 60_000  # c10..c14
    status, body = s.request("DELETE", f"/api/trades?symbol=BTCUSD&from={lo}&to={hi}")
    assert status == 200 and body == {"deleted": 5}
    assert s.post("/api/downsampling/run?wait=600")[0] == 200
    left = [t for t in trades if t["id"] not in {"bust-me", "c3"} and not lo <= t["time"] < hi]
    _, bars = s.get(f"/api/bars?symbol=BTCUSD&resolution=1&from={t0 // 1000 - 60}&to={now_ms() // 1000 + 60}")
    assert [b["close"] for b in bars["bars"]] == [t["price"] for t in left]
    _, audit = s.get("/api/admin/audit")
    newest, older = audit["entries"][:2]
    assert newest["symbol"] == "BTCUSD" and newest["deleted"] == 5 and (newest["fromMs"], newest["toMs"]) == (lo, hi)
    assert older["ids"] == ["bust-me", "c3", "unknown"] and older["deleted"] == 2 and "127.0.0.1" in older["who"]
    # posting a deleted id again stores it again (a mistaken correction can be undone)
    assert s.post_trades([trades[3]]) == {"accepted": 1, "duplicates": 0}


def test_delete_needs_a_range_or_ids_and_the_admin_token(server_factory):
    s = server_factory(synthetic_rate="0", admin_token="sesame")
    assert s.request("DELETE", "/api/trades?symbol=BTCUSD&id=x")[0] == 401
    req = urllib.request.Request(
        s.base_url + "/api/trades?symbol=BTCUSD", method="DELETE", headers={"Authorization": "Bearer sesame"}
    )
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("accepted a delete of nothing")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and json.loads(exc.read())["error"]["code"] == "missing_parameter"


def test_cli_trades_delete_goes_through_the_running_service(quiet_server):
    s = quiet_server
    t = now_ms() - 60_000
    s.post_trades([{"symbol": "ETHUSD", "price": 10.0, "size": 1.0, "time": t + i, "id": f"e{i}"} for i in range(4)])
    env = {**s.env, "TVFLUX_PORT": "1"}  # a wrong port: the CLI finds the service from its data dir
    out = subprocess.run(
        [TVFLUX, "trades", "delete", "--symbol", "ETHUSD", "--id", "e1", "--id", "e2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "deleted 2 trades" in out.stderr
    _, audit = s.get("/api/admin/audit")
    assert audit["entries"][0]["actor"].startswith("tvflux trades delete")


def test_cli_trades_delete_opens_the_store_when_no_service_runs(quiet_server):
    s = quiet_server
    t = now_ms() - 60_000
    s.post_trades([{"symbol": "LTCUSD", "price": 10.0, "size": 1.0, "time": t + i} for i in range(4)])
    s.stop()
    out = subprocess.run(
        [TVFLUX, "trades", "delete", "--symbol", "LTCUSD", "--from", str(t), "--to", str(t + 2)],
        env=s.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "deleted 2 trades" in out.stderr, out.stderr
    with open(os.path.join(s.data_dir, "audit.jsonl")) as f:
        entry = json.loads(f.read().splitlines()[-1])
    assert entry["deleted"] == 2 and entry["symbol"] == "LTCUSD" and "store opened directly" in entry["who"]
    s.start()
    _, bars = s.get("/api/bars?symbol=LTCUSD&resolution=1D&countback=1")
    assert bars["bars"][0]["volume"] == 2


def test_downsampling_figures_are_what_they_say(quiet_server):
    """/api/downsampling (what /admin shows): ``bars`` is the rows a tier holds, ``lastRun``
    includes the rebuild a correction caused, ``normalLagMs`` is the lag the plan makes normal."""
    s = quiet_server
    hour = (now_ms() // 3_600_000 - 3) * 3_600_000  # a closed hour, 3 h ago
    minutes = [hour + i * 60_000 for i in range(0, 50, 5)]  # 10 distinct minutes
    s.post_trades([{"symbol": "BTCUSD", "price": 100.0, "size": 1.0, "time": t + 10} for t in minutes])
    s.post_trades([{"symbol": "ETHUSD", "price": 10.0, "size": 1.0, "time": t + 20} for t in minutes[:4]])
    assert s.post("/api/downsampling/run?wait=600")[0] == 200
    tiers = {t["tier"]: t for t in s.get("/api/downsampling")[1]["tiers"]}
    assert tiers["1m"]["bars"] == 14  # 10 BTCUSD minutes + 4 ETHUSD minutes, whatever the last run wrote
    assert tiers["1h"]["bars"] == 2 and tiers["1d"]["bars"] in (0, 2)  # one hour each; the day once it closed
    assert tiers["1d"]["normalLagMs"] > 86_400_000 > tiers["1m"]["normalLagMs"]
    assert tiers["1h"]["lagMs"] <= tiers["1h"]["normalLagMs"]  # an hour behind is the 1h tier's nature

    before_ms = now_ms()
    status, _ = s.request("DELETE", f"/api/trades?symbol=BTCUSD&from={minutes[0]}&to={minutes[2]}")
    assert status == 200
    assert s.post("/api/downsampling/run?wait=600")[0] == 200  # rebuilds the closed windows, advances nothing
    tiers = {t["tier"]: t for t in s.get("/api/downsampling")[1]["tiers"]}
    assert tiers["1m"]["bars"] == 12
    assert tiers["1m"]["lastRun"] >= before_ms, tiers["1m"]  # the rebuild is the tier's last run
