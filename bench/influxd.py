"""A throwaway InfluxDB 2 (``influxd``) on 127.0.0.1, for the benchmarks and the tests alike.

``Influxd`` starts the binary on a free port with its data in a folder of its own, completes
onboarding over the HTTP API (``POST /api/v2/setup``), and can be stopped, killed and started
again on the same data and port (how the restart tests interrupt a backfill). ``Sampler``
records its RSS and CPU per benchmark phase. The binary comes from ``TVFLUX_INFLUXD`` (a
path) or ``influxd`` on ``PATH``; it is never part of this repository (docs/influxdb.md says
how to get one). The product never imports this module.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ORG = "tvflux"
TOKEN = "tvflux-local-token"  # onboarding sets the operator token to this: loopback only
_USER, _PASSWORD = "tvflux", "tvflux-local-password"


def influxd_binary() -> str | None:
    path = os.environ.get("TVFLUX_INFLUXD", "").strip()
    if path:
        return path if os.access(path, os.X_OK) else None
    return shutil.which("influxd")


def influxd_version(binary: str) -> str | None:
    try:
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    # "InfluxDB v2.9.1 (git: …) build_date: …"
    return next((p.lstrip("v") for p in out.split() if p.startswith(("v2", "2."))), out or None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# influxd's memory bounds as docs/deployment.md recommends them and compose.yaml sets them
# (as INFLUXD_* variables; a test keeps the three equal). The benchmark and the tests run
# influxd with them, so the measured figures are those of the bounded server: at most 8
# queries at once (64 queued), 256 MiB each, 1 GiB for all, and a 512 MiB write cache per
# shard (InfluxDB's defaults: 1,024 queries, no memory limit, 1 GiB cache).
MEMORY_BOUNDS = {
    "query-concurrency": "8",
    "query-queue-size": "64",
    "query-initial-memory-bytes": "10485760",
    "query-memory-bytes": "268435456",
    "query-max-memory-bytes": "1073741824",
    "storage-cache-max-memory-size": "536870912",
}


def bound_args() -> list[str]:
    return [arg for flag, value in MEMORY_BOUNDS.items() for arg in (f"--{flag}", value)]


class Influxd:
    def __init__(self, binary: str, data_dir: Path, extra_args: Sequence[str] = ()) -> None:
        self.binary, self.data_dir, self.extra_args = binary, Path(data_dir), list(extra_args)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.org, self.token = ORG, TOKEN
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "influxd.log"

    @property
    def env(self) -> dict[str, str]:
        """The ``TVFLUX_*`` settings that point a tvflux at this server."""
        return {
            "TVFLUX_STORE": "influx",
            "TVFLUX_INFLUX_URL": self.url,
            "TVFLUX_INFLUX_TOKEN": self.token,
            "TVFLUX_INFLUX_ORG": self.org,
        }

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout_s: float = 60.0) -> Influxd:
        self.data_dir.mkdir(parents=True, exist_ok=True)
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
            *bound_args(),
            *self.extra_args,
        ]
        # A clean environment: an operator's INFLUXD_* variables must not reach this server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUXD_")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"influxd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.call("GET", "/health", timeout_s=10)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"influxd did not answer /health in {timeout_s}s:\n{self.log()}")
        status, body = self.call("GET", "/api/v2/setup")
        if status == 200 and body.get("allowed") is False:
            return self  # a restart on the same data: already onboarded
        setup = {"username": _USER, "password": _PASSWORD, "org": ORG, "bucket": "onboarding", "token": TOKEN}
        status, body = self.call("POST", "/api/v2/setup", setup)
        if status != 201:
            raise RuntimeError(f"influxd onboarding failed: HTTP {status} {body}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, sig: int = signal.SIGTERM) -> Influxd:
        self.stop(sig)
        return self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    # --- the HTTP API, for what the benchmark counts and sizes ----------------------------------

    def call(
        self, method: str, path: str, body: Any = None, *, accept: str | None = None, timeout_s: float = 600.0
    ) -> tuple[int, Any]:
        """One request; the answer's JSON, or its text when it is not JSON."""
        headers = {"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"}
        if accept:
            headers["Accept"] = accept
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                payload, status = resp.read(), resp.status
        except urllib.error.HTTPError as exc:
            payload, status = exc.read(), exc.code
        try:
            return status, json.loads(payload or b"{}")
        except ValueError:
            return status, payload.decode(errors="replace")

    def flux_csv(self, flux: str) -> list[dict[str, str]]:
        status, text = self.call(
            "POST", f"/api/v2/query?org={ORG}", {"query": flux, "type": "flux"}, accept="application/csv"
        )
        if status != 200:
            raise RuntimeError(f"query failed: {status} {text}\n{flux}")
        rows, header = [], None
        for rec in csv.reader(io.StringIO(text if isinstance(text, str) else json.dumps(text))):
            if not rec or not any(rec):
                header = None  # a blank line ends a table; the next one has its own header
            elif header is None:
                header = rec
            else:
                rows.append(dict(zip(header, rec)))
        return rows

    def count_points(self, bucket: str, measurement: str, field: str) -> int:
        flux = (
            f'from(bucket: "{bucket}") |> range(start: 0, stop: 2100-01-01T00:00:00Z)'
            f' |> filter(fn: (r) => r._measurement == "{measurement}" and r._field == "{field}")'
            " |> count() |> group() |> sum()"
        )
        rows = self.flux_csv(flux)
        return int(rows[0]["_value"]) if rows else 0

    def bucket_id(self, name: str) -> str | None:
        status, body = self.call("GET", f"/api/v2/buckets?org={ORG}&name={name}")
        found = body.get("buckets") if status == 200 else None
        return found[0]["id"] if found else None

    def create_bucket(self, name: str) -> str:
        org_id = self.call("GET", f"/api/v2/orgs?org={ORG}")[1]["orgs"][0]["id"]
        status, body = self.call("POST", "/api/v2/buckets", {"orgID": org_id, "name": name, "retentionRules": []})
        if status == 422:  # exists
            return self.bucket_id(name) or ""
        if status != 201:
            raise RuntimeError(f"cannot create bucket {name}: {status} {body}")
        return str(body["id"])

    def disk_bytes(self) -> dict[str, int]:
        """Bytes under the engine directory: total, and per bucket id (TSM data + WAL)."""
        engine = self.data_dir / "engine"
        out = {"total": _du(engine)}
        for sub in ("data", "wal"):
            if (engine / sub).is_dir():
                for d in (engine / sub).iterdir():
                    out[d.name] = out.get(d.name, 0) + _du(d)
        return out


