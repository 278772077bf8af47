"""Readiness details, /metrics contents and the admin backup endpoint, on a real server."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def samples(server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = server.get("/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_ready_body_and_metrics_follow_what_happened(quiet_server):
    s = quiet_server
    status, ready = s.get("/health/ready")
    assert status == 200 and ready["ready"] is True
    assert set(ready["writer"]) == {"pendingRows", "spilledRows", "oldestPendingAgeS", "maxAgeS"}
    assert [t["tier"] for t in ready["downsampling"]] == ["1m", "5m", "15m", "1h", "4h", "1d"]
    assert all(t["maxLagMs"] > 0 and t["ok"] for t in ready["downsampling"])

    t0 = int(time.time() * 1000) - 3_600_000
    s.post_trades([{"symbol": "BTCUSD", "price": 10.0, "size": 1.0, "time": t0 + i} for i in range(5)])
    s.post_trades([{"symbol": "BTCUSD", "price": 11.0, "size": 1.0, "time": t0 + 100 + i} for i in range(50)])
    s.post("/api/downsampling/run?wait=600")  # flushes the writer first
    for _ in range(2):
        assert s.get("/api/bars?symbol=BTCUSD&resolution=60&countback=3")[0] == 200
    assert s.get("/udf/history?symbol=BTCUSD&resolution=1D&countback=3")[0] == 200

    m = samples(s)
    assert m[("tvflux_ingest_batch_rows_count", ())] == 2 and m[("tvflux_ingest_batch_rows_sum", ())] == 55
    assert m[("tvflux_ingest_batch_rows_bucket", (("le", "10.0"),))] == 1
    assert m[("tvflux_trades_ingested_total", ())] == 55
    assert m[("tvflux_history_request_seconds_count", (("resolution", "60"),))] == 2
    assert m[("tvflux_history_request_seconds_count", (("resolution", "1D"),))] == 1
    assert m[("tvflux_store_write_seconds_count", ())] >= 1
    assert m[("tvflux_ready", ())] == 1 and m[("tvflux_store_up", ())] == 1
    assert m[("tvflux_downsampler_runs_total", ())] >= 1
    assert (
        m[("tvflux_downsampling_lag_limit_ms", (("tier", "1d"),))]
        > m[("tvflux_downsampling_lag_limit_ms", (("tier", "1m"),))]
    )
    assert m[("tvflux_downsampling_bars_written_total", (("tier", "1m"),))] >= 1  # one minute of trades
    assert ("process_resident_memory_bytes", ()) in m
    assert m[("tvflux_writer_oldest_pending_age_seconds", ())] >= 0


def test_backup_endpoint_needs_the_admin_token_when_one_is_set(server_factory, tmp_path):
    server = server_factory(synthetic_rate="0", admin_token="s3cret-admin")
    status, body = server.post("/api/admin/backup")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    request = urllib.request.Request(
        server.base_url + "/api/admin/backup", data=b"", method="POST", headers={"Authorization": "Bearer s3cret-admin"}
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        assert resp.headers["Content-Type"].startswith("application/x-tar")
        names = tarfile.open(fileobj=io.BytesIO(resp.read()), mode="r:").getnames()
    assert names[0] == "manifest.json" and "schema.sql" in names

    env = {k: v for k, v in os.environ.items() if not k.startswith("TVFLUX_")}
    env.update({"TVFLUX_DATA_DIR": server.data_dir, "TVFLUX_PORT": str(server.port)})
    cli = [sys.executable, "-m", "service.ops.commands", "backup"]
    refused = subprocess.run([*cli, str(tmp_path / "a")], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "401 unauthorized" in refused.stderr and not (tmp_path / "a").exists()
    env["TVFLUX_ADMIN_TOKEN"] = "s3cret-admin"
    ok = subprocess.run([*cli, str(tmp_path / "b")], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
