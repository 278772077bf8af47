"""Live frames through a broker, NATS against Redis pub/sub: ``python -m bench.broker``.

One publisher (this process) sends ``--rate`` frames per second of about 150 bytes (a v2
bar frame, as the core's hub makes them) for ``--seconds`` to one subscriber (a child
process), first through ``nats-server``, then through ``redis-server``, each started here
on 127.0.0.1 and stopped at the end. Frames are offered the way the core's hub offers
them: synchronously, a few at a time every millisecond or so, to a queue one task hands to
the broker client —

* NATS: :class:`service.runtime.broker.Publisher`, what the core's bridge uses (``nats-py``
  ``publish`` per frame into the client's buffer; its flusher writes the socket);
* Redis: the same queue, drained into one pipelined batch of ``PUBLISH`` per round
  (``redis.asyncio`` with hiredis; unpipelined, every PUBLISH waits for its reply).

Printed per broker: frames sent and received, publish→receive latency p50/p99/max (the
publisher stamps ``time.monotonic_ns()`` into the frame when it offers it; the subscriber
reads the same clock), the publisher's CPU time per frame (``time.process_time`` of this
process over the run, which does nothing else), the cost of the synchronous ``send``
alone, and the subscriber's CPU time per frame (the receiving end's cost: an edge's).
Publisher, subscriber and server share the machine's cores: on a small machine the
latency tail is partly their contention.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SUBJECT = "tvflux.bar.BTCUSD.1"
# a v2 bar frame as the hub encodes it; a stamp and its first 125 bytes make ~150
_FRAME = (
    b'{"type":"bar","topic":"BTCUSD@1","bar":{"time":1700000000000,"open":64123.5,"high":64188.25,'
    b'"low":64101.0,"close":64150.75,"volume":12.345678},"closed":false}'
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stamped(seq: int) -> bytes:
    """``<monotonic ns>|<seq>|`` and the frame: about 150 bytes."""
    return b"%d|%d|%s" % (time.monotonic_ns(), seq, _FRAME[:125])


# --- servers ---------------------------------------------------------------------------------


class NatsServer:
    def __init__(self, work_dir: str) -> None:
        binary = os.environ.get("TVFLUX_NATS_SERVER") or shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not os.access(binary, os.X_OK):
            raise RuntimeError("nats-server is not installed (apt-get install nats-server, or set TVFLUX_NATS_SERVER)")
        self.port = _free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        log = str(Path(work_dir) / "nats-server.log")
        self.proc = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(self.port), "-l", log],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                if s.recv(4) == b"INFO":
                    return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- subscriber (a child process) ----------------------------------------------------------------


async def _subscribe(broker: str, url: str, expect: int, timeout_s: float, out: str) -> None:
    latencies = np.zeros(expect, dtype=np.int64)
    got = 0
    cpu0 = 0.0
    done = asyncio.Event()

    def receive(data: bytes) -> None:
        nonlocal got
        now = time.monotonic_ns()
        if got < expect:
            latencies[got] = now - int(data[: data.index(b"|")])
        got += 1
        if got >= expect:
            done.set()

    if broker == "nats":
        import nats

        nc = await nats.connect(url)

        async def cb(msg: Any) -> None:
            receive(msg.data)

        await nc.subscribe(SUBJECT, cb=cb, pending_msgs_limit=-1, pending_bytes_limit=-1)
        await nc.flush()
        cpu0 = time.process_time()
        print("ready", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout_s)
        await nc.close()
    else:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url)
        pubsub = client.pubsub()
        await pubsub.subscribe(SUBJECT)
        await pubsub.get_message(timeout=5)  # the subscribe confirmation
        cpu0 = time.process_time()
        print("ready", flush=True)

        async def listen() -> None:
            async for msg in pubsub.listen():
                if msg["type"] == "message":
                    receive(msg["data"])
                    if done.is_set():
                        return

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listen(), timeout_s)
        await pubsub.aclose()
        await client.aclose()
    cpu_s = time.process_time() - cpu0
    np.savez(out, latencies=latencies[: min(got, expect)], cpu_s=np.array(cpu_s))


# --- publishers ----------------------------------------------------------------------------------


class RedisPublisher:
    """:class:`service.runtime.broker.Publisher`'s shape for Redis: a synchronous ``send``
    into a queue, one task draining it as pipelined PUBLISH batches."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.published = 0
        self.errors = 0
        self._queue: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def send(self, subject: str, frame: bytes) -> int:
        self._queue.append((subject, frame))
        if not self._wake.is_set():
            self._wake.set()
        return 0

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                pipe = self.client.pipeline(transaction=False)
                n = 0
                while self._queue and n < 1000:
                    subject, frame = self._queue.popleft()
                    pipe.publish(subject, frame)
                    n += 1
                try:
                    await pipe.execute()
                except Exception:
                    self.errors += n
                else:
                    self.published += n

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _paced(send: Callable[[str, bytes], int], rate: int, seconds: float) -> tuple[int, float]:
    """Offer ``rate`` frames a second for ``seconds``, a few per loop turn (as pushes
    come); returns (frames, seconds spent inside ``send``)."""
    total = int(rate * seconds)
    sent = 0
    in_send = 0.0
    t0 = time.monotonic()
    while sent < total:
        due = min(total, int((time.monotonic() - t0) * rate) + 1)
        if due > sent:
            frames = [_stamped(i) for i in range(sent, due)]
            start = time.perf_counter()
            for frame in frames:
                send(SUBJECT, frame)
            in_send += time.perf_counter() - start
            sent = due
        await asyncio.sleep(0.001)
    return sent, in_send


