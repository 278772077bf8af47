"""Hosts for multi-host tests: Linux network namespaces made by the test itself, joined by
a bridge in the test's own namespace (which is a host on that network too). Each host
has its own address and loopback; processes run in it with ``ip netns exec``. Everything
is removed on :meth:`Network.close`, processes first.

Needs root and iproute2 (``ip``); :func:`unavailable` says why not, for a skip.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path


def unavailable() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"tvfprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *(["netns", "exec", netns, "ip"] if netns else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")


class Host:
    def __init__(self, network: Network, name: str, address: str) -> None:
        self.network = network
        self.name = name  # the namespace
        self.address = address
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, args: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        out = open(log, "ab")
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *args], env=env, stdout=out, stderr=out)
        out.close()
        self.procs.append(proc)
        return proc

    def stop_all(self, sig: int = signal.SIGTERM) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(sig)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


class Network:
    """``hosts`` names → a namespace each on 10.<n>.0.0/24; this namespace is ``.1``."""

    def __init__(self, hosts: list[str]) -> None:
        tag = secrets.token_hex(2)
        self.bridge = f"tvfbr{tag}"
        self.subnet = f"10.{200 + int(tag, 16) % 50}.{int(tag, 16) % 250}"
        self.gateway = f"{self.subnet}.1"
        self.hosts: dict[str, Host] = {}
        self._links: list[str] = []
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, name in enumerate(hosts):
                ns = f"tvf{tag}{name}"[:15]
                outer, inner = f"tvf{tag}o{i}", f"tvf{tag}i{i}"
                _ip("netns", "add", ns)
                _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
                self._links.append(outer)
                _ip("link", "set", inner, "netns", ns)
                _ip("link", "set", outer, "master", self.bridge)
                _ip("link", "set", outer, "up")
                address = f"{self.subnet}.{i + 2}"
                _ip("addr", "add", f"{address}/24", "dev", inner, netns=ns)
                _ip("link", "set", inner, "up", netns=ns)
                _ip("link", "set", "lo", "up", netns=ns)
                self.hosts[name] = Host(self, ns, address)
        except BaseException:
            self.close()
            raise

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def close(self) -> None:
        for host in self.hosts.values():
            host.stop_all(signal.SIGKILL)
        for host in self.hosts.values():
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True)
        for link in self._links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
