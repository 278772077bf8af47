"""CPU and memory of the server, of the generator itself, and of the whole machine.

Sampled once a second with psutil. CPU is in percent of one core (200% = both cores of
a 2-core machine). The server is its process and every descendant (the edge processes of
``tvflux serve --workers``). "Others" is the machine total minus server and generator: on
a shared machine it says how much the numbers were disturbed.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psutil


class ProcessMonitor:
    def __init__(self, server_pid: int | None) -> None:
        self.cpus = psutil.cpu_count() or 1
        self.server = _proc(server_pid)
        self.me = psutil.Process(os.getpid())
        self.samples: list[dict[str, Any]] = []
        self.rss_peak_bytes = 0
        self._prime()

    def _prime(self) -> None:
        psutil.cpu_percent(None)
        self.me.cpu_percent(None)
        self._last_server_s = self.server_cpu_s()
        self._last_t = time.perf_counter()

    def _family(self) -> list[psutil.Process]:
        if self.server is None:
            return []
        try:
            return [self.server, *self.server.children(recursive=True)]
        except psutil.Error:
            self.server = None
            return []

    def server_cpu_s(self) -> float | None:
        """CPU seconds (user + system) of the server and its descendants alive now."""
        family = self._family()
        if not family:
            return None
        total = 0.0
        for proc in family:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
        return total

    def sample(self, t: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        machine = psutil.cpu_percent(None) * self.cpus
        mine = self.me.cpu_percent(None)
        server_cpu = server_rss = None
        cpu_s, now = self.server_cpu_s(), time.perf_counter()
        if cpu_s is not None and self._last_server_s is not None and now > self._last_t:
            server_cpu = round(100 * max(0.0, cpu_s - self._last_server_s) / (now - self._last_t), 1)
        self._last_server_s, self._last_t = cpu_s, now
        family = self._family()
        if family:
            rss = 0
            for proc in family:
                try:
                    rss += proc.memory_info().rss
                except psutil.Error:
                    continue
            server_rss = rss
            self.rss_peak_bytes = max(self.rss_peak_bytes, server_rss)
        row = {
            "t": round(t, 2),
            "server_cpu": server_cpu,
            "server_rss_mb": None if server_rss is None else round(server_rss / 2**20, 1),
            "loadgen_cpu": round(mine, 1),
            "machine_cpu": round(machine, 1),
            "others_cpu": round(max(0.0, machine - mine - (server_cpu or 0.0)), 1),
        }
        if extra:
            row.update(extra)
        self.samples.append(row)
        return row

    def summary(self, since_t: float = 0.0, until_t: float = float("inf")) -> dict[str, Any]:
        rows = [r for r in self.samples if since_t <= r["t"] <= until_t] or self.samples

        def stats(key: str) -> tuple[float | None, float | None]:
            values = [r[key] for r in rows if r.get(key) is not None]
            if not values:
                return None, None
            return round(sum(values) / len(values), 1), round(max(values), 1)

        server_avg, server_max = stats("server_cpu")
        me_avg, me_max = stats("loadgen_cpu")
        machine_avg, _ = stats("machine_cpu")
        others_avg, others_max = stats("others_cpu")
        rss = [r["server_rss_mb"] for r in rows if r.get("server_rss_mb") is not None]
        return {
            "cpus": self.cpus,
            "server_cpu_avg_pct": server_avg,
            "server_cpu_max_pct": server_max,
            "server_rss_peak_mb": round(self.rss_peak_bytes / 2**20, 1) if self.rss_peak_bytes else None,
            "server_rss_end_mb": rss[-1] if rss else None,
            "loadgen_cpu_avg_pct": me_avg,
            "loadgen_cpu_max_pct": me_max,
            "machine_cpu_avg_pct": machine_avg,
            "others_cpu_avg_pct": others_avg,
            "others_cpu_max_pct": others_max,
        }


def _proc(pid: int | None) -> psutil.Process | None:
    if pid is None:
        return None
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def now() -> float:
    return time.perf_counter()
