"""Push latency while the service is busy: ``python -m bench.push_latency``.

A probe posts one trade at a time on ``/ws/ingest`` (symbol ``PROBE``, a unique price
each) and a subscriber on ``/ws`` waits for the bar whose close is that price: the time
between the two is the trade→bar push latency (coalescing included, so up to
``TVFLUX_PUSH_INTERVAL_MS`` of it is by design). Anything that holds the event loop shows
up as a long push. Measured in three phases, each printed as p50/p99/max:

* ``startup``  — the first seconds after a start with the synthetic backfill
  (``TVFLUX_SYNTHETIC_BACKFILL_S``, default 1 day here): first store writes, the first
  downsampling runs, history initialisation;
* ``catchup``  — a bulk load of history (``POST /api/admin/trades``) and the downsampling
  catch-up it causes (``POST /api/downsampling/run``);
* ``history``  — large history requests (``/api/bars`` of ``TVFLUX_MAX_BARS`` bars) back to
  back from two clients;
* ``idle``     — nothing else going on, for reference.

``--py-spy FILE`` records the server with py-spy meanwhile (a flame graph SVG).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import websockets

ROOT = Path(__file__).resolve().parents[1]
TVFLUX = str(Path(sys.executable).parent / "tvflux")
PROBE = "PROBE"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(
    base: str, method: str, path: str, body: bytes | None = None, ctype: str = "application/json", timeout: float = 300
) -> Any:
    req = urllib.request.Request(base + path, data=body, method=method, headers={"Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


class Prober:
    """One probe trade every ``interval_s``; latencies (ms) collected per phase."""

    def __init__(self, base: str, ws: str, interval_s: float) -> None:
        self.base, self.ws, self.interval_s = base, ws, interval_s
        self.phase = "idle"
        self.samples: dict[str, list[float]] = {}
        self._sent: dict[float, tuple[str, float]] = {}
        self._seq = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with (
            websockets.connect(self.ws + "/ws", max_size=None) as sub,
            websockets.connect(self.ws + "/ws/ingest", max_size=None) as ingest,
        ):
            await sub.send(json.dumps({"op": "subscribe", "id": "p", "symbol": PROBE, "resolution": "1"}))
            reader = asyncio.create_task(self._read(sub))
            acker = asyncio.create_task(self._drain(ingest))
            try:
                while not stop.is_set():
                    self._seq += 1
                    price = round(1000 + self._seq * 0.01, 2)
                    self._sent[price] = (self.phase, time.perf_counter())
                    await ingest.send(
                        json.dumps([{"symbol": PROBE, "price": price, "size": 1.0, "time": int(time.time() * 1000)}])
                    )
                    try:
                        await asyncio.wait_for(stop.wait(), self.interval_s)
                    except TimeoutError:
                        pass
                await asyncio.sleep(0.5)  # the last pushes
            finally:
                reader.cancel()
                acker.cancel()

    async def _drain(self, ingest: Any) -> None:
        async for _ in ingest:
            pass

    async def _read(self, sub: Any) -> None:
        async for raw in sub:
            now = time.perf_counter()
            msg = json.loads(raw)
            if msg.get("type") != "bar":
                continue
            sent = self._sent.pop(msg["bar"]["close"], None)
            if sent is not None:
                self.samples.setdefault(sent[0], []).append((now - sent[1]) * 1000)


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {
        "n": len(values),
        "p50": float(np.percentile(a, 50)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
    }


async def _measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    data_dir = tempfile.mkdtemp(prefix="tvflux-push-")
    port = _free_port()
    base, ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TVFLUX_")},
        "TVFLUX_DATA_DIR": data_dir,
        "TVFLUX_PORT": str(port),
        "TVFLUX_LOG_LEVEL": "WARNING",
        "TVFLUX_SYNTHETIC_BACKFILL_S": str(args.backfill_s),
    }
    server = subprocess.Popen(
        [TVFLUX, "serve"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(data_dir, "server.log"), "wb"),
    )
    spy = None
    try:
        if args.py_spy:
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "-p",
                    str(server.pid),
                    "-o",
                    args.py_spy,
                    "-r",
                    "200",
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        started = time.perf_counter()
        probe_trade = msgspec.json.encode(
            [{"symbol": PROBE, "price": 1000.0, "size": 1.0, "time": int(time.time() * 1000)}]
        )
        while True:  # the first moment the service takes a trade
            if server.poll() is not None:
                raise SystemExit(f"tvflux serve exited: see {data_dir}/server.log")
            try:
                _http(base, "POST", "/api/admin/trades", probe_trade, timeout=5)
                break
            except OSError:
                await asyncio.sleep(0.05)
        ready_s = time.perf_counter() - started
        prober = Prober(base, ws, args.interval_ms / 1000)
        prober.phase = "startup"
        stop = asyncio.Event()
        task = asyncio.create_task(prober.run(stop))
        await asyncio.sleep(args.phase_s)

        prober.phase = "catchup"
        await asyncio.to_thread(_bulk_history, base, args.catchup_trades)
        await asyncio.to_thread(_http, base, "POST", "/api/downsampling/run", b"")

        prober.phase = "history"
        history_stop = threading.Event()
        threads = [threading.Thread(target=_history_loop, args=(base, history_stop)) for _ in range(2)]
        for t in threads:
            t.start()
        await asyncio.sleep(args.phase_s)
        history_stop.set()
        for t in threads:
            await asyncio.to_thread(t.join)

        prober.phase = "idle"
        await asyncio.sleep(args.phase_s / 2)
        stop.set()
        await task
        results = {phase: _stats(v) for phase, v in prober.samples.items() if v}
        results["_meta"] = {"ready_s": ready_s, "backfill_s": args.backfill_s, "catchup_trades": args.catchup_trades}
        return results
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        if spy is not None:
            spy.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)


def _bulk_history(base: str, trades: int) -> None:
    """``trades`` of BTCUSD spread over the 20 days before the last one, in 10k batches."""
    end = int(time.time() * 1000) - 86_400_000
    start = end - 20 * 86_400_000
    rng = np.random.default_rng(1)
    times = np.sort(rng.integers(start, end, trades))
    price = 50_000 + np.cumsum(rng.normal(0, 5, trades))
    enc = msgspec.msgpack.Encoder()
    for lo in range(0, trades, 10_000):
        batch = [
            {"symbol": "BTCUSD", "price": float(p), "size": 0.1, "time": int(t)}
            for t, p in zip(times[lo : lo + 10_000], price[lo : lo + 10_000])
        ]
        _http(base, "POST", "/api/admin/trades", enc.encode(batch), "application/msgpack")


def _history_loop(base: str, stop: threading.Event) -> None:
    now = int(time.time())
    queries = [
        f"/api/bars?symbol=BTCUSD&resolution=1S&countback=10000&to={now}",
        f"/api/bars?symbol=BTCUSD&resolution=1&countback=10000&to={now}",
        f"/api/bars?symbol=BTCUSD&resolution=1&from={now - 6 * 86_400}&to={now}",
    ]
    i = 0
    while not stop.is_set():
        try:
            _http(base, "GET", queries[i % len(queries)])
        except OSError:
            pass
        i += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.push_latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backfill-s", type=int, default=86_400, help="synthetic history written at start")
    parser.add_argument("--catchup-trades", type=int, default=500_000)
    parser.add_argument("--phase-s", type=float, default=8.0)
    parser.add_argument("--interval-ms", type=float, default=20.0, help="between probe trades")
    parser.add_argument("--py-spy", help="record the server with py-spy into this SVG")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    results = asyncio.run(_measure(args))
    meta = results.pop("_meta")
    print(f"ready to take trades {meta['ready_s']:.1f}s after start (backfill {meta['backfill_s']} s of history)")
    print(f"{'phase':<8} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for phase in ("startup", "catchup", "history", "idle"):
        s = results.get(phase)
        if s:
            print(f"{phase:<8} {s['n']:>5} {s['p50']:>8.1f} {s['p99']:>8.1f} {s['max']:>8.1f}")
    if args.out:
        Path(args.out).write_text(json.dumps({**results, "meta": meta}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
