"""Fault-suite fixtures: a tmpfs mount (root only; skipped with the reason elsewhere) and a
real NATS server (skipped without the binary, except under CI, where that fails)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nats_server import NatsServer, nats_server_binary_or_skip


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs: a small, real disk that can really be filled."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}): the disk-full fault needs root"
        if _in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server on a free loopback port; ``stop()``/``start()`` keep the port."""
    work = tmp_path / "nats"
    work.mkdir()
    server = NatsServer(nats_server_binary_or_skip(), work).start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)
