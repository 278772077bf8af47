"""The load generator against a real server: a short run whose report adds up.

No timing assertions: only that every count in the report is consistent with the others
and with what the server says it received.
"""

from __future__ import annotations

import json
import subprocess
import sys

from loadgen.cli import render
from loadgen.guard import DEFAULT_SYMBOLS
from loadgen.runner import LoadConfig, run_load


async def test_short_run_report_is_consistent(server_factory):
    server = server_factory(
        synthetic_rate="0", push_interval_ms="50", downsample_interval_ms="500", symbols=",".join(DEFAULT_SYMBOLS)
    )
    cfg = LoadConfig(
        url=server.base_url,
        pid=server.proc.pid,
        rate=4_000,
        connections=2,
        frame_trades=200,
        window=2,
        subscribers=24,
        subs_per_conn=3,
        marker_hz=20,
        history_rate=10,
        duration_s=2.0,
        warmup_s=0.5,
        drain_timeout_s=15,
        progress=False,
    )
    report = await run_load(cfg)
    ing, subs = report["ingest"], report["subscribers"]

    assert ing["trades_sent"] > 0
    assert ing["trades_acked"] == ing["trades_sent"]  # nothing refused, nothing left unacknowledged
    assert ing["trades_refused"] == ing["trades_unacked"] == ing["duplicates"] == 0
    assert ing["errors"] == {}
    assert ing["server_accepted"] == ing["trades_acked"]  # the server counted what we counted
    assert ing["server_pending_after"] == 0  # ... and stored all of it
    assert ing["achieved_per_s"] > 0 and ing["ack_rtt_ms"]["n"] > 0

    assert subs["subscriptions"] == 24 and subs["connections"] == 8
    assert subs["connect_failures"] == 0 and subs["cut_off"] == 0
    assert subs["frames_received"] > 0 and subs["frames_per_s"] > 0
    lat = report["latency_ms"]
    assert lat["n"] > 0
    assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert report["markers"]["sent"] > 0
    assert report["history"]["requests"] > 0 and report["history"]["errors"] == 0

    res = report["resources"]
    assert res["server_rss_peak_mb"] > 0 and res["server_cpu_avg_pct"] is not None
    json.dumps(report)  # --json must be able to write it
    text = render(report)
    assert "trade → pushed bar latency" in text and "server RSS peak" in text


def test_cli_spawns_a_server_and_prints_json(tmp_path):
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadgen.cli",
            "--spawn",
            "--rate",
            "2000",
            "--frame-trades",
            "100",
            "--subscribers",
            "6",
            "--duration",
            "1",
            "--warmup",
            "0.5",
            "--quiet",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["spawned"] is True
    assert report["ingest"]["trades_acked"] == report["ingest"]["trades_sent"] > 0
    assert "ingest achieved" in proc.stdout
