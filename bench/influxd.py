"""A throwaway ``influxd`` for the benchmarks (127.0.0.1, onboarded, data in a folder of
its own) and a sampler of its RSS and CPU. The binary comes from ``TVFLUX_INFLUXD`` or
``PATH``; it is never part of this repository."""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

import psutil

ORG, TOKEN = "tvflux", "tvflux-bench-token"  # loopback only, a throwaway server


def influxd_binary() -> str | None:
    path = os.environ.get("TVFLUX_INFLUXD", "").strip()
    if path:
        return path if os.access(path, os.X_OK) else None
    return shutil.which("influxd")


def influxd_version(binary: str) -> str | None:
    try:
        out = subprocess.run(
            [binary, "version"], check=False, capture_output=True, text=True, timeout=20
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    # "InfluxDB v2.9.1 (git: …) build_date: …"
    parts = out.split()
    return next((p.lstrip("v") for p in parts if p.startswith(("v2", "2."))), out or None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Influxd:
    """A throwaway ``influxd`` on 127.0.0.1, onboarded, data in ``data_dir``."""

    def __init__(self, binary: str, data_dir: Path) -> None:
        self.binary, self.data_dir = binary, data_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.org_id: str | None = None
        self.extra_args: list[str] = []

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
            *self.extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUXD_")}
        with open(self.data_dir / "influxd.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"influxd exited with {self.proc.returncode}; see {self.data_dir / 'influxd.log'}")
            try:
                if self.call("GET", "/health")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"influxd did not answer in {timeout_s}s")
        status, body = self.call("GET", "/api/v2/setup")
        if body.get("allowed", True):
            status, body = self.call(
                "POST",
                "/api/v2/setup",
                {"username": "bench", "password": "bench-password", "org": ORG, "bucket": "onboarding", "token": TOKEN},
            )
            if status != 201:
                raise RuntimeError(f"influxd onboarding failed: {status} {body}")
        self.org_id = self.call("GET", f"/api/v2/orgs?org={ORG}")[1]["orgs"][0]["id"]
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def env(self, names: dict[str, str] | None = None) -> dict[str, str]:
        return {
            "TVFLUX_STORE": "influx",
            "TVFLUX_INFLUX_URL": self.url,
            "TVFLUX_INFLUX_TOKEN": TOKEN,
            "TVFLUX_INFLUX_ORG": ORG,
            **(names or {}),
        }

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 600,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Authorization": f"Token {TOKEN}", "Content-Type": "application/json", **(headers or {})}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                payload, status = resp.read(), resp.status
        except urllib.error.HTTPError as exc:
            payload, status = exc.read(), exc.code
        try:
            return status, json.loads(payload or b"{}")
        except ValueError:
            return status, payload.decode(errors="replace")

    def create_bucket(self, name: str) -> str:
        status, body = self.call("POST", "/api/v2/buckets", {"orgID": self.org_id, "name": name, "retentionRules": []})
        if status == 422:  # exists
            return self.bucket_id(name) or ""
        if status != 201:
            raise RuntimeError(f"cannot create bucket {name}: {status} {body}")
        return body["id"]

    def bucket_id(self, name: str) -> str | None:
        status, body = self.call("GET", f"/api/v2/buckets?org={ORG}&name={name}")
        found = body.get("buckets") if status == 200 else None
        return found[0]["id"] if found else None

    def flux_csv(self, flux: str) -> list[dict[str, str]]:
        import csv
        import io

        status, text = self.call(
            "POST", f"/api/v2/query?org={ORG}", {"query": flux, "type": "flux"}, headers={"Accept": "application/csv"}
        )
        if status != 200:
            raise RuntimeError(f"query failed: {status} {text}\n{flux}")
        rows, header = [], None
        for rec in csv.reader(io.StringIO(text if isinstance(text, str) else json.dumps(text))):
            if not rec or not any(rec):
                header = None
                continue
            if header is None:
                header = rec
                continue
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

    def disk_bytes(self) -> dict[str, int]:
        """Bytes under the engine directory: total, and per bucket id (TSM data + WAL)."""
        engine = self.data_dir / "engine"
        out: dict[str, int] = {
            "total": _du(engine),
            "bolt+sqlite": _du(self.data_dir / "influxd.bolt") + _du(self.data_dir / "influxd.sqlite"),
        }
        for sub in ("data", "wal"):
            base = engine / sub
            if base.is_dir():
                for d in base.iterdir():
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
    """influxd's RSS and CPU every ``every_s``, with a label per phase (a thread)."""

    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        self.proc = psutil.Process(pid)
        self.every_s = every_s
        self.phase = "start"
        self.peaks: dict[str, float] = {}
        self.cpu_at: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _cpu_s(self) -> float:
        t = self.proc.cpu_times()
        return t.user + t.system

    def enter(self, phase: str) -> None:
        self._close_phase()
        self.phase = phase
        self.cpu_at[phase] = self._cpu_s()
        self.started[phase] = time.perf_counter()

    def _close_phase(self) -> None:
        if self.phase in self.cpu_at:
            self.cpu[self.phase] = round(self.cpu.get(self.phase, 0.0) + self._cpu_s() - self.cpu_at[self.phase], 1)
            self.seconds[self.phase] = round(time.perf_counter() - self.started[self.phase], 1)

    def rss_mb(self) -> float:
        return round(self.proc.memory_info().rss / 2**20, 1)

    def _loop(self) -> None:
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
