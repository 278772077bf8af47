"""The tvflux command line, run as a user would (a subprocess with TVFLUX_* variables)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from service.core.plan import default_plan
from service.core.resolution import parse_resolution
from service.storage.embedded.store import EmbeddedStore

TVFLUX = str(Path(sys.executable).parent / "tvflux")
END_MS = 1_700_000_000_000 // 86_400_000 * 86_400_000


def run(args, data_dir, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TVFLUX_")}
    full_env.update({"TVFLUX_DATA_DIR": str(data_dir), **env})
    return subprocess.run([TVFLUX, *args], env=full_env, capture_output=True, text=True, timeout=120)


def test_generate_then_downsample(tmp_path):
    gen = run(["generate", "--days", "3", "--trades", "30000", "--seed", "3", "--end-ms", str(END_MS)], tmp_path)
    assert gen.returncode == 0, gen.stderr
    assert "wrote" in gen.stderr and "generate [" in gen.stderr  # progress bar and summary
    again = run(["generate", "--days", "3", "--trades", "30000", "--end-ms", str(END_MS)], tmp_path)
    assert again.returncode == 2 and "refusing" in again.stderr
    down = run(["downsample"], tmp_path)
    assert down.returncode == 0, down.stderr
    assert "1d watermark" in down.stderr

    async def check():
        store = EmbeddedStore(str(tmp_path / "tvflux.duckdb"), default_plan())
        await store.start()
        try:
            count = await store.trade_count()
            assert 27_000 < count < 33_000
            status = {s.tier: s for s in await store.downsampling_status(END_MS + 86_400_000)}
            assert status["1d"].watermark >= END_MS  # all closed days are final in the top tier
            days = await store.bars("BTCUSD", parse_resolution("1D"), END_MS - 3 * 86_400_000, END_MS)
            assert len(days) == 3
            assert sum(b.volume for b in days) > 0
        finally:
            await store.close()

    asyncio.run(check())


def test_bad_settings_are_all_reported_and_exit_2(tmp_path):
    out = run(["serve"], tmp_path, TVFLUX_PORT="x", TVFLUX_STORE="nope", TVFLUX_BOGUS="1")
    assert out.returncode == 2
    for name in ("TVFLUX_PORT", "TVFLUX_STORE", "TVFLUX_BOGUS"):
        assert name in out.stderr


def test_help_lists_commands():
    out = subprocess.run([TVFLUX, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and all(c in out.stdout for c in ("serve", "generate", "downsample"))


def test_serve_on_a_busy_port_fails_at_once_before_any_startup_work(tmp_path):
    import socket
    import time

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        out = run(["serve"], tmp_path, TVFLUX_PORT=str(port), TVFLUX_SYNTHETIC_BACKFILL_S="86400")
        elapsed = time.monotonic() - started
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "already in use" in out.stderr, out.stderr
    assert not (tmp_path / "tvflux.duckdb").exists()  # no store opened, no backfill written
    assert elapsed < 20
