"""A real InfluxDB 2 (``influxd``) on 127.0.0.1 for the tests, data in a temporary folder.

The binary is found through ``TVFLUX_INFLUXD`` (a path) or ``influxd`` on ``PATH``; it is
never part of this repository (docs/influxdb.md says how to get one). ``InfluxServer``
starts it on a free port, completes onboarding over the HTTP API (``POST /api/v2/setup``),
and can be stopped, killed and started again on the same data and port, which is how the
restart tests interrupt a backfill.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ORG = "tvflux"
TOKEN = "tvflux-test-token"  # onboarding sets the operator token to this: loopback only
_USER, _PASSWORD = "tvflux", "tvflux-test-password"


def influxd_binary() -> str | None:
    path = os.environ.get("TVFLUX_INFLUXD", "").strip()
    if path:
        return path if os.access(path, os.X_OK) else None
    return shutil.which("influxd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class InfluxServer:
    def __init__(self, binary: str, data_dir: Path) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token, self.org = TOKEN, ORG
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "influxd.log"

    @property
    def env(self) -> dict[str, str]:
        """The ``TVFLUX_*`` settings that point a tvflux at this server."""
        return {
            "TVFLUX_STORE": "influx",
            "TVFLUX_INFLUX_URL": self.url,
            "TVFLUX_INFLUX_TOKEN": self.token,
            "TVFLUX_INFLUX_ORG": self.org,
        }

    def start(self, timeout_s: float = 60.0) -> InfluxServer:
        args = [
            self.binary,
            "--bolt-path",
            str(self.data_dir / "influxd.bolt"),
            "--engine-path",
            str(self.data_dir / "engine"),
            "--sqlite-path",
            str(self.data_dir / "influxd.sqlite"),
            "--http-bind-address",
            f"127.0.0.1:{self.port}",
            "--reporting-disabled",
            "--log-level",
            "warn",
        ]
        log = open(self.log_path, "ab")
        # A clean environment: an operator's INFLUXD_* variables must not reach the test server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUXD_")}
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"influxd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _ = self._call("GET", "/health")
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"influxd did not answer /health in {timeout_s}s:\n{self.log()}")
        self._onboard()
        return self

    def _onboard(self) -> None:
        status, body = self._call("GET", "/api/v2/setup")
        if status == 200 and body.get("allowed") is False:
            return  # a restart on the same data: already onboarded
        status, body = self._call(
            "POST",
            "/api/v2/setup",
            {
                "username": _USER,
                "password": _PASSWORD,
                "org": ORG,
                "bucket": "onboarding",
                "token": TOKEN,
            },
        )
        if status != 201:
            raise RuntimeError(f"influxd onboarding failed: HTTP {status} {body}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, sig: int = signal.SIGTERM) -> InfluxServer:
        self.stop(sig)
        return self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    def _call(self, method: str, path: str, body: object = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
