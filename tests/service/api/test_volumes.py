"""Volumes carry no float noise in any output: ``/api/bars``, ``/udf/history``, ``/ws``,
``/api/stream`` and ``tvflux export`` show a bar's sum of sizes rounded to 15 significant
digits (see ``service.core.models.round_volume``); the stores keep the full float sums."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

from websockets.sync.client import connect

from service.core.models import round_volume

# Sizes whose float64 sums are noisy: 0.1 + 0.2 = 0.30000000000000004, and the issue's own.
SIZES = [0.1, 0.2, 0.010401, 0.02]  # 0.1+0.2+0.010401+0.02 = 0.33040100000000004 in float64


def test_round_volume_drops_summation_noise_only():
    assert round_volume(0.1 + 0.2) == 0.3
    assert repr(round_volume(0.030400999999999997)) == "0.030401"
    assert repr(round_volume(4795.9545020000005)) == "4795.954502"
    assert round_volume(123456.12345678) == 123456.12345678  # real digits are kept (14 here)
    assert round_volume(1.0000000000000002) == 1.0
    assert round_volume(1e-12) == 1e-12 and round_volume(0.0) == 0.0


def test_every_output_shows_rounded_volumes(module_server, tmp_path):
    s = module_server
    minute = (int(time.time()) // 60 - 3) * 60_000  # a closed minute, well behind the live edge
    assert sum(SIZES) != 0.330401  # the noise is real
    trades = [
        {"symbol": "TESTC", "price": 10.0 + i, "size": size, "time": minute + 1_000 * i} for i, size in enumerate(SIZES)
    ]
    s.post_trades(trades)

    status, body = s.get(f"/api/bars?symbol=TESTC&resolution=1&from={minute // 1000}&to={minute // 1000 + 60}")
    assert status == 200 and [b["volume"] for b in body["bars"]] == [0.330401], body
    status, udf = s.get(f"/udf/history?symbol=TESTC&resolution=1&from={minute // 1000}&to={minute // 1000 + 60}")
    assert status == 200 and udf["v"] == [0.330401], udf

    s.post("/api/downsampling/run?wait=600")  # stored tiers: the store's own sum, rounded at the edge too
    for res in ("1", "5", "60", "1D"):
        status, body = s.get(f"/api/bars?symbol=TESTC&resolution={res}&countback=1")
        assert status == 200 and body["bars"][-1]["volume"] == 0.330401, (res, body)

    # live bars: WebSocket and SSE
    now = int(time.time() * 1000)
    with connect(s.ws_url + "/ws") as ws:
        ws.send(json.dumps({"op": "subscribe", "id": "v", "symbol": "TESTC", "resolution": "1D"}))
        s.post_trades(
            [
                {"symbol": "TESTC", "price": 11.0, "size": 0.1, "time": now},
                {"symbol": "TESTC", "price": 11.0, "size": 0.2, "time": now},
            ]
        )
        deadline = time.monotonic() + 5
        volumes = []
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=5))
            if msg.get("type") == "bar":
                volumes.append(msg["bar"]["volume"])
                if abs(msg["bar"]["volume"] - 0.630401) < 1e-9:
                    break
        assert volumes and volumes[-1] == 0.630401, volumes
    with urllib.request.urlopen(f"{s.base_url}/api/stream?symbol=TESTC&resolution=1D", timeout=5) as resp:
        line = b""
        while not line.startswith(b"data:"):
            line = resp.readline()
        assert json.loads(line[5:])["bar"]["volume"] == 0.630401

    env = {k: v for k, v in os.environ.items() if not k.startswith("TVFLUX_")}
    env.update({"TVFLUX_DATA_DIR": s.data_dir, "TVFLUX_PORT": str(s.port), "TVFLUX_LOG_LEVEL": "WARNING"})
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.ops.commands",
            "export",
            "--symbol",
            "TESTC",
            "--resolution",
            "1",
            "--from",
            str(minute // 1000),
            "--to",
            str(minute // 1000 + 60),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].endswith(",0.330401"), out.stdout
