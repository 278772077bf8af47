"""What the fault tests share: a results collector (one row per fault, written as JSON for
:mod:`tests.faults.report`), an ingest client that remembers exactly which trades were
acknowledged, a WebSocket subscriber (protocol v1 or v2), a reader of what the store holds,
and a look at which process holds which connection (``/proc``)."""

from __future__ import annotations

import http.client
import json
import os
import re
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
    "edge_killed",
    "broker_gone",
]

# a row's text is the same on every machine: no absolute temporary path in it (see `shown`)
_TEMP_ROOT = str(Path(tempfile.gettempdir()).resolve()) + "/"


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


def shown(text: str, **places: str | Path) -> str:
    """``text`` with each place (a path or URL of this run) written as ``$NAME``, the
    longest first (so ``TVFLUX_DATA_DIR=tmp/d`` wins over ``TMP=tmp``): the row reads the
    same on every run and machine."""
    for name, place in sorted(places.items(), key=lambda item: -len(str(item[1]))):
        text = text.replace(str(place), f"${name}")
    return text


def record(row: Row) -> None:
    """Add or replace this fault's row in the results file (runs of single tests merge)."""
    assert row.fault in FAULTS, row.fault
    for name in ("injection", "clients", "operator", "recover_note"):
        text = getattr(row, name)
        assert _TEMP_ROOT not in text and tempfile.gettempdir() + "/" not in text, (
            f"{row.fault}: an absolute temporary path in {name!r} (write it with shown()): {text}"
        )
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
        return exchange(conn, method, path, body)
    finally:
        conn.close()


