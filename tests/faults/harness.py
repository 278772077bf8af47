"""What the fault tests share: a results collector (one row per fault, written as JSON for
:mod:`tests.faults.report`), an ingest client that remembers exactly which trades were
acknowledged, a WebSocket subscriber, and a reader of what the store holds."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import ROOT, TVFLUX, ServerProcess

RESULTS = Path(os.environ.get("FAULT_RESULTS") or Path(tempfile.gettempdir()) / "tvflux-fault-results.json")

# The rows of docs/reliability.md, in this order.
FAULTS = [
    "kill9",
    "store_outage",
    "disk_full",
    "fd_exhaustion",
    "clock_step",
    "slow_store_duckdb",
    "hung_influx",
    "sigstop",
    "torn_spool_tail",
    "broker_gone",
]


@dataclass
class Row:
    fault: str
    title: str
    injection: str
    clients: str
    operator: str
    acked: int | None
    stored: int | None
    lost: int | None
    bare_500: int
    recover_s: float | None
    recover_note: str = ""
    measured_utc: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def record(row: Row) -> None:
    """Add or replace this fault's row in the results file (runs of single tests merge)."""
    assert row.fault in FAULTS, row.fault
    rows = load_results()
    rows[row.fault] = asdict(row)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1, sort_keys=True))
    os.replace(tmp, RESULTS)


