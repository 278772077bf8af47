"""Starting ``tvflux serve`` for a run (``--spawn``): on 127.0.0.1, a free port, a
scratch data directory unless one is given, ``TVFLUX_*`` settings from the caller."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

import msgspec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SpawnedServer:
    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        data_dir: str | None = None,
        port: int | None = None,
        log_path: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self._tmp = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tvflux-loadgen-")
            data_dir = self._tmp.name
        self.data_dir = data_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TVFLUX_")}
        self.env.update(
            {
                "TVFLUX_HOST": "127.0.0.1",
                "TVFLUX_PORT": str(self.port),
                "TVFLUX_DATA_DIR": data_dir,
                "TVFLUX_LOG_LEVEL": "WARNING",
            }
        )
        self.env.update(env or {})
        self.log_path = log_path or os.path.join(data_dir, f"server-{self.port}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout_s: float = 120.0) -> SpawnedServer:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.ops.cli", "serve"], env=self.env, stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tvflux serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.base_url + "/health/ready", timeout=5) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"tvflux serve was not ready within {timeout_s}s:\n{self.log()}")

    def stop(self, timeout_s: float = 60.0) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return proc.returncode

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> SpawnedServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def get_json(base_url: str, path: str, timeout_s: float = 10.0) -> Any:
    with urllib.request.urlopen(base_url + path, timeout=timeout_s) as resp:
        return msgspec.json.decode(resp.read())
