"""The users' current approach on a real NoSQL store: per-second bars precompiled into
Redis, aggregated in the application at request time.

Layout, the usual Redis time-series idiom: one sorted set per symbol
(``bars1s:<symbol>``), score = the second (epoch s), member = the bar packed as 56
bytes (``time_s`` int64, open, high, low, close, volume float64, trades int64 — little
endian; the time makes members unique). A request fetches the range page by page
(``ZRANGE … BYSCORE LIMIT``, the next page starting after the last second seen, so paging
stays O(log n) per page and client memory stays bounded) and aggregates each page with
numpy — the most favourable application-side aggregation there is, so the comparison is
generous to this approach.

The server is Debian's ``redis-server``, started here on 127.0.0.1 with a scratch
directory and persistence off, and stopped at the end. Loading writes the RESP protocol
directly (built with numpy), so loading tens of millions of bars takes seconds, not the
hours one ``ZADD`` per bar would.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from service.core.models import Bar

BAR_DTYPE = np.dtype(
    [
        ("t", "<i8"),
        ("open", "<f8"),
        ("high", "<f8"),
        ("low", "<f8"),
        ("close", "<f8"),
        ("volume", "<f8"),
        ("trades", "<i8"),
    ]
)
PAGE = 100_000


def key(symbol: str) -> str:
    return f"bars1s:{symbol}"


class RedisServer:
    def __init__(self, *, maxmemory_mb: int | None = None) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.port = _free_port()
        self.maxmemory_mb = maxmemory_mb
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> RedisServer:
        import redis

        self._tmp = tempfile.TemporaryDirectory(prefix="tvflux-redis-")
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self._tmp.name,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--logfile",
            f"{self._tmp.name}/redis.log",
        ]
        if self.maxmemory_mb:
            argv += ["--maxmemory", f"{self.maxmemory_mb}mb"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    client.close()
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer PING")

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=600)

    def info_memory_mb(self) -> float:
        c = self.client()
        try:
            return round(int(c.info("memory")["used_memory"]) / 2**20, 1)
        finally:
            c.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- loading ----------------------------------------------------------------------------


def zadd_resp(redis_key: str, bars: np.ndarray) -> bytes:
    """One ``ZADD key score member …`` command in RESP for ``bars`` (``BAR_DTYPE``), built
    with numpy: scores are fixed-width decimal seconds, members the packed bars."""
    n = int(bars.shape[0])
    k = redis_key.encode()
    head = b"*%d\r\n$4\r\nZADD\r\n$%d\r\n%s\r\n" % (2 + 2 * n, len(k), k)
    secs = bars["t"].astype(np.int64)
    width = max(1, len(str(int(secs.max())))) if n else 1
    if n and int(secs.min()) < 10 ** (width - 1):
        raise ValueError("scores must have the same number of digits")
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = ((secs[:, None] // powers[None, :]) % 10 + 48).astype(np.uint8)
    rec = np.dtype(
        [("h1", f"V{len(b'$%d' % width) + 2}"), ("score", f"V{width}"), ("h2", "V7"), ("member", "V56"), ("crlf", "V2")]
    )
    out = np.zeros(n, dtype=rec)
    out["h1"] = np.void(b"$%d\r\n" % width)
    out["score"] = digits.view(f"V{width}").reshape(n)
    out["h2"] = np.void(b"\r\n$56\r\n")
    out["member"] = np.ascontiguousarray(bars).view("V56").reshape(n)
    out["crlf"] = np.void(b"\r\n")
    return head + out.tobytes()


def load_bars(port: int, symbol: str, chunks: Iterator[np.ndarray], *, batch: int = 20_000) -> int:
    """Send ``chunks`` of per-second bars (``BAR_DTYPE``) as pipelined ZADDs over a raw
    socket, reading the integer replies as they come. Returns how many were added."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    redis_key = key(symbol)
    added = 0
    pending = 0
    buf = b""
    try:
        for chunk in chunks:
            for i in range(0, len(chunk), batch):
                sock.sendall(zadd_resp(redis_key, chunk[i : i + batch]))
                pending += 1
                while pending > 8:  # keep a few commands in flight, read the rest
                    buf, got = _read_replies(sock, buf, pending - 8)
                    added += sum(got)
                    pending -= len(got)
        while pending:
            buf, got = _read_replies(sock, buf, pending)
            added += sum(got)
            pending -= len(got)
    finally:
        sock.close()
    return added


def _read_replies(sock: socket.socket, buf: bytes, at_least: int) -> tuple[bytes, list[int]]:
    got: list[int] = []
    while len(got) < at_least:
        while b"\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            buf += data
        line, buf = buf.split(b"\r\n", 1)
        if line[:1] == b"-":
            raise RuntimeError(f"redis: {line[1:].decode(errors='replace')}")
        got.append(int(line[1:]))
    return buf, got


# --- the request-time path ----------------------------------------------------------------


def fetch_range(client: Any, symbol: str, from_ms: int, to_ms: int) -> Iterator[np.ndarray]:
    """Per-second bars of ``[from_ms, to_ms)`` page by page."""
    lo = -(-from_ms // 1000)  # first whole second at or after from_ms
    hi = (to_ms - 1) // 1000
    redis_key = key(symbol)
    while lo <= hi:
        page = client.zrange(redis_key, lo, hi, byscore=True, offset=0, num=PAGE)
        if not page:
            return
        arr = np.frombuffer(b"".join(page), dtype=BAR_DTYPE)
        yield arr
        if len(page) < PAGE:
            return
        lo = int(arr["t"][-1]) + 1


def aggregate(pages: Iterator[np.ndarray], size_ms: int) -> list[Bar]:
    """OHLCV of ``size_ms`` buckets from per-second bars (ascending by time), in the app."""
    bars: list[Bar] = []
    carry: list[Any] | None = None  # the last bucket of the previous page may continue
    size_s = size_ms // 1000
    for arr in pages:
        if arr.shape[0] == 0:
            continue
        starts = arr["t"] // size_s * size_s
        heads = np.flatnonzero(np.r_[True, starts[1:] != starts[:-1]])
        tails = np.r_[heads[1:], arr.shape[0]] - 1
        highs = np.maximum.reduceat(arr["high"], heads)
        lows = np.minimum.reduceat(arr["low"], heads)
        vols = np.add.reduceat(arr["volume"], heads)
        opens, closes = arr["open"][heads], arr["close"][tails]
        rows = list(
            zip(starts[heads].tolist(), opens.tolist(), highs.tolist(), lows.tolist(), closes.tolist(), vols.tolist())
        )
        if carry is not None:
            if rows[0][0] == carry[0]:
                first = rows[0]
                rows[0] = (
                    carry[0],
                    carry[1],
                    max(carry[2], first[2]),
                    min(carry[3], first[3]),
                    first[4],
                    carry[5] + first[5],
                )
            else:
                bars.append(Bar(carry[0] * 1000, *carry[1:]))
        carry = list(rows[-1])
        bars.extend(Bar(r[0] * 1000, r[1], r[2], r[3], r[4], r[5]) for r in rows[:-1])
    if carry is not None:
        bars.append(Bar(carry[0] * 1000, *carry[1:]))
    return bars


def redis_bars(client: Any, symbol: str, size_ms: int, from_ms: int, to_ms: int) -> list[Bar]:
    return aggregate(fetch_range(client, symbol, from_ms, to_ms), size_ms)