def load_results(path: Path = RESULTS) -> dict[str, dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def wait_until(pred, timeout_s: float, step_s: float = 0.1, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def call(
    server: ServerProcess, method: str, path: str, body: Any = None, timeout_s: float = 10.0
) -> tuple[int, dict[str, str], Any]:
    """One HTTP request on a new connection: (status, headers, decoded body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout_s)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        try:
            decoded = json.loads(raw)
        except ValueError:
            decoded = raw.decode(errors="replace")
        return resp.status, headers, decoded
    finally:
        conn.close()


def is_error_root(body: Any) -> bool:
    """``{"error": {"code", "message", …}}``: the one error shape."""
    return (
        isinstance(body, dict)
        and isinstance(body.get("error"), dict)
        and isinstance(body["error"].get("code"), str)
        and isinstance(body["error"].get("message"), str)
    )


class Ingest(threading.Thread):
    """POSTs batches of id'd BTCUSD trades (size 1) stamped with this machine's clock and
    remembers exactly which ids were acknowledged. Every answer is classified; a refusal
    must be retryable (Retry-After) and in the error root's shape."""

    def __init__(
        self,
        server: ServerProcess,
        prefix: str,
        batch: int = 100,
        pause_s: float = 0.02,
        timeout_s: float = 5.0,
        symbol: str = "BTCUSD",
    ) -> None:
        super().__init__(daemon=True)
        self.server, self.prefix, self.batch, self.pause_s, self.timeout_s = server, prefix, batch, pause_s, timeout_s
        self.symbol = symbol
        self.stop_event = threading.Event()
        self.acked: list[str] = []
        self.statuses: Counter[Any] = Counter()
        self.bad: list[Any] = []  # answers that are neither an ack nor a clean, retryable refusal
        self.codes: Counter[str] = Counter()
        self.last_ok_at = 0.0
        self.n = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            ids = [f"{self.prefix}{self.n + k}" for k in range(self.batch)]
            self.n += self.batch
            now = int(time.time() * 1000)
            trades = [
                {"symbol": self.symbol, "price": 100.0 + (k % 11), "size": 1.0, "time": now, "id": i}
                for k, i in enumerate(ids)
            ]
            try:
                status, headers, body = call(self.server, "POST", "/api/trades", trades, self.timeout_s)
            except (OSError, http.client.HTTPException) as exc:
                self.statuses[type(exc).__name__] += 1  # no answer: not acknowledged, the client retries later
                time.sleep(0.2)
                continue
            self.statuses[status] += 1
            if status == 200 and body.get("accepted", 0) + body.get("duplicates", 0) == len(trades):
                self.acked.extend(ids)
                self.last_ok_at = time.monotonic()
            elif status in (429, 503, 507) and "retry-after" in headers and is_error_root(body):
                self.codes[f"{status} {body['error']['code']}"] += 1
                time.sleep(0.05)
            else:
                self.bad.append((status, headers, body))
            time.sleep(self.pause_s)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(30)

    def refusals(self) -> str:
        parts = [f"{n} × {code} (Retry-After)" for code, n in sorted(self.codes.items())]
        gone = {k: v for k, v in self.statuses.items() if isinstance(k, str)}
        parts += [f"{n} × no answer ({name})" for name, n in sorted(gone.items())]
        return ", ".join(parts) or "no refusals"

    def bare_500s(self) -> int:
        return self.statuses.get(500, 0)


class Subscriber(threading.Thread):
    """A /ws subscriber of ``symbol`` 1S bars; with ``reconnect`` it reconnects after
    ``give_up_s`` of silence (a client that gave up) and counts those reconnections."""

    def __init__(
        self,
        server: ServerProcess,
        symbol: str = "BTCUSD",
        resolution: str = "1S",
        reconnect: bool = False,
        give_up_s: float = 5.0,
    ) -> None:
        super().__init__(daemon=True)
        self.server, self.symbol, self.resolution = server, symbol, resolution
        self.reconnect, self.give_up_s = reconnect, give_up_s
        self.stop_event = threading.Event()
        self.bars: list[tuple[float, float, dict[str, Any], bool]] = []  # (monotonic, wall, bar, closed)
        self.reconnects = 0
        self.disconnects: list[str] = []
        self.connected = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                with connect(self.server.ws_url + "/ws", open_timeout=10) as ws:
                    ws.send(
                        json.dumps({"op": "subscribe", "id": "s", "symbol": self.symbol, "resolution": self.resolution})
                    )
                    self.connected.set()
                    while not self.stop_event.is_set():
                        try:
                            msg = json.loads(ws.recv(timeout=self.give_up_s))
                        except TimeoutError:
                            if self.reconnect:
                                self.disconnects.append("gave up after silence")
                                break
                            continue
                        if msg.get("type") == "bar":
                            self.bars.append((time.monotonic(), time.time(), msg["bar"], msg["closed"]))
            except (ConnectionClosed, OSError, TimeoutError) as exc:
                self.disconnects.append(type(exc).__name__)
                if not self.reconnect:
                    return
                time.sleep(0.5)
            if self.reconnect and not self.stop_event.is_set():
                self.reconnects += 1

    def stop(self) -> None:
        self.stop_event.set()
        self.join(15)

    def bars_between(self, t0: float, t1: float) -> int:
        return sum(1 for at, *_ in self.bars if t0 <= at <= t1)


def stored_ids(data_dir: str, prefix: str = "") -> list[str]:
    """Ids in the DuckDB file (the server must be stopped: DuckDB lets one process open it)."""
    con = duckdb.connect(str(Path(data_dir) / "tvflux.duckdb"), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT id FROM trades WHERE id LIKE ?", [prefix + "%"]).fetchall()]
    finally:
        con.close()


def loss(acked: list[str], stored: list[str]) -> tuple[int, int, int]:
    """(acknowledged, stored of those, lost); stored twice is a failure of its own."""
    assert len(stored) == len(set(stored)), "a trade was stored twice"
    lost = set(acked) - set(stored)
    return len(acked), len(set(acked) & set(stored)), len(lost)


def start_raw(
    server: ServerProcess,
    preexec_fn=None,
    extra_env: dict[str, str] | None = None,  # type: ignore[no-untyped-def]
    ready_timeout_s: float = 30.0,
) -> float:
    """Start ``tvflux serve`` like :meth:`ServerProcess.start`, with a ``preexec_fn`` and extra
    environment (not ``TVFLUX_*``); returns the seconds until /health/ready said 200."""
    env = {**server.env, **(extra_env or {})}
    log = open(server.log_path, "ab")
    started = time.monotonic()
    server.proc = subprocess.Popen([TVFLUX, "serve"], env=env, cwd=ROOT, stdout=log, stderr=log, preexec_fn=preexec_fn)
    log.close()
    wait_until(lambda: _ready(server), ready_timeout_s, what=f"readiness:\n{server.log()}")
    return time.monotonic() - started


def _ready(server: ServerProcess) -> bool:
    if server.proc is not None and server.proc.poll() is not None:
        raise AssertionError(f"tvflux exited with {server.proc.returncode}:\n{server.log()}")
    try:
        return call(server, "GET", "/health/ready", timeout_s=2)[0] == 200
    except (OSError, http.client.HTTPException):
        return False


def drain_and_stop(server: ServerProcess, timeout_s: float = 30.0) -> None:
    """Wait until the writer has stored everything, then stop cleanly."""
    last: list[Any] = [None]

    def drained() -> bool:
        try:
            _, _, stats = call(server, "GET", "/api/stats", timeout_s=5)
        except (OSError, http.client.HTTPException) as exc:
            last[0] = exc
            return False
        last[0] = stats
        return stats["writer"]["pendingRows"] == 0 and stats["writer"]["spilledRows"] == 0

    try:
        wait_until(drained, timeout_s, what="the writer to drain")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last /api/stats: {last[0]!r}\n{server.log()[-2000:]}") from None
    server.stop(signal.SIGTERM)
