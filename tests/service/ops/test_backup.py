"""Backup and restore of the embedded store: a backup taken while the service runs,
restored, gives identical history; damaged backups and busy stores are refused."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

from service.core.models import TradeColumns
from service.core.plan import default_plan
from service.storage.embedded import backup as bk
from service.storage.embedded.store import EmbeddedStore

DAY_MS = 86_400_000
RESOLUTIONS = ("1S", "1", "5", "60", "240", "1D", "1W", "1M")


def ops(args, data_dir, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TVFLUX_")}
    full_env.update({"TVFLUX_DATA_DIR": str(data_dir), "TVFLUX_LOG_LEVEL": "WARNING", **env})
    return subprocess.run(
        [sys.executable, "-m", "service.ops.commands", *args], env=full_env, capture_output=True, text=True, timeout=120
    )


def small_store(path) -> None:
    """A DuckDB store with trades of two symbols over two days, downsampled."""

    async def run():
        store = EmbeddedStore(str(path), default_plan())
        await store.start()
        t0 = 1_700_000_000_000
        ts = (t0 + np.arange(0, 2 * DAY_MS, 61_001, dtype=np.int64)) * 1_000_000
        for symbol in ("AAA", "BBB"):
            await store.append([TradeColumns(symbol, ts, np.linspace(10, 20, ts.size), np.full(ts.size, 0.5))])
        await store.run_downsampling(t0 + 3 * DAY_MS)
        await store.close()

    asyncio.run(run())


def test_offline_snapshot_verifies_and_detects_damage(tmp_path):
    db = tmp_path / "data" / "tvflux.duckdb"
    small_store(db)
    manifest = bk.snapshot_file(str(db), str(tmp_path / "b"))
    assert manifest.source == str(db) and manifest.format == bk.FORMAT
    tables = {t.name: t.rows for t in manifest.tables}
    assert tables["trades"] == 2 * len(range(0, 2 * DAY_MS, 61_001)) and tables["bars_1d"] > 0
    assert bk.verify(str(tmp_path / "b")) == manifest
    with pytest.raises(bk.BackupError, match="not an empty directory"):
        bk.snapshot_file(str(db), str(tmp_path / "b"))

    damaged = tmp_path / "damaged"
    shutil.copytree(tmp_path / "b", damaged)
    trades_file = next(t.file for t in manifest.tables if t.name == "trades")
    data = bytearray((damaged / trades_file).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / trades_file).write_bytes(bytes(data))
    (damaged / "schema.sql").unlink()
    with pytest.raises(bk.BackupError) as info:
        bk.verify(str(damaged))
    assert f"{trades_file}: checksum mismatch" in info.value.message and "schema.sql: missing" in info.value.message
    with pytest.raises(bk.BackupError, match="not a tvflux backup"):
        bk.verify(str(tmp_path))


def test_tar_transport_round_trip_and_refuses_paths(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "manifest.json").write_bytes(b"{}")
    (src / "a.parquet").write_bytes(os.urandom(5000))
    (src / "empty.sql").write_bytes(b"")
    stream = io.BytesIO(b"".join(bk.tar_chunks(str(src), ["a.parquet", "empty.sql"])))
    seen = []
    bk.extract_tar(stream, str(tmp_path / "dst"), on_bytes=seen.append)
    assert (tmp_path / "dst" / "a.parquet").read_bytes() == (src / "a.parquet").read_bytes()
    assert (tmp_path / "dst" / "empty.sql").read_bytes() == b"" and sum(seen) == 5000

    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as archive:
        info = tarfile.TarInfo("../escaped")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    evil.seek(0)
    with pytest.raises(bk.BackupError, match="not a plain file"):
        bk.extract_tar(evil, str(tmp_path / "evil"))
    assert not (tmp_path / "escaped").exists()


def history(server) -> dict[str, object]:
    out = {}
    for symbol in ("BTCUSD", "ETHUSD"):
        for res in RESOLUTIONS:
            status, body = server.get(f"/api/bars?symbol={symbol}&resolution={res}&countback=400")
            assert status == 200, body
            out[f"{symbol}/{res}"] = body
    return out


def test_backup_while_serving_then_restore_gives_identical_history(server_factory, tmp_path):
    server = server_factory(synthetic_rate="0", downsample_interval_ms="500", grace_ms="1000")
    now = int(time.time() * 1000)
    t0 = now - 40 * DAY_MS
    for symbol, step in (("BTCUSD", 7_919_000), ("ETHUSD", 3_301_000)):
        trades = [
            {
                "symbol": symbol,
                "price": 100 + (i * 37) % 101,
                "size": 0.25 + i % 3,
                "time": t0 + i * step,
                "id": f"{symbol}-{i}",
            }
            for i in range(40 * DAY_MS // step)
        ]
        for i in range(0, len(trades), 1000):
            server.post_trades(trades[i : i + 1000])
    server.post_trades(
        [
            {"symbol": "BTCUSD", "price": 1.5, "size": 1, "time": now - 1000},
            {"symbol": "BTCUSD", "price": 1.7, "size": 1, "time": now - 1000},
        ]
    )  # same millisecond
    server.post("/api/downsampling/run?wait=600")
    before = history(server)
    _, tiers = server.get("/api/downsampling")

    backup_dir = tmp_path / "backup"
    out = ops(["backup", str(backup_dir)], server.data_dir, TVFLUX_PORT=str(server.port))
    assert out.returncode == 0, out.stderr
    assert "asking http://127.0.0.1" in out.stderr and "verified" in out.stderr
    manifest = bk.verify(str(backup_dir))
    assert os.path.realpath(manifest.source) == os.path.realpath(os.path.join(server.data_dir, "tvflux.duckdb"))
    assert not [n for n in os.listdir(server.data_dir) if n.startswith(".backup-")]  # the snapshot was cleaned up

    # After the backup: more trades, which the restored store must not have.
    server.post_trades(
        [
            {"symbol": "BTCUSD", "price": 999.0, "size": 5, "time": t0 + 1234, "id": "after-1"},
            {"symbol": "ETHUSD", "price": 999.0, "size": 5, "time": now - 5000, "id": "after-2"},
        ]
    )
    server.post("/api/downsampling/run?wait=600")
    assert history(server) != before

    refused = ops(["restore", str(backup_dir), "--force"], server.data_dir)
    assert refused.returncode == 1 and "in use" in refused.stderr
    server.stop()

    assert ops(["restore", str(backup_dir)], server.data_dir).returncode == 2  # needs --force over a store
    restored = ops(["restore", str(backup_dir), "--force"], server.data_dir)
    assert restored.returncode == 0, restored.stderr
    kept = [n for n in os.listdir(server.data_dir) if ".pre-restore-" in n]
    assert any(n.startswith("tvflux.duckdb.pre-restore-") for n in kept), kept

    server.start()
    _, tiers_after = server.get("/api/downsampling")
    assert [t["watermark"] for t in tiers_after["tiers"]] >= [t["watermark"] for t in tiers["tiers"]]
    assert history(server) == before
    # the restored store is a working one: ids posted before the backup are still known
    again = server.post_trades([{"symbol": "BTCUSD", "price": 100, "size": 0.25, "time": t0, "id": "BTCUSD-0"}])
    assert again == {"accepted": 0, "duplicates": 1}


def test_offline_backup_and_restore_into_a_new_data_dir(tmp_path):
    data = tmp_path / "data"
    small_store(data / "tvflux.duckdb")
    out = ops(["backup", str(tmp_path / "b")], data)
    assert out.returncode == 0, out.stderr
    assert "asking" not in out.stderr  # nobody holds the file: read directly
    fresh = tmp_path / "fresh"
    restored = ops(["restore", str(tmp_path / "b")], fresh)
    assert restored.returncode == 0, restored.stderr

    async def bars(path):
        store = EmbeddedStore(str(path), default_plan())
        await store.start()
        try:
            from service.core.resolution import parse_resolution

            return [
                await store.bars(s, parse_resolution(r), 0, 2_000_000_000_000)
                for s in ("AAA", "BBB")
                for r in ("1", "60", "1D")
            ], await store.downsampling_status(1_700_000_000_000 + 3 * DAY_MS)
        finally:
            await store.close()

    assert asyncio.run(bars(fresh / "tvflux.duckdb")) == asyncio.run(bars(data / "tvflux.duckdb"))
    missing = ops(["backup", str(tmp_path / "c")], tmp_path / "nowhere")
    assert missing.returncode == 1 and "no store at" in missing.stderr
    assert not (tmp_path / "c").exists()


# --- the InfluxDB scripts, against a stand-in for the influx CLI -------------------------------

FAKE_INFLUX = r"""#!/bin/sh
# Records its arguments; `backup DIR` writes a shard file; `bucket list` prints $FAKE_BUCKETS.
echo "$* token=${INFLUX_TOKEN:-}" >> "$FAKE_LOG"
case "$1 $2" in
  "backup "*) mkdir -p "$2" && echo "shard of $*" > "$2/20240101T000000Z.s1.tar.gz" ;;
  "bucket list") for b in $FAKE_BUCKETS; do printf 'id%s\t%s\tinfinite\n' "$b" "$b"; done ;;
