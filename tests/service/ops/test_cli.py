"""The tvflux command line, run as a user would (a subprocess with TVFLUX_* variables)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import duckdb

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


def one_line_error(out, code):
    """A refused command: exit ``code`` and one line saying why, never a traceback."""
    assert out.returncode == code, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    return out.stderr


def test_mistakes_get_a_one_line_message_not_a_traceback(tmp_path):
    readme = Path(__file__).resolve().parents[3] / "README.md"
    assert "is a file, not a directory" in one_line_error(run(["serve"], readme), 2)
    assert "--port 99999" in one_line_error(run(["serve", "--port", "99999"], tmp_path), 2)
    assert "invalid settings" not in run(["serve", "--port", "99999"], tmp_path).stderr  # a flag, not a setting
    assert run(["generate", "--days", "0.01", "--trades", "100"], tmp_path).returncode == 0
    for target in (str(readme / "x"), "/proc/tvflux-test"):
        assert "cannot create the backup directory" in one_line_error(run(["backup", target], tmp_path), 1)
    assert "ambiguous" in one_line_error(
        run(["trades", "delete", "--symbol", "BTCUSD", "--from", "5000", "--to", "6000"], tmp_path), 2
    )
    loadgen = str(Path(sys.executable).parent / "tvflux-loadgen")
    out = subprocess.run([loadgen, "--spawn", "--data-dir", "/nonexistent/dir"], capture_output=True, text=True)
    assert "no such directory" in one_line_error(out, 2)


def test_an_edge_on_a_busy_port_says_so_at_once(tmp_path):
    import socket
    import time

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        started = time.monotonic()
        out = run(["edge", "--core", "http://127.0.0.1:1"], tmp_path, TVFLUX_PORT=str(busy.getsockname()[1]))
        assert time.monotonic() - started < 8
    assert out.returncode == 1 and "already in use" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert "error while attempting to bind" not in out.stderr  # not uvicorn's raw error after its startup


def test_every_time_flag_takes_iso_dates_and_a_number_whose_size_names_its_unit(tmp_path):
    assert run(["generate", "--days", "1", "--trades", "2000", "--end", "2023-11-14"], tmp_path).returncode == 0
    end_ms = 1_699_920_000_000  # 2023-11-14T00:00:00Z

    def count():
        with duckdb.connect(str(tmp_path / "tvflux.duckdb"), read_only=True) as db:
            return db.execute("SELECT count(*) FROM trades WHERE symbol = 'BTCUSD'").fetchone()[0]

    before = count()
    hour_s = (end_ms - 3_600_000) // 1000  # epoch seconds: deleted, not silently nothing
    out = run(["trades", "delete", "--symbol", "BTCUSD", "--from", str(hour_s), "--to", str(end_ms // 1000)], tmp_path)
    assert out.returncode == 0, out.stderr
    deleted = int(out.stderr.split("deleted ")[1].split()[0])
    assert deleted > 0 and count() == before - deleted
    out = run(
        ["trades", "delete", "--symbol", "BTCUSD", "--from", "2023-11-13T20:00:00Z", "--to", f"{hour_s * 1000}"],
        tmp_path,
    )
    assert out.returncode == 0 and int(out.stderr.split("deleted ")[1].split()[0]) > 0, out.stderr


def test_ctrl_c_stops_generate_quietly(tmp_path):
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("TVFLUX_")}
    env["TVFLUX_DATA_DIR"] = str(tmp_path)
    proc = subprocess.Popen(
        [TVFLUX, "generate", "--days", "30", "--trades", "20000000"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(4)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err


def test_an_edge_whose_broker_is_unreachable_says_so(tmp_path):
    import signal
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TVFLUX_")}
    env.update(TVFLUX_DATA_DIR=str(tmp_path), TVFLUX_PORT=str(port))
    args = [TVFLUX, "edge", "--core", "http://127.0.0.1:1", "--broker", "nats://127.0.0.1:1"]
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert "no live bars: broker unreachable at nats://127.0.0.1:1" in err, err