def exchange(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None) -> tuple[int, dict, Any]:
    """One request on ``conn`` (new or kept alive): (status, headers, decoded body)."""
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
    must be retryable (Retry-After) and in the error root's shape.

    By default a batch without an answer (or refused) is given up: it was never
    acknowledged. With ``retry`` the client does what a careful one does: it sends the very
    same batch (same ids, same times) again until it is acknowledged; ``duplicates`` in the
    answer then say that an earlier try had reached the core after all.

    Each request has a connection of its own, unless ``keep_alive``: then one connection
    carries them all (``local_port`` says which), and a new one is made after an error."""

    MAX_TRIES_AFTER_STOP = 25

    def __init__(
        self,
        server: ServerProcess,
        prefix: str,
        batch: int = 100,
        pause_s: float = 0.02,
        timeout_s: float = 5.0,
        symbol: str = "BTCUSD",
        retry: bool = False,
        keep_alive: bool = False,
    ) -> None:
        super().__init__(daemon=True)
        self.server, self.prefix, self.batch, self.pause_s, self.timeout_s = server, prefix, batch, pause_s, timeout_s
        self.symbol = symbol
        self.retry, self.keep_alive = retry, keep_alive
        self.conn: http.client.HTTPConnection | None = None
        self.local_port: int | None = None  # of the kept-alive connection
        self.stop_event = threading.Event()
        self.acked: list[str] = []
        self.statuses: Counter[Any] = Counter()
        self.bad: list[Any] = []  # answers that are neither an ack nor a clean, retryable refusal
        self.codes: Counter[str] = Counter()
        self.last_ok_at = 0.0
        self.n = 0
        self.retried = 0  # batches sent more than once (retry=True)
        self.retried_acked = 0  # ...of which acknowledged in the end
        self.retried_duplicates = 0  # trades a retry was told are duplicates (an earlier try was stored)
        self.abandoned = 0  # batches still unanswered when stopped (never acknowledged)

    def _next_batch(self) -> tuple[list[str], list[dict[str, Any]]]:
        ids = [f"{self.prefix}{self.n + k}" for k in range(self.batch)]
        self.n += self.batch
        now = int(time.time() * 1000)
        trades = [
            {"symbol": self.symbol, "price": 100.0 + (k % 11), "size": 1.0, "time": now, "id": i}
            for k, i in enumerate(ids)
        ]
        return ids, trades

    def _post(self, trades: list[dict[str, Any]]) -> tuple[int, dict, Any]:
        if not self.keep_alive:
            return call(self.server, "POST", "/api/trades", trades, self.timeout_s)
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=self.timeout_s)
            self.conn.connect()
            self.local_port = self.conn.sock.getsockname()[1]
        try:
            return exchange(self.conn, "POST", "/api/trades", trades)
        except BaseException:
            self.conn.close()
            self.conn = None
            raise

    def run(self) -> None:
        try:
            self._run()
        finally:
            if self.conn is not None:
                self.conn.close()

    def _run(self) -> None:
        pending: tuple[list[str], list[dict[str, Any]]] | None = None  # a batch to send again
        tries = 0
        while True:
            if pending is None:
                if self.stop_event.is_set():
                    return
                ids, trades = self._next_batch()
                tries = 0
            elif self.stop_event.is_set() and tries >= self.MAX_TRIES_AFTER_STOP:
                self.abandoned += 1
                return
            else:
                ids, trades = pending
                if tries == 1:
                    self.retried += 1
            pending = None
            tries += 1
            try:
                status, headers, body = self._post(trades)
            except (OSError, http.client.HTTPException) as exc:
                self.statuses[type(exc).__name__] += 1  # no answer: not acknowledged, the client retries later
                if self.retry:
                    pending = (ids, trades)
                time.sleep(0.2)
                continue
            self.statuses[status] += 1
            if status == 200 and body.get("accepted", 0) + body.get("duplicates", 0) == len(trades):
                self.acked.extend(ids)
                self.last_ok_at = time.monotonic()
                if tries > 1:
                    self.retried_acked += 1
                    self.retried_duplicates += body.get("duplicates", 0)
            elif status in (429, 503, 507) and "retry-after" in headers and is_error_root(body):
                self.codes[f"{status} {body['error']['code']}"] += 1
                if self.retry:
                    pending = (ids, trades)
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
    """A /ws subscriber of ``symbol`` 1S bars (``version`` 2: ``/ws?v=2``, the topic protocol
    the datafeed speaks); with ``reconnect`` it reconnects to the same URL after ``give_up_s``
    of silence (a client that gave up) or a dropped connection, subscribes again, and counts
    those reconnections. Messages other than bars (v2: ``subscribed``, ``status``, ``reset``)
    are kept in ``events``; each connection's start and local port in ``sessions``."""

    def __init__(
        self,
        server: ServerProcess,
        symbol: str = "BTCUSD",
        resolution: str = "1S",
        reconnect: bool = False,
        give_up_s: float = 5.0,
        version: int = 1,
    ) -> None:
        super().__init__(daemon=True)
        self.server, self.symbol, self.resolution = server, symbol, resolution
        self.reconnect, self.give_up_s, self.version = reconnect, give_up_s, version
        self.stop_event = threading.Event()
        self.bars: list[tuple[float, float, dict[str, Any], bool]] = []  # (monotonic, wall, bar, closed)
        self.events: list[tuple[float, dict[str, Any]]] = []  # (monotonic, message) of every other message
        self.timeline: list[dict[str, Any]] = []  # every message, bars too, in the order they came
        self.sessions: list[tuple[float, int]] = []  # (monotonic when subscribed, local port) per connection
        self.dropped_at: list[float] = []  # monotonic, each time a connection ended or could not be made
        self.reconnects = 0
        self.disconnects: list[str] = []
        self.connected = threading.Event()

    def run(self) -> None:
        path = "/ws?v=2" if self.version == 2 else "/ws"
        while not self.stop_event.is_set():
            try:
                with connect(self.server.ws_url + path, open_timeout=10) as ws:
                    ws.send(
                        json.dumps({"op": "subscribe", "id": "s", "symbol": self.symbol, "resolution": self.resolution})
                    )
                    self.sessions.append((time.monotonic(), ws.socket.getsockname()[1]))
                    self.connected.set()
                    heard = time.monotonic()
                    while not self.stop_event.is_set():
                        try:  # short waits, so that stop() is prompt
                            msg = json.loads(ws.recv(timeout=min(1.0, self.give_up_s)))
                        except TimeoutError:
                            if self.reconnect and time.monotonic() - heard >= self.give_up_s:
                                self.disconnects.append("gave up after silence")
                                self.dropped_at.append(time.monotonic())
                                break
                            continue
                        heard = time.monotonic()
                        self.timeline.append(msg)
                        if msg.get("type") == "bar":
                            self.bars.append((time.monotonic(), time.time(), msg["bar"], msg["closed"]))
                        else:
                            self.events.append((time.monotonic(), msg))
            except (ConnectionClosed, OSError, TimeoutError) as exc:
                self.disconnects.append(type(exc).__name__)
                self.dropped_at.append(time.monotonic())
                if not self.reconnect:
                    return
                time.sleep(0.5)
            if self.reconnect and not self.stop_event.is_set():
                self.reconnects += 1

    def first(self, after: float, kind: str, **fields: Any) -> float | None:
        """When the first ``kind`` message (``bar`` or another type, with these fields)
        came after ``after`` (monotonic), or ``None``."""
        if kind == "bar":
            return next((at for at, *_ in self.bars if at > after), None)
        for at, msg in self.events:
            if at > after and msg.get("type") == kind and all(msg.get(k) == v for k, v in fields.items()):
                return at
        return None

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
    command: list[str] | None = None,
) -> float:
    """Start ``tvflux serve`` (or ``tvflux *command``, e.g. ``edge --core …``) like
    :meth:`ServerProcess.start`, with a ``preexec_fn`` and extra environment (not
    ``TVFLUX_*``); returns the seconds until /health/ready said 200."""
    env = {**server.env, **(extra_env or {})}
    log = open(server.log_path, "ab")
    started = time.monotonic()
    args = [TVFLUX, *(command or ["serve"])]
    server.proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=log, preexec_fn=preexec_fn)
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


# --- processes and their connections (Linux /proc) --------------------------------------------


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started (``tvflux serve --workers``: its edges)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if m := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(int(m.group(1)))
    return inodes


def _tcp_sockets(port: int, state: str) -> dict[int, int]:
    """inode → remote port of the TCP sockets on local ``port`` in ``state`` (hex, as in
    /proc/net/tcp: 01 established, 0A listening)."""
    by_inode: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            cols = line.split()
            local, remote, inode = cols[1], cols[2], int(cols[9])
            if cols[3] == state and int(local.rsplit(":", 1)[1], 16) == port:
                by_inode[inode] = int(remote.rsplit(":", 1)[1], 16)
    return by_inode


def peer_ports(pids: list[int], port: int) -> dict[int, set[int]]:
    """For each pid: the client ports of the established TCP connections it holds on its
    local ``port`` (so which process serves which client, by the client's local port). A
    connection the process has not accepted yet is in no process's list."""
    by_inode = _tcp_sockets(port, "01")
    return {pid: {by_inode[i] for i in _socket_inodes(pid) if i in by_inode} for pid in pids}


def listening(pids: list[int], port: int) -> list[int]:
    """Those of ``pids`` that listen on ``port`` (with ``SO_REUSEPORT`` the kernel spreads
    new connections over exactly these)."""
    listeners = _tcp_sockets(port, "0A")
    return [pid for pid in pids if _socket_inodes(pid) & listeners.keys()]
