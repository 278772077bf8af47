"""A real NATS server (``nats-server``) on 127.0.0.1 for the tests, its log in a temporary
folder.

The binary is found through ``TVFLUX_NATS_SERVER`` (a path) or ``nats-server`` on ``PATH``
(Debian's package installs it as ``/usr/sbin/nats-server``, which is not on every user's
``PATH``, so that is looked at too). ``NatsServer`` starts it on a free port and can be
stopped and started again on the same port, which is how the tests take the broker away
and bring it back. ``nats_server_binary_or_skip()`` skips a test without the binary, except
under ``CI=true``, where a missing broker fails the run instead of passing it as skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

_DEBIAN_PATH = "/usr/sbin/nats-server"


def nats_server_binary() -> str | None:
    path = os.environ.get("TVFLUX_NATS_SERVER", "").strip()
    if path:
        return path if os.access(path, os.X_OK) else None
    found = shutil.which("nats-server")
    if found is None and os.access(_DEBIAN_PATH, os.X_OK):
        found = _DEBIAN_PATH
    return found


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def nats_server_binary_or_skip() -> str:
    binary = nats_server_binary()
    if binary is None:
        reason = "no nats-server binary (apt-get install nats-server, or set TVFLUX_NATS_SERVER)"
        if _in_ci():
            pytest.fail(f"NATS tests cannot run in CI: {reason}", pytrace=False)
        pytest.skip(f"NATS tests skipped: {reason}")
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    def __init__(self, binary: str, work_dir: Path) -> None:
        self.binary = binary
        self.work_dir = work_dir
        self.port = _free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = work_dir / "nats-server.log"

    def start(self, timeout_s: float = 10.0) -> NatsServer:
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-l", str(self.log_path)]
        self.proc = subprocess.Popen(args, cwd=self.work_dir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}:\n{self.log()}")
            if self._answers():
                return self
            time.sleep(0.02)
        raise RuntimeError(f"nats-server did not answer on {self.url} in {timeout_s}s:\n{self.log()}")

    def _answers(self) -> bool:
        """The server greets every client with ``INFO {...}``."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                return s.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> NatsServer:
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""