esac
"""


def run_script(name, args, tmp_path, **env):
    fake = tmp_path / "influx"
    fake.write_text(FAKE_INFLUX)
    fake.chmod(0o755)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TVFLUX_", "INFLUX_"))}
    full_env.update(
        {
            "INFLUX_CMD": str(fake),
            "FAKE_LOG": str(tmp_path / "calls.log"),
            "FAKE_BUCKETS": "",
            "TVFLUX_INFLUX_TOKEN": "tok",
            "TVFLUX_INFLUX_URL": "http://influx:8086",
            **env,
        }
    )
    script = os.path.join(os.path.dirname(__file__), "..", "..", "..", "scripts", name)
    return subprocess.run(["sh", script, *args], env=full_env, capture_output=True, text=True, timeout=60)


def calls(tmp_path):
    path = tmp_path / "calls.log"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


def test_influx_scripts_back_up_in_order_verify_and_restore(tmp_path):
    backup = tmp_path / "b"
    out = run_script("influx-backup.sh", [str(backup)], tmp_path, TVFLUX_INFLUX_BARS_BUCKET="candles")
    assert out.returncode == 0, out.stderr
    assert calls(tmp_path) == [
        f"backup {backup}/{b} --host http://influx:8086 --org tvflux --bucket {b} token=tok"
        for b in ("tvflux_status", "candles", "trades")
    ]  # status first: bars cover its watermarks
    assert "mode=buckets" in (backup / "tvflux-backup.txt").read_text()
    manifest = (backup / "MANIFEST.sha256").read_text().splitlines()
    assert len(manifest) == 4 and all("tok" not in line for line in manifest)
    assert run_script("influx-backup.sh", [str(backup)], tmp_path).returncode == 2  # not empty

    env = {"TVFLUX_INFLUX_BARS_BUCKET": "candles"}
    restored = run_script("influx-restore.sh", [str(backup)], tmp_path, **env)
    assert restored.returncode == 0, restored.stderr
    assert [c for c in calls(tmp_path) if c.startswith("restore")] == [
        f"restore {backup}/{b} --host http://influx:8086 --org tvflux --bucket {b} token=tok"
        for b in ("trades", "candles", "tvflux_status")
    ]  # watermarks last
    assert "tvflux influx setup" in restored.stderr

    exists = run_script("influx-restore.sh", [str(backup)], tmp_path, FAKE_BUCKETS="trades", **env)
    assert exists.returncode == 1 and "pass --replace" in exists.stderr
    assert not [c for c in calls(tmp_path) if c.startswith(("restore", "bucket delete"))]
    replaced = run_script("influx-restore.sh", ["--replace", str(backup)], tmp_path, FAKE_BUCKETS="trades", **env)
    assert replaced.returncode == 0, replaced.stderr
    assert [c.split(" token=")[0] for c in calls(tmp_path) if not c.startswith("bucket list")][:2] == [
        "bucket delete --host http://influx:8086 --org tvflux --name trades",
        f"restore {backup}/trades --host http://influx:8086 --org tvflux --bucket trades",
    ]

    shard = next((backup / "candles").iterdir())
    shard.write_text("tampered")
    damaged = run_script("influx-restore.sh", [str(backup)], tmp_path, **env)
    assert damaged.returncode == 1 and "failed verification" in damaged.stderr
    assert not [c for c in calls(tmp_path) if c.startswith("restore")]


def test_influx_full_backup_and_restore(tmp_path):
    backup = tmp_path / "full"
    assert run_script("influx-backup.sh", ["--full", str(backup)], tmp_path).returncode == 0
    assert calls(tmp_path) == [f"backup {backup}/full --host http://influx:8086 token=tok"]
    out = run_script("influx-restore.sh", [str(backup)], tmp_path)
    assert out.returncode == 0, out.stderr
    assert calls(tmp_path) == [f"restore {backup}/full --host http://influx:8086 --full token=tok"]


def test_tvflux_command_line_offers_the_operations_commands():
    # Fails until service/ops/cli.py registers service.ops.commands (see service/ops/commands.py).
    from pathlib import Path

    tvflux = str(Path(sys.executable).parent / "tvflux")
    out = subprocess.run([tvflux, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert all(command in out.stdout for command in ("backup", "restore", "import", "export"))


def _snapshots_left(data_dir, wait_s: float = 5.0) -> list[str]:
    deadline = time.monotonic() + wait_s
    while True:
        left = [n for n in os.listdir(data_dir) if n.startswith(".backup-")]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def test_backup_into_a_non_empty_dir_is_refused_before_the_service_builds_a_snapshot(server_factory, tmp_path):
    server = server_factory(synthetic_rate="0")
    server.post_trades([{"symbol": "BTCUSD", "price": 100.0, "size": 1, "time": int(time.time() * 1000) - 1000}])
    target = tmp_path / "full"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    out = ops(["backup", str(target)], server.data_dir, TVFLUX_PORT=str(server.port))
    assert out.returncode != 0
    assert "not an empty directory" in out.stderr and "asking http" not in out.stderr  # refused up front
    assert os.listdir(target) == ["keep.txt"]  # the user's directory is untouched
    assert _snapshots_left(server.data_dir, wait_s=0) == []


def test_backup_transfer_abandoned_by_the_client_leaves_no_snapshot_behind(server_factory):
    import http.client

    server = server_factory(synthetic_rate="0")
    server.post_trades([{"symbol": "BTCUSD", "price": 100.0, "size": 1, "time": int(time.time() * 1000) - 1000}])
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/api/admin/backup", body=b"")
    resp = conn.getresponse()
    assert resp.status == 200
    resp.read(10)  # the snapshot exists now; hang up mid-transfer
    conn.sock.close()
    conn.close()
    assert _snapshots_left(server.data_dir) == []


def test_backup_files_are_named_after_their_tables(tmp_path):
    small_store(tmp_path / "tvflux.duckdb")
    manifest = bk.snapshot_file(str(tmp_path / "tvflux.duckdb"), str(tmp_path / "b"))
    files = {t.name: t.file for t in manifest.tables}
    assert files["bars_1m"] == "bars_1m.parquet" and files["bars_15m"] == "bars_15m.parquet", files
    assert all(f == name + ".parquet" for name, f in files.items()), files
    assert not [n for n in os.listdir(tmp_path / "b") if "__" in n]
    bk.verify(str(tmp_path / "b"))
    restored = bk.restore(str(tmp_path / "b"), str(tmp_path / "new"), now=__import__("datetime").datetime.now())
    assert restored.tables["bars_1m"] > 0  # load.sql and the manifest agree with the renamed files