def _du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


class Sampler:
    """influxd's RSS (peak) and CPU time per labelled phase, sampled by a thread."""

    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.every_s = every_s
        self.phase = "start"
        self.peaks: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self._opened: tuple[float, float] | None = None  # (cpu s, wall s) when the phase began
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _cpu_s(self) -> float:
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    def enter(self, phase: str) -> None:
        self._close_phase()
        self.phase = phase
        self._opened = (self._cpu_s(), time.perf_counter())

    def _close_phase(self) -> None:
        if self._opened is not None:
            cpu0, t0 = self._opened
            self.cpu[self.phase] = round(self.cpu.get(self.phase, 0.0) + self._cpu_s() - cpu0, 1)
            self.seconds[self.phase] = round(self.seconds.get(self.phase, 0.0) + time.perf_counter() - t0, 1)
            self._opened = None

    def rss_mb(self) -> float:
        return round(self.proc.memory_info().rss / 2**20, 1)

    def _loop(self) -> None:
        import psutil

        while not self._stop.wait(self.every_s):
            try:
                rss = self.proc.memory_info().rss / 2**20
            except psutil.Error:
                return
            self.peaks[self.phase] = round(max(self.peaks.get(self.phase, 0.0), rss), 1)

    def stop(self) -> dict[str, Any]:
        self._close_phase()
        self._stop.set()
        self._thread.join(5)
        return {
            "peak_rss_mb": self.peaks,
            "cpu_s": self.cpu,
            "seconds": self.seconds,
            "cpu_pct": {p: round(100 * self.cpu[p] / self.seconds[p]) for p in self.cpu if self.seconds.get(p)},
        }
