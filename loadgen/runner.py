"""One load run: (spawn a server,) connect subscribers, publish, measure, report.

Phases: *setup* (server, subscriber connections), *warm-up* (load on, nothing counted),
*measure* (``duration_s``: every rate, latency and gap in the report comes from here),
*drain* (publishing stops; outstanding acks, the last markers and the writer's queue are
waited for, bounded). The run always ends by itself: every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from array import array
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from loadgen.guard import DEFAULT_SYMBOLS, check_target, is_own, turn_price_band_off
from loadgen.httpclient import HttpConnection, HttpError
from loadgen.markers import MarkerBook
from loadgen.monitor import ProcessMonitor
from loadgen.publisher import Pacer, Publisher
from loadgen.server import SpawnedServer, get_json
from loadgen.stats import fmt_num, rate, summarize
from loadgen.subscribers import SubscriberPool, spread
from service.core.resolution import parse_resolution

DEFAULT_RESOLUTIONS = ("1", "5", "15", "60", "240", "1D")


@dataclass
class LoadConfig:
    url: str = "http://127.0.0.1:8000"
    spawn: bool = False
    pid: int | None = None
    server_env: dict[str, str] = field(default_factory=dict)
    data_dir: str | None = None
    # publishing
    rate: float = 10_000.0
    transport: str = "ws"  # or "http"
    fmt: str = "msgpack"  # or "json" (http is always json)
    connections: int = 2
    frame_trades: int = 5_000
    window: int = 4
    marker_hz: float = 20.0
    token: str | None = None
    allow_real_symbols: bool = False  # publish to symbols that are not LOADGEN-… on a non-scratch server
    # subscribing
    subscribers: int = 0
    subs_per_conn: int = 1
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS  # the load generator's own (loadgen.guard)
    resolutions: tuple[str, ...] = DEFAULT_RESOLUTIONS
    connect_concurrency: int = 100
    deflate: bool = False
    protocol: int = 2  # /ws?v=2 (topic frames, what the datafeed speaks) or 1
    push_interval_ms: int | None = None  # for --spawn; the server's setting otherwise
    # history requests while loaded
    history_rate: float = 0.0
    history_countback: int = 300
    history_to_ms: int | None = None
    history_connections: int = 1
    # timing
    duration_s: float = 10.0
    warmup_s: float = 2.0
    drain_timeout_s: float = 20.0
    progress: bool = True


class HistoryLoad:
    """Chart-history requests (``/api/bars?countback=``) at a fixed rate while loaded."""

    def __init__(self, host: str, port: int, cfg: LoadConfig) -> None:
        self.host, self.port, self.cfg = host, port, cfg
        self.latency_ms: dict[str, array[float]] = {r: array("d") for r in cfg.resolutions}
        self.errors = 0
        self.empty = 0
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._i = 0

    def start(self) -> None:
        pacer = Pacer(self.cfg.history_rate, max_debt_s=0.5)
        self._tasks = [asyncio.create_task(self._loop(pacer)) for _ in range(self.cfg.history_connections)]

    async def _loop(self, pacer: Pacer) -> None:
        conn = HttpConnection(self.host, self.port)
        cfg = self.cfg
        try:
            while not self.stop.is_set():
                await pacer.slot()
                if self.stop.is_set():
                    break
                self._i += 1
                res = cfg.resolutions[self._i % len(cfg.resolutions)]
                symbol = cfg.symbols[self._i % len(cfg.symbols)]
                path = f"/api/bars?symbol={symbol}&resolution={res}&countback={cfg.history_countback}"
                if cfg.history_to_ms is not None:
                    path += f"&to={cfg.history_to_ms // 1000}"
                t0 = time.perf_counter()
                try:
                    status, body = await conn.request("GET", path)
                except (TimeoutError, HttpError, OSError):
                    self.errors += 1
                    continue
                elapsed = (time.perf_counter() - t0) * 1000
                if status != 200:
                    self.errors += 1
                    continue
                if b'"noData":true' in body:
                    self.empty += 1
                self.latency_ms[res].append(elapsed)
        finally:
            await conn.close()

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.wait(self._tasks, timeout=10) if self._tasks else None
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def report(self, seconds: float) -> dict[str, Any]:
        every = array("d")
        for samples in self.latency_ms.values():
            every.extend(samples)
        return {
            "requests": len(every) + self.errors,
            "errors": self.errors,
            "empty": self.empty,
            "requests_per_s": round(rate(len(every), seconds), 1),
            "countback": self.cfg.history_countback,
            "latency_ms": summarize(every),
            "by_resolution": {r: summarize(s) for r, s in self.latency_ms.items()},
        }


async def run_load(cfg: LoadConfig) -> dict[str, Any]:
    server = None
    if cfg.spawn:
        env = {
            "TVFLUX_SYNTHETIC_RATE": "0",
            "TVFLUX_MAX_BATCH_TRADES": str(max(10_000, cfg.frame_trades)),
            "TVFLUX_MAX_SUBSCRIPTIONS_PER_CONNECTION": str(max(200, cfg.subs_per_conn)),
            # every connection comes from 127.0.0.1: lift the per-address limit above the run's needs
            "TVFLUX_MAX_CONNECTIONS_PER_CLIENT": str(cfg.subscribers + cfg.connections + 64),
            # the server is created for the run: it accepts the run's symbols (loadgen.guard)
            "TVFLUX_SYMBOLS": ",".join(cfg.symbols),
        }
        if cfg.push_interval_ms is not None:
            env["TVFLUX_PUSH_INTERVAL_MS"] = str(cfg.push_interval_ms)
        env.update(cfg.server_env)
        server = SpawnedServer(env, data_dir=cfg.data_dir)
        await asyncio.to_thread(server.start)
        base_url, pid = server.base_url, server.pid
    else:
        base_url, pid = cfg.url.rstrip("/"), cfg.pid
    try:
        if server is None or cfg.data_dir is not None:  # not a scratch server: it may hold real data
            writes = cfg.rate > 0 or (cfg.subscribers > 0 and cfg.marker_hz > 0)
            await asyncio.to_thread(
                check_target,
                base_url,
                cfg.symbols,
                writes=writes,
                allow_real_symbols=cfg.allow_real_symbols,
                get_json=get_json,
            )
        if cfg.rate > 0 or (cfg.subscribers > 0 and cfg.marker_hz > 0):
            token = cfg.server_env.get("TVFLUX_ADMIN_TOKEN") if server is not None else None
            await asyncio.to_thread(
                turn_price_band_off,
                base_url,
                [s for s in cfg.symbols if is_own(s)],  # a real symbol keeps its guard
                token or os.environ.get("TVFLUX_ADMIN_TOKEN"),
            )
        return await _run(cfg, base_url, pid, server)
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)


def _log(cfg: LoadConfig, text: str) -> None:
    if cfg.progress:
        print(text, file=sys.stderr, flush=True)


async def _run(cfg: LoadConfig, base_url: str, pid: int | None, server: SpawnedServer | None) -> dict[str, Any]:
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("tvflux-loadgen only targets 127.0.0.1")
    base_ws = f"ws://{host}:{port}"
    started_wall = time.time()
    stats_before = await asyncio.to_thread(_safe_stats, base_url)
    monitor = ProcessMonitor(pid)
    resolutions = [parse_resolution(r) for r in cfg.resolutions]
    books = {s: MarkerBook(s, resolutions) for s in cfg.symbols}

    pool = SubscriberPool(
        base_ws,
        spread(cfg.symbols, cfg.resolutions, cfg.subscribers),
        subs_per_conn=cfg.subs_per_conn,
        books=books,
        connect_concurrency=cfg.connect_concurrency,
        deflate=cfg.deflate,
        protocol=cfg.protocol,
    )
    t_setup = time.perf_counter()
    if cfg.subscribers:
        _log(cfg, f"connecting {cfg.subscribers:,} subscriptions over {len(pool.groups):,} connections …")
    await pool.start()
    connect_s = time.perf_counter() - t_setup

    publisher = Publisher(
        base_ws,
        host,
        port,
        cfg.symbols,
        rate=cfg.rate,
        connections=cfg.connections,
        frame_trades=cfg.frame_trades,
        window=cfg.window,
        fmt=cfg.fmt,
        transport=cfg.transport,
        marker_hz=cfg.marker_hz if cfg.subscribers else 0.0,
        marker_books=books,
        token=cfg.token,
    )
    history = HistoryLoad(host, port, cfg) if cfg.history_rate > 0 else None
    pstats, sstats = publisher.stats, pool.stats
    t0 = time.perf_counter()
    publisher.start()

    async def tick(label: str, until: float, last: list[Any]) -> None:
        while True:
            now = time.perf_counter()
            if now >= until:
                return
            await asyncio.sleep(min(1.0, until - now))
            now = time.perf_counter()
            dt = now - last[0]
            if dt < 0.5:  # a sliver at the end of a phase: fold it into the next sample
                continue
            d_acked = pstats.trades_acked - last[1]
            d_frames = sstats.frames - last[2]
            lat_slice = sstats.latency_ms[last[3] :]
            last[:] = [now, pstats.trades_acked, sstats.frames, len(sstats.latency_ms)]
            ingest_per_s, frames_per_s = round(rate(d_acked, dt)), round(rate(d_frames, dt))
            extra = {"phase": label, "ingest_per_s": ingest_per_s, "frames_per_s": frames_per_s}
            row = monitor.sample(now - t0, extra)
            if cfg.progress:
                p99 = summarize(lat_slice)["p99"] if len(lat_slice) else None
                line = (
                    f"[{now - t0:5.1f}s {label:>7}] ingest {fmt_num(ingest_per_s)}/s "
                    f"(acked {fmt_num(pstats.trades_acked)}) | subs {sstats.connections_open:,} conns, "
                    f"frames {fmt_num(frames_per_s)}/s, lat p99 {fmt_num(p99, 'ms', 1)} | "
                    f"server cpu {fmt_num(row['server_cpu'], '%')} rss {fmt_num(row['server_rss_mb'], 'MB')} "
                    f"| loadgen cpu {fmt_num(row['loadgen_cpu'], '%')}"
                )
                print(line, file=sys.stderr, flush=True)

    last: list[Any] = [t0, 0, 0, 0]
    await tick("warmup", t0 + cfg.warmup_s, last)
    t_start = time.perf_counter()
    server_cpu0 = monitor.server_cpu_s()
    pool.begin_window(t_start)
    pstats.rtt_window = (t_start, float("inf"))
    sent0, acked0, refused0, frames0 = (
        pstats.trades_sent,
        pstats.trades_acked,
        pstats.trades_refused,
        sstats.window_frames,
    )
    if history is not None:
        history.start()
    await tick("measure", t_start + cfg.duration_s, last)
    t_end = time.perf_counter()
    server_cpu1 = monitor.server_cpu_s()
    seconds = t_end - t_start
    pool.end_window(t_end)
    pstats.rtt_window = (t_start, t_end)
    sent1, acked1, refused1 = pstats.trades_sent, pstats.trades_acked, pstats.trades_refused
    window_frames = sstats.window_frames - frames0
    if history is not None:
        await history.finish()

    _log(cfg, "draining …")
    await publisher.finish(cfg.drain_timeout_s)
    # the last markers of the window are pushed within one push interval (plus queueing)
    await asyncio.sleep(1.0 if cfg.subscribers else 0.0)
    stats_after = await asyncio.to_thread(_wait_writer_idle, base_url, cfg.drain_timeout_s)
    monitor.sample(time.perf_counter() - t0, {"phase": "drain"})
    await pool.close()

    return _report(cfg, locals())


def _safe_stats(base_url: str) -> dict[str, Any] | None:
    try:
        stats: dict[str, Any] = get_json(base_url, "/api/stats")
        return stats
    except Exception:  # noqa: BLE001 - stats are optional (an older server may lack them)
        return None


def _wait_writer_idle(base_url: str, timeout_s: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout_s
    stats = _safe_stats(base_url)
    while stats is not None and stats.get("writer", {}).get("pendingRows", 0) and time.monotonic() < deadline:
        time.sleep(0.2)
        stats = _safe_stats(base_url)
    return stats


def _report(cfg: LoadConfig, v: dict[str, Any]) -> dict[str, Any]:
    pstats, sstats, pool, monitor = v["pstats"], v["sstats"], v["pool"], v["monitor"]
    seconds = v["seconds"]
    before, after = v["stats_before"] or {}, v["stats_after"] or {}
    window_acked = v["acked1"] - v["acked0"]
    window_sent = v["sent1"] - v["sent0"]
    sub_frames = [s.window_frames for s in pool.subs]
    gaps_ms = [s.max_gap * 1000 for s in pool.subs]
    machine = monitor.summary(v["t_start"] - v["t0"], v["t_end"] - v["t0"])
    cpu0, cpu1 = v["server_cpu0"], v["server_cpu1"]
    # the server's (and its edges') CPU seconds over the window; per pushed frame received
    machine["server_cpu_s"] = round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 is not None else None
    machine["server_cpu_us_per_frame"] = (
        round(1e6 * machine["server_cpu_s"] / v["window_frames"], 1)
        if machine["server_cpu_s"] is not None and v["window_frames"]
        else None
    )
    server_accepted = None
    if "tradesAccepted" in after and "tradesAccepted" in before:
        server_accepted = after["tradesAccepted"] - before["tradesAccepted"]
    report: dict[str, Any] = {
        "tool": "tvflux-loadgen",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(v["started_wall"])),
        "config": {k: val for k, val in asdict(cfg).items() if k not in ("token",)},
        "server_url": v["base_url"],
        "spawned": v["server"] is not None,
        "measure_s": round(seconds, 2),
        "ingest": {
            "target_per_s": cfg.rate,
            "achieved_per_s": round(rate(window_acked, seconds)),
            "sent_per_s": round(rate(window_sent, seconds)),
            "trades_sent": pstats.trades_sent,
            "trades_acked": pstats.trades_acked,
            "trades_refused": pstats.trades_refused,
            "trades_unacked": pstats.in_flight_trades(),
            "duplicates": pstats.duplicates,
            "frames_sent": pstats.frames_sent,
            "frames_refused": pstats.frames_refused,
            "errors": dict(pstats.errors),
            "disconnects": pstats.disconnects,
            "ack_rtt_ms": summarize(pstats.ack_rtt_ms),
            "server_accepted": server_accepted,
            "server_stored_total": after.get("writer", {}).get("storedRows"),
            "server_pending_after": after.get("writer", {}).get("pendingRows"),
        },
        "subscribers": {
            "subscriptions": len(pool.subs),
            "connections": len(pool.groups),
            "connect_failures": sstats.connect_failures,
            "connect_s": round(v["connect_s"], 2),
            "frames_received": sstats.frames,
            "frames_per_s": round(rate(v["window_frames"], seconds)),
            "frames_per_sub_per_s": summarize([f / seconds for f in sub_frames]) if sub_frames else summarize([]),
            "max_gap_ms": summarize(gaps_ms),
            "starved": sum(1 for f in sub_frames if f == 0),
            "cut_off": sstats.cut_off,
            "close_codes": dict(sstats.close_codes),
            "resets": sstats.resets,
            "errors": dict(sstats.errors),
        },
        "latency_ms": summarize(sstats.latency_ms),
        "markers": {
            "sent": sum(len(b) for b in v["books"].values()),
            "missed": sstats.markers_missed,
            "hz_per_symbol": cfg.marker_hz if cfg.subscribers else 0,
        },
        "history": v["history"].report(seconds) if v["history"] is not None else None,
        "resources": machine,
        "server_stats": after or None,
        "samples": monitor.samples,
    }
    report["notes"] = _notes(cfg, report)
    return report


def _notes(cfg: LoadConfig, r: dict[str, Any]) -> list[str]:
    notes = []
    res = r["resources"]
    ing = r["ingest"]
    if res.get("loadgen_cpu_avg_pct") is not None and res["loadgen_cpu_avg_pct"] >= 85:
        notes.append(
            f"the generator itself was near its limit (its CPU averaged {res['loadgen_cpu_avg_pct']}% of a "
            "core): figures are a lower bound of what the server can do"
        )
    if res.get("others_cpu_avg_pct") is not None and res["others_cpu_avg_pct"] >= 20:
        notes.append(
            f"the machine was shared: other processes used {res['others_cpu_avg_pct']}% CPU on average "
            f"(max {res['others_cpu_max_pct']}%)"
        )
    if cfg.rate > 0 and ing["achieved_per_s"] < 0.97 * cfg.rate:
        notes.append(f"ingest fell short of the target: {ing['achieved_per_s']:,}/s of {cfg.rate:,.0f}/s")
    lost = ing["trades_sent"] - ing["trades_acked"] - ing["duplicates"]
    if lost:
        notes.append(
            f"{lost:,} trades sent were not accepted (refused {ing['trades_refused']:,}, "
            f"unacknowledged {ing['trades_unacked']:,})"
        )
    if ing["server_accepted"] is not None and ing["server_accepted"] != ing["trades_acked"]:
        notes.append(
            f"the server counted {ing['server_accepted']:,} accepted trades during the run, the generator "
            f"{ing['trades_acked']:,} (another client or the synthetic source was publishing)"
        )
    if ing["server_pending_after"]:
        notes.append(
            f"the server still had {ing['server_pending_after']:,} trades waiting for the store "
            f"{cfg.drain_timeout_s:g} s after publishing stopped (writer error: "
            f"{(r['server_stats'] or {}).get('writer', {}).get('lastError')})"
        )
    subs = r["subscribers"]
    if subs["subscriptions"]:
        if subs["cut_off"]:
            notes.append(f"{subs['cut_off']} subscriber connections were cut off by the server")
        if subs["starved"]:
            notes.append(f"{subs['starved']} subscriptions received nothing while measuring")
        if r["markers"]["missed"]:
            notes.append(
                f"{r['markers']['missed']:,} marker observations were missed (a marker reached the server "
                "after its bar had closed, or a push was lost)"
            )
    return notes
