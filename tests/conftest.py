"""Shared fixtures: a real tvflux server (``tvflux serve`` in a subprocess) on 127.0.0.1.

``server_factory(**env)`` starts servers with extra ``TVFLUX_*`` settings and stops them at
the end of the test; ``tvflux_server`` is one shared server for the session (synthetic
trades on), for tests that only read.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TVFLUX = str(Path(sys.executable).parent / "tvflux")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``tvflux serve`` on 127.0.0.1; ``stop()``/``start()`` keep the port and data dir."""

    def __init__(self, data_dir: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TVFLUX_")},
            "TVFLUX_HOST": "127.0.0.1",
            "TVFLUX_PORT": str(self.port),
            "TVFLUX_DATA_DIR": data_dir,
            "TVFLUX_LOG_LEVEL": "WARNING",
            "TVFLUX_SYNTHETIC_BACKFILL_S": "0",  # tests start from an empty store unless they ask
            # tests post made-up prices (100, then 5000...); the band's own tests turn it on
            "TVFLUX_PRICE_BAND_PCT": "0",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(data_dir) / f"server-{self.port}.log"

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([TVFLUX, "serve"], env=self.env, cwd=ROOT, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tvflux exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _ = self.get("/health/ready")
                if status == 200:
                    return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"tvflux did not become ready in {timeout_s}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    # --- tiny HTTP client (urllib: no extra moving parts in the harness) ---

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                payload = resp.read()
                status = resp.status
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            payload, status, ctype = exc.read(), exc.code, exc.headers.get("Content-Type", "")
        if "json" in ctype:
            return status, json.loads(payload)
        return status, payload.decode(errors="replace")

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        return self.request("POST", path, body, raw)

    def post_trades(self, trades: list[dict[str, Any]], history: bool | None = None) -> dict[str, Any]:
        """``history``: to ``/api/admin/trades`` (bulk history, no live horizon); by default
        when a trade is older than the default horizon of live ingest (7 days) allows."""
        if history is None:
            horizon_ms = time.time() * 1000 - 6.5 * 86_400_000
            history = any(
                isinstance(t, dict) and isinstance(t.get("time"), int) and t["time"] < horizon_ms for t in trades
            )
        status, body = self.post("/api/admin/trades" if history else "/api/trades", trades)
        assert status == 200, (status, body)
        return body


@pytest.fixture
def server_factory() -> Iterator[Any]:
    servers: list[ServerProcess] = []
    dirs: list[tempfile.TemporaryDirectory[str]] = []

    def make(data_dir: str | None = None, start: bool = True, **env: str) -> ServerProcess:
        if data_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="tvflux-test-")
            dirs.append(tmp)
            data_dir = tmp.name
        server = ServerProcess(
            data_dir, {k.upper() if k.startswith("TVFLUX_") else "TVFLUX_" + k.upper(): str(v) for k, v in env.items()}
        )
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.stop(signal.SIGKILL)
    for tmp in dirs:
        tmp.cleanup()


@pytest.fixture(scope="session")
def tvflux_server() -> Iterator[ServerProcess]:
    with tempfile.TemporaryDirectory(prefix="tvflux-session-") as data_dir:
        server = ServerProcess(data_dir, {"TVFLUX_SYNTHETIC_RATE": "30", "TVFLUX_DOWNSAMPLE_INTERVAL_MS": "1000"})
        server.start()
        yield server
        server.stop(signal.SIGKILL)


@pytest.fixture
def quiet_server(server_factory: Any) -> ServerProcess:
    """A server with no synthetic trades: every trade in it came from the test."""
    return server_factory(synthetic_rate="0", downsample_interval_ms="500", grace_ms="1000", lookback_ms="60000")


@pytest.fixture(scope="module")
def module_server() -> Iterator[ServerProcess]:
    """One quiet server (no synthetic trades) shared by a test module."""
    with tempfile.TemporaryDirectory(prefix="tvflux-module-") as data_dir:
        server = ServerProcess(
            data_dir,
            {
                "TVFLUX_SYNTHETIC_RATE": "0",
                "TVFLUX_DOWNSAMPLE_INTERVAL_MS": "500",
                "TVFLUX_GRACE_MS": "1000",
                "TVFLUX_MAX_BATCH_TRADES": "1000",
                "TVFLUX_MAX_BODY_BYTES": "200000",
                "TVFLUX_MAX_BARS": "5000",
                "TVFLUX_SYMBOLS": "BTCUSD,ETHUSD,LTCUSD,TESTA,TESTB,TESTC",
            },
        )
        server.start()
        yield server
        server.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def influx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real InfluxDB 2 for the session (``bench/influxd.py``, the benchmark's launcher too);
    the InfluxDB tests skip with the reason when no ``influxd`` binary is on this machine."""
    from bench.influxd import Influxd, influxd_binary

    binary = influxd_binary()
    if binary is None:
        pytest.skip(
            "InfluxDB tests skipped: no influxd binary (set TVFLUX_INFLUXD or put influxd on PATH; "
            "docs/influxdb.md says how to build one)"
        )
    server = Influxd(binary, tmp_path_factory.mktemp("influxd")).start()
    yield server
    server.stop(signal.SIGKILL)