async def _publish(broker: str, url: str, rate: int, seconds: float) -> dict[str, float]:
    if broker == "nats":
        import nats

        from service.runtime.broker import Publisher

        nc = await nats.connect(url)
        pub: Any = Publisher()
        pub.nc, pub.connected = nc, True
    else:
        import redis.asyncio as aioredis

        nc = aioredis.Redis.from_url(url)
        await nc.ping()
        pub = RedisPublisher(nc)
    pub.start()
    await asyncio.sleep(0.2)
    cpu0 = time.process_time()
    sent, in_send = await _paced(pub.send, rate, seconds)
    while pub.published + pub.errors < sent:  # until the last frame left the queue
        await asyncio.sleep(0.001)
    if broker == "nats":
        await nc.flush()
    cpu = time.process_time() - cpu0
    await pub.close()
    await (nc.close() if broker == "nats" else nc.aclose())
    return {"sent": sent, "errors": pub.errors, "cpu_us": cpu / sent * 1e6, "send_us": in_send / sent * 1e6}


def _run_one(broker: str, url: str, rate: int, seconds: float, work_dir: str) -> dict[str, Any]:
    out = str(Path(work_dir) / f"{broker}-latency.npz")
    expect = int(rate * seconds)
    sub = subprocess.Popen(
        [sys.executable, "-m", "bench.broker", "--subscriber", broker, url, str(expect), str(seconds + 15), out],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert sub.stdout is not None
    if sub.stdout.readline().strip() != b"ready":
        sub.kill()
        raise RuntimeError(f"the {broker} subscriber did not start")
    stats = _run_loop(_publish(broker, url, rate, seconds))
    sub.wait(seconds + 30)
    with np.load(out) as saved:
        latencies_us = saved["latencies"] / 1000
        sub_cpu_s = float(saved["cpu_s"])
    p50, p99 = np.percentile(latencies_us, [50, 99]) if latencies_us.size else (float("nan"),) * 2
    return {
        **stats,
        "received": int(latencies_us.size),
        "p50_us": float(p50),
        "p99_us": float(p99),
        "max_us": float(latencies_us.max()) if latencies_us.size else float("nan"),
        "sub_cpu_us": sub_cpu_s / max(latencies_us.size, 1) * 1e6,
    }


def _run_loop(coro: Any) -> Any:
    """asyncio.run, on uvloop when it is installed (as ``tvflux serve`` runs)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.broker", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=20_000, help="frames per second (default 20000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per broker (default 10)")
    parser.add_argument("--only", choices=("nats", "redis"), help="one broker only")
    parser.add_argument("--subscriber", nargs=5, help=argparse.SUPPRESS)  # the child's role
    args = parser.parse_args(argv)
    if args.subscriber:
        broker, url, expect, timeout_s, out = args.subscriber
        _run_loop(_subscribe(broker, url, int(expect), float(timeout_s), out))
        return 0

    from bench.redis_bars import RedisServer

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="tvflux-broker-bench-") as work_dir:
        for broker in ("nats", "redis"):
            if args.only and broker != args.only:
                continue
            if broker == "nats":
                server: Any = NatsServer(work_dir)
                url = server.url
            else:
                server = RedisServer().start()
                url = f"redis://127.0.0.1:{server.port}"
            try:
                results[broker] = _run_one(broker, url, args.rate, args.seconds, work_dir)
            finally:
                server.stop()
    print(f"{args.rate} frames/s of ~150 bytes for {args.seconds:g} s, 1 subscriber, 127.0.0.1")
    print(
        f"{'broker':<7}{'sent':>9}{'received':>10}{'p50 µs':>9}{'p99 µs':>9}{'max µs':>9}"
        f"{'pub CPU µs/frame':>18}{'send() µs':>11}{'sub CPU µs/frame':>18}"
    )
    for broker, r in results.items():
        print(
            f"{broker:<7}{r['sent']:>9}{r['received']:>10}{r['p50_us']:>9.0f}{r['p99_us']:>9.0f}{r['max_us']:>9.0f}"
            f"{r['cpu_us']:>18.2f}{r['send_us']:>11.2f}{r['sub_cpu_us']:>18.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
