"""The fault matrix: each test injects one fault for real on this machine (a full tmpfs, a
low file-descriptor limit, libfaketime moving the wall clock, history reads kept busy with
real DuckDB work, SIGSTOP of influxd or of tvflux, a torn spool record, kill -9 of the service or of one of its edge processes, an
injected store outage, the NATS broker stopped), then checks what clients and the operator
saw and that every acknowledged trade is stored. Each records its row
(measured) for ``python -m tests.faults.report``, which writes docs/reliability.md.

Loopback only, bounded in time, and everything started is stopped by the test itself."""

from __future__ import annotations

import errno
import http.client
import json
import os
import re
import resource
import signal
import socket
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest
from websockets.sync.client import connect

from service.ops.workers import EDGE_QUICK_EXIT_S
from service.runtime.spool import _HEADER, _MAGIC, encode_batches
from tests.conftest import ServerProcess
from tests.faults.harness import (
    Ingest,
    Row,
    Subscriber,
    call,
    child_pids,
    drain_and_stop,
    is_error_root,
    listening,
    loss,
    peer_ports,
    record,
    shown,
    start_raw,
    stored_ids,
    wait_until,
)

QUIET = {
    "TVFLUX_SYNTHETIC_RATE": "0",
    "TVFLUX_FLUSH_INTERVAL_MS": "100",
    "TVFLUX_DOWNSAMPLE_INTERVAL_MS": "500",
    "TVFLUX_GRACE_MS": "1000",
    "TVFLUX_LOG_LEVEL": "INFO",
}


def make_server(data_dir: str | Path, **env: str) -> ServerProcess:
    os.makedirs(data_dir, exist_ok=True)
    return ServerProcess(str(data_dir), {**QUIET, **env})


def log_line(server: ServerProcess, needle: str) -> str:
    """The newest log line containing ``needle``, without its timestamp (what the operator reads)."""
    lines = [line for line in server.log_path.read_text(errors="replace").splitlines() if needle in line]
    assert lines, f"no log line with {needle!r}:\n{server.log()}"
    return lines[-1].split(" ", 2)[-1]


@pytest.fixture
def servers():
    started: list[ServerProcess] = []
    yield started
    for s in started:
        if s.proc is not None:
            try:
                s.proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            s.stop(signal.SIGKILL)


def readiness(server: ServerProcess) -> tuple[int, list[str]]:
    status, _, body = call(server, "GET", "/health/ready")
    return status, body.get("reasons", []) if isinstance(body, dict) else [str(body)]


# --- 1. kill -9 and 2. a store outage (the existing durability drills, measured here) ------


def test_kill_9(tmp_path, servers):
    server = make_server(tmp_path, TVFLUX_SPOOL_FSYNC_INTERVAL_MS="1000")
    servers.append(server)
    server.start()
    ingest = Ingest(server, "k9-", pause_s=0.0)
    ingest.start()
    wait_until(lambda: len(ingest.acked) >= 2000, 20, what="acks")
    server.stop(signal.SIGKILL)
    ingest.stop()
    recover_s = start_raw(server)
    replayed = log_line(server, "replaying")
    drain_and_stop(server)
    acked, stored, lost = loss(ingest.acked, stored_ids(server.data_dir, "k9-"))
    assert lost == 0 and ingest.bare_500s() == 0
    record(
        Row(
            "kill9",
            "kill -9 under ingest",
            "SIGKILL to tvflux while a client posts id'd trades",
            "the connection drops; requests without an answer were never acknowledged",
            f"log at start: {replayed}",
            acked,
            stored,
            lost,
            ingest.bare_500s(),
            round(recover_s, 1),
            "restart until ready (spool replayed)",
        )
    )


def test_store_outage(tmp_path, servers):
    fault = tmp_path / "store-down"
    server = make_server(tmp_path / "d", TVFLUX_FAULT_STORE_DOWN_FILE=str(fault), TVFLUX_WRITER_MAX_PENDING_ROWS="500")
    servers.append(server)
    server.start()
    ingest = Ingest(server, "so-")
    ingest.start()
    wait_until(lambda: len(ingest.acked) >= 500, 20, what="acks")
    fault.touch()
    time.sleep(2.0)
    status, reasons = readiness(server)
    assert status == 503 and reasons
    fault.unlink()
    back = time.monotonic()
    wait_until(lambda: readiness(server)[0] == 200, 30, what="ready again")
    recover_s = time.monotonic() - back
    ingest.stop()
    drain_and_stop(server)
    acked, stored, lost = loss(ingest.acked, stored_ids(server.data_dir, "so-"))
    assert lost == 0 and ingest.bare_500s() == 0 and not ingest.bad
    record(
        Row(
            "store_outage",
            "store outage",
            "every store write fails while a file exists (TVFLUX_FAULT_STORE_DOWN_FILE)",
            f"ingest kept answering 200 ({ingest.refusals()}); batches beyond memory spill to the spool",
            "/health/ready 503: " + shown("; ".join(reasons), TVFLUX_DATA_DIR=tmp_path / "d", TMP=tmp_path),
            acked,
            stored,
            lost,
            ingest.bare_500s(),
            round(recover_s, 1),
            "store back until ready (spool drained)",
        )
    )


# --- 3. the data disk full ------------------------------------------------------------------


def fill(directory: Path) -> Path:
    """Write a ballast file until the disk says ENOSPC."""
    ballast = directory / "ballast"
    chunk = b"\0" * (256 * 1024)
    with open(ballast, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    for small in (4096, 512):
        try:
            with open(ballast, "ab", buffering=0) as f:
                while True:
                    f.write(b"\0" * small)
        except OSError:
            pass
    return ballast


def test_disk_full(tmpfs, servers):
    server = make_server(tmpfs)
    server.log_path = tmpfs.parent / "server.log"  # not on the full disk
    servers.append(server)
    server.start()
    sub = Subscriber(server)
    sub.start()
    sub.connected.wait(10)
    ingest = Ingest(server, "df-", batch=200)
    ingest.start()
    wait_until(lambda: len(ingest.acked) >= 1000, 20, what="acks before the disk fills")
    ballast = fill(tmpfs)
    wait_until(lambda: ingest.codes.get("507 disk_full", 0) >= 5, 20, what="507 answers on a full disk")
    status, reasons = wait_until(
        lambda: (r := readiness(server))[0] == 503 and any(x.startswith("disk full at") for x in r[1]) and r,
        10,
        what="disk full reason",
    )
    with connect(server.ws_url + "/ws", open_timeout=5) as ws:  # the service still takes new subscribers
        ws.send(json.dumps({"op": "ping"}))
        assert json.loads(ws.recv(timeout=5))["type"] == "pong"
    bars_before = len(sub.bars)
    assert bars_before > 0
    ballast.unlink()
    freed_at = time.monotonic()
    acked_at_free = len(ingest.acked)
    wait_until(lambda: len(ingest.acked) > acked_at_free + 1000, 30, what="acks once space is back")
    wait_until(lambda: readiness(server)[0] == 200, 30, what="ready once space is back")
    recover_s = time.monotonic() - freed_at
    wait_until(lambda: len(sub.bars) > bars_before, 10, what="bars after recovery")
    ingest.stop()
    assert ingest.bare_500s() == 0 and not ingest.bad, ingest.bad[:3]
    assert not sub.disconnects, sub.disconnects
    # everything acknowledged is stored, also through a crash right after the fault
    server.stop(signal.SIGKILL)
    start_raw(server)
    drain_and_stop(server)
    acked, stored, lost = loss(ingest.acked, stored_ids(server.data_dir, "df-"))
    assert lost == 0
    disk = next(r for r in reasons if r.startswith("disk full at"))
    record(
        Row(
            "disk_full",
            "data disk full",
            "a 24 MiB tmpfs as TVFLUX_DATA_DIR, filled by a ballast file under ingest, then the ballast removed",
            f"{ingest.refusals()}; never a bare 500; the subscriber stayed connected "
            f"({len(sub.bars)} bar messages) and new subscribers were taken",
            "/health/ready 503: " + disk.replace(str(tmpfs), "$TVFLUX_DATA_DIR"),
            acked,
            stored,
            lost,
            ingest.bare_500s(),
            round(recover_s, 1),
            "space freed until ingest acks and /health/ready is 200 (then kill -9, restart: all stored)",
        )
    )


# --- 4. out of file descriptors ------------------------------------------------------------


def test_out_of_file_descriptors(tmp_path, servers):
    limit = 160

    def low_nofile() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    server = make_server(tmp_path, TVFLUX_MAX_CONNECTIONS_PER_CLIENT="10000")
    servers.append(server)
    start_raw(server, preexec_fn=low_nofile)
    sub = Subscriber(server)
    sub.start()
    sub.connected.wait(10)
    with connect(server.ws_url + "/ws/ingest", open_timeout=5) as ingest_ws:
        hogs: list[socket.socket] = []
        refused = 0
        try:
            for _ in range(limit + 60):  # more connections than the process has descriptors
                s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                s.sendall(
                    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                )
                hogs.append(s)
            time.sleep(1.0)
            # a new client now: refused or closed, at once, not left hanging
            started = time.monotonic()
            outcome = "answered"
            try:
                status, headers, body = call(server, "GET", "/api/symbols", timeout_s=5)
                outcome = f"HTTP {status}"
            except (ConnectionError, OSError) as exc:
                outcome = type(exc).__name__
                refused += 1
            new_client_s = time.monotonic() - started
            # the existing ingest connection and subscriber keep working
            acked = []
            for n in range(5):
                now = int(time.time() * 1000)
                frame = [
                    {"symbol": "BTCUSD", "price": 100.0 + n, "size": 1.0, "time": now, "id": f"fd-{n}-{k}"}
                    for k in range(50)
                ]
                ingest_ws.send(json.dumps(frame))
                reply = json.loads(ingest_ws.recv(timeout=10))
                assert reply["type"] == "ack", reply
                acked += [t["id"] for t in frame]
            bars_at = len(sub.bars)
            wait_until(lambda: len(sub.bars) > bars_at, 10, what="bars while out of descriptors")
            # clients leave until the process is between 80 and 90 % of its limit: it takes
            # requests again and, still short of descriptors, says so in /health/ready
            while hogs and len(os.listdir(f"/proc/{server.proc.pid}/fd")) > 0.85 * limit:
                hogs.pop().close()
                time.sleep(0.05)
            ready_status, _, ready = call(server, "GET", "/health/ready")
            fd_reasons = [r for r in ready.get("reasons", []) if r.startswith("file descriptors:")]
            assert ready_status == 503 and fd_reasons, ready
        finally:
            for s in hogs:
                s.close()
        left_at = time.monotonic()
        wait_until(lambda: _answers(server), 30, what="new connections once clients left")
        recover_s = time.monotonic() - left_at
    # the operator heard of it while it lasted (the event loop refuses silently), and that it passed
    warned = log_line(server, "file descriptors:")
    assert "RLIMIT_NOFILE" in warned and f"of {limit} in use" in warned, warned
    wait_until(lambda: "enough again" in server.log(), 10, what="the all-clear in the log")
    sub.stop()
    assert not sub.disconnects, sub.disconnects
    assert server.proc.poll() is None
    drain_and_stop(server)
    n_acked, stored, lost = loss(acked, stored_ids(server.data_dir, "fd-"))
    assert lost == 0
    assert new_client_s < 6, "a new client hung instead of being refused"
    record(
        Row(
            "fd_exhaustion",
            "out of file descriptors",
            f"RLIMIT_NOFILE={limit} (preexec_fn) and {limit + 60} client connections held open",
            f"a new client: {outcome} after {new_client_s:.1f}s; the open subscriber and /ws/ingest "
            "connection kept working",
            f"log: {warned}; then 'enough again' once clients left; /health/ready {ready_status} at "
            f"{fd_reasons[0].split(';')[0].removeprefix('file descriptors: ')} (process_open_fds / "
            "process_max_fds in /metrics)",
            n_acked,
            stored,
            lost,
            0,
            round(recover_s, 1),
            "clients closed until a new request is answered",
        )
    )


def _answers(server: ServerProcess) -> bool:
    try:
        return call(server, "GET", "/health/live", timeout_s=2)[0] == 200
    except (OSError, ConnectionError):
        return False


# --- 5. a torn write at the spool's tail ----------------------------------------------------


def test_torn_spool_tail(tmp_path, servers):
    server = make_server(
        tmp_path, TVFLUX_SPOOL_FSYNC_INTERVAL_MS="0", TVFLUX_FLUSH_INTERVAL_MS="60000", TVFLUX_FLUSH_ROWS="1000000"
    )  # keep everything in the spool until the crash
    servers.append(server)
    server.start()
    ingest = Ingest(server, "tt-")
    ingest.start()
    wait_until(lambda: len(ingest.acked) >= 1000, 20, what="acks")
    ingest.stop()
    server.stop(signal.SIGKILL)  # a crash...
    segments = sorted((tmp_path / "spool").glob("*.seg"), key=lambda p: int(p.stem))
    tail = max(segments, key=lambda p: p.stat().st_size)
    # ...in the middle of writing one more record (never acknowledged): its first half is on disk
    import numpy as np

    from service.core.models import TradeColumns

    batch = TradeColumns(
        "BTCUSD",
        np.arange(100, dtype=np.int64) + time.time_ns(),
        np.full(100, 1.0),
        np.full(100, 1.0),
        [f"torn-{k}" for k in range(100)],
    )
    payload = encode_batches([batch])
    record_bytes = _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload), 10**9) + payload
    torn = len(record_bytes) // 2
    with open(tail, "ab") as f:
        f.write(record_bytes[:torn])
    recover_s = start_raw(server)
    cut = log_line(server, "torn record")
    assert f"cut {torn} bytes" in cut
    drain_and_stop(server)
    acked, stored, lost = loss(ingest.acked, stored_ids(server.data_dir, "tt-"))
    assert lost == 0 and not stored_ids(server.data_dir, "torn-")
    record(
        Row(
            "torn_spool_tail",
            "torn write at the spool's tail",
            "kill -9, then half of one more record "
            f"({torn} of {len(record_bytes)} bytes) appended to the spool's last segment, as after a power loss",
            "nothing: that record was never acknowledged; the restarted service answers as before",
            "log at start: " + cut.replace(str(tmp_path), "$TVFLUX_DATA_DIR"),
            acked,
            stored,
            lost,
            0,
            round(recover_s, 1),
            "restart until ready (torn tail cut, spool replayed)",
        )
    )


# --- 6. the process paused (SIGSTOP 30 s, SIGCONT) --------------------------------------------


def heal(server: ServerProcess, symbol: str, from_s: int) -> float:
    _, _, body = call(
        server, "GET", f"/api/bars?symbol={symbol}&resolution=1D&from={from_s - 86400}&to={from_s + 86400}"
    )
    return sum(b["volume"] for b in body["bars"])


def test_sigstop(tmp_path, servers):
    server = make_server(tmp_path)
    servers.append(server)
    server.start()
    started_s = int(time.time())
    sub = Subscriber(server, reconnect=True, give_up_s=5.0)
    sub.start()
    sub.connected.wait(10)
    ingest = Ingest(server, "ss-", timeout_s=5.0)
    ingest.start()
    wait_until(lambda: len(ingest.acked) >= 1000, 20, what="acks before the pause")
    server.proc.send_signal(signal.SIGSTOP)
    time.sleep(30)
    server.proc.send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    acked_at = len(ingest.acked)
    wait_until(lambda: len(ingest.acked) > acked_at + 500, 30, what="acks after the pause")
    reconnects = sub.reconnects
    wait_until(
        lambda: sub.reconnects >= 1 and len(sub.bars) and sub.bars[-1][0] > resumed,
        30,
        what="the subscriber reconnected and receiving",
    )
    recover_s = time.monotonic() - resumed
    ingest.stop()
    sub.stop()
    assert ingest.bare_500s() == 0 and not ingest.bad
    # a client that gave up heals from history: it holds every stored trade, acknowledged or not
    time.sleep(0.5)
    history_volume = heal(server, "BTCUSD", started_s)
    drain_and_stop(server)
    ids = stored_ids(server.data_dir, "ss-")
    acked, stored, lost = loss(ingest.acked, ids)
    assert lost == 0 and history_volume == pytest.approx(len(ids))
    record(
        Row(
            "sigstop",
            "process paused 30 s",
            "SIGSTOP to tvflux for 30 s under ingest and a subscriber, then SIGCONT",
            f"ingest: {ingest.refusals()} during the pause, acks again after; the subscriber gave up after 5 s "
            f"of silence, reconnected ({max(reconnects, sub.reconnects)}×) and healed from history "
            f"(history volume = {history_volume:.0f} = trades stored)",
            "nothing to see while paused; /health/ready 200 after SIGCONT",
            acked,
            stored,
            lost,
            ingest.bare_500s(),
            round(recover_s, 1),
            "SIGCONT until acks resume and the subscriber is back",
        )
    )


# --- 7. the wall clock steps back and forward by an hour ---------------------------------------

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


def test_clock_step(tmp_path, servers):
    if not os.path.exists(LIBFAKETIME):
        reason = f"{LIBFAKETIME} missing: apt-get install faketime (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    # libfaketime moves CLOCK_REALTIME of the real process as the file says; the monotonic
    # clock is left alone, exactly as when an operator or NTP steps the wall clock.
    server = make_server(
        tmp_path / "d",
        LD_PRELOAD=LIBFAKETIME,
        FAKETIME_TIMESTAMP_FILE=str(offset),
        FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
    )
    servers.append(server)
    server.start()
    sub = Subscriber(server)
    sub.start()
    sub.connected.wait(10)
    ingest = Ingest(server, "ck-", batch=20, pause_s=0.05)
    ingest.start()
    time.sleep(2)
    early, gaps = [], []
    for step in ("-3600", "+3600", "+0"):
        offset.write_text(step + "\n")
        t0 = time.monotonic()
        time.sleep(4)
        window = [(wall, bar) for at, wall, bar, closed in sub.bars if closed and at >= t0]
        early += [(step, bar["time"], wall) for wall, bar in window if bar["time"] + 1000 > wall * 1000 + 300]
        gaps.append(len(window))
    status, _, tiers = call(server, "GET", "/api/downsampling")
    real_ms = time.time() * 1000
    ahead = [t["tier"] for t in tiers["tiers"] if t["watermark"] is not None and t["watermark"] > real_ms + 60_000]
    ingest.stop()
    sub.stop()
    steps_logged = log_line(server, "wall clock stepped")
    assert not ingest.bad, ingest.bad[:3]  # e.g. 400 "in the future" after a step back
    assert not early, f"live bars closed before their end: {early[:3]}"
    assert all(n >= 1 for n in gaps), f"live bars stopped closing during a step: {gaps}"
    assert not ahead, f"watermarks ran ahead of trade time: {ahead}"
    drain_and_stop(server)
    acked, stored, lost = loss(ingest.acked, stored_ids(server.data_dir, "ck-"))
    assert lost == 0
    record(
        Row(
            "clock_step",
            "wall clock stepped ±1 h",
            "libfaketime (LD_PRELOAD, FAKETIME_TIMESTAMP_FILE) steps "
            "tvflux's wall clock −1 h, then +1 h, then back, 4 s each, under ingest and a 1S subscriber",
            f"every batch acknowledged (none refused as 'in the future'); 1S bars kept closing on time "
            f"({', '.join(map(str, gaps))} closed bars per 4 s step), none early; watermarks never ahead",
            "log: " + steps_logged.split(": ", 1)[-1].split(";")[0],
            acked,
            stored,
            lost,
            0,
            0.0,
            "nothing to recover: the service clock is steady",
        )
    )


# --- 8a. slow DuckDB queries (real DuckDB work before every history read) ----------------------


def cpu_cores(pid: int, over_s: float) -> float:
    """The process's CPU use over ``over_s`` of wall time, in cores (all its threads)."""

    def ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    before, started = ticks(), time.monotonic()
    time.sleep(over_s)
    return (ticks() - before) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - started)


def test_slow_duckdb_queries(tmp_path, servers):
    timeout_s, requests = 1.5, 8
    trigger = tmp_path / "slow-reads"
    server = make_server(
        tmp_path / "data",
        TVFLUX_FAULT_SLOW_QUERY_FILE=str(trigger),
        TVFLUX_HISTORY_TIMEOUT_S=str(timeout_s),
        TVFLUX_WRITER_MAX_PENDING_ROWS="2000",
    )
    servers.append(server)
    server.start()
    sub = Subscriber(server)
    sub.start()
    sub.connected.wait(10)
    ingest = Ingest(server, "sq-")
    ingest.start()
    wait_until(lambda: len(ingest.acked) >= 500, 20, what="acks")
    # a page a month back: past the hot window, so the store answers it
    past_s = int(time.time()) - 30 * 86_400
    path = f"/api/bars?symbol=BTCUSD&resolution=1&from={past_s}&to={past_s + 3600}"
    answers: list[tuple[int, dict, object, float]] = []

    def ask() -> None:
        started = time.monotonic()
        status, headers, body = call(server, "GET", path, timeout_s=30)
        answers.append((status, headers, body, time.monotonic() - started))

    trigger.touch()
    try:
        askers = [threading.Thread(target=ask) for _ in range(requests)]
        for t in askers:
            t.start()
        for t in askers:
            t.join(40)
        bars_at = len(sub.bars)
        wait_until(lambda: len(sub.bars) > bars_at + 3, 10, what="live pushes while history is slow")
        # every request has been answered; a query still running for nobody would show here
        busy_cores = cpu_cores(server.proc.pid, 2.0)
        ready_status, _, _ = call(server, "GET", "/health/ready")
        _, _, stats = call(server, "GET", "/api/stats")
    finally:
        trigger.unlink()
    back = time.monotonic()
    wait_until(lambda: call(server, "GET", path)[0] == 200, 10, what="history once the store is quick again")
    recover_s = time.monotonic() - back
    ingest.stop()
    sub.stop()
    assert len(answers) == requests
    for status, headers, body, _ in answers:
        assert status == 503 and "retry-after" in headers and is_error_root(body), (status, body)
    slowest_s = max(a[3] for a in answers)
    assert slowest_s < timeout_s + 3, "a history request hung past its timeout"
    assert busy_cores < 1.0, f"timed-out queries kept running: {busy_cores:.2f} cores busy"
    assert stats["writer"]["pendingRows"] <= 2000 + 1000
    assert ingest.bare_500s() == 0 and not ingest.bad, ingest.bad[:3]
    assert not sub.disconnects, sub.disconnects
    warning = log_line(server, "queries timed out")
    timeouts = re.search(r"^tvflux_history_timeouts_total (\S+)$", call(server, "GET", "/metrics")[2], re.M)
    assert timeouts and float(timeouts.group(1)) >= requests
    drain_and_stop(server)
    n_acked, stored, lost = loss(ingest.acked, stored_ids(server.data_dir, "sq-"))
    assert lost == 0
    record(
        Row(
            "slow_store_duckdb",
            "slow DuckDB query",
            f"TVFLUX_FAULT_SLOW_QUERY_FILE: while the file exists every history read first runs real DuckDB "
            f"work in its cursor; {requests} concurrent history requests (TVFLUX_HISTORY_TIMEOUT_S={timeout_s:g}) "
            "under ingest and a subscriber",
            f"history: {requests} × 503 {answers[0][2]['error']['code']} with Retry-After, the slowest after "
            f"{slowest_s:.1f}s (no hang); live pushes continued; ingest: {ingest.refusals()}",
            f"log: {warning}; tvflux_history_timeouts_total; the interrupted queries freed the CPU "
            f"({busy_cores:.2f} cores busy after the timeouts); /health/ready {ready_status} (writes are fine)",
            n_acked,
            stored,
            lost,
            ingest.bare_500s(),
            round(recover_s, 1),
            "file removed until history answers 200",
        )
    )


# --- 8. a hung InfluxDB (SIGSTOP of the real influxd) -------------------------------------------


def test_hung_influx(influx_server, tmp_path, servers):
    server = make_server(
        tmp_path,
        **influx_server.env,
        TVFLUX_HISTORY_TIMEOUT_S="3",
        TVFLUX_WRITER_MAX_PENDING_ROWS="2000",
        TVFLUX_INFLUX_BUCKET=f"hung{os.getpid()}",
        TVFLUX_INFLUX_BARS_BUCKET=f"hungbars{os.getpid()}",
    )
    servers.append(server)
    server.start(timeout_s=60)
    sub = Subscriber(server)
    sub.start()
    sub.connected.wait(10)
    ingest = Ingest(server, "hi-")
    ingest.start()
    wait_until(lambda: len(ingest.acked) >= 500, 20, what="acks")
    influx_server.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(1)
        started = time.monotonic()
        status, headers, body = call(server, "GET", "/api/bars?symbol=BTCUSD&resolution=1&countback=5", timeout_s=30)
        history_s = time.monotonic() - started
        bars_at = len(sub.bars)
        wait_until(lambda: len(sub.bars) > bars_at + 3, 10, what="live pushes while the store hangs")
        time.sleep(3)
        ready_status, _, ready = call(server, "GET", "/health/ready")
        reasons = ready["reasons"]
        stats = {"writer": ready["writer"]}
    finally:
        influx_server.proc.send_signal(signal.SIGCONT)
    back = time.monotonic()
    assert status == 503 and "retry-after" in headers and is_error_root(body), (status, body)
    assert history_s < 10
    assert stats["writer"]["pendingRows"] <= 2000 + 1000, "the writer's memory grew past its bound"
    wait_until(lambda: readiness(server)[0] == 200, 60, what="ready after influxd resumed")
    recover_s = time.monotonic() - back
    ingest.stop()
    sub.stop()
    assert ingest.bare_500s() == 0 and not ingest.bad, ingest.bad[:3]
    drain_and_stop(server, timeout_s=60)
    server.start(timeout_s=60)
    # count what InfluxDB holds through the service's own history: every trade has size 1
    volume = heal(server, "BTCUSD", int(time.time()))
    acked = len(ingest.acked)
    lost = max(0, acked - int(round(volume)))
    assert lost == 0, (acked, volume)
    record(
        Row(
            "hung_influx",
            "InfluxDB stops answering",
            "SIGSTOP to the real influxd 2.9 for ~5 s under ingest, a subscriber and a history request",
            f"history: {status} {body['error']['code']} with Retry-After after {history_s:.1f}s (no hang); "
            f"live pushes continued; ingest: {ingest.refusals()}",
            f"/health/ready {ready_status}: "
            + "; ".join(reasons)[:160]
            + f"; writer pending {stats['writer']['pendingRows']} "
            f"rows (bound 2000, the rest spilled)",
            acked,
            min(acked, int(round(volume))),
            lost,
            ingest.bare_500s(),
            round(recover_s, 1),
            "SIGCONT until /health/ready is 200",
        )
    )


# --- 9. an edge process killed (serve --workers 2) ---------------------------------------------

TOPIC = "BTCUSD@1S"
BAR_FIELDS = ("time", "open", "high", "low", "close", "volume")


def compare_with_history(sub: Subscriber, history: list[dict], since: float = 0.0) -> tuple[Counter, list]:
    """Every closed bar ``sub`` got after ``since`` (monotonic) against history's bar of that
    bucket, counted by outcome: ``equal``; ``superseded`` (a ``reset`` of the topic came
    after it: the client refetches); ``after_reset`` (it came right behind a ``reset``, in
    the same push, and lacks trades history has: the late trades that reset announced);
    ``wrong`` (anything else). Returns the counts and the details of the wrong ones."""
    by_time = {bar["time"]: {k: bar[k] for k in BAR_FIELDS} for bar in history}
    preceding = {id(m["bar"]): prev for prev, m in zip([{}, *sub.timeline], sub.timeline) if m.get("type") == "bar"}
    outcome: Counter = Counter()
    wrong = []
    for at, _, bar, closed in list(sub.bars):
        if not closed or at <= since:
            continue
        got, stored = {k: bar[k] for k in BAR_FIELDS}, by_time.get(bar["time"])
        if got == stored:
            outcome["equal"] += 1
        elif sub.first(at, "reset", topic=TOPIC) is not None:
            outcome["superseded"] += 1
        elif preceding.get(id(bar), {}).get("type") == "reset" and stored and stored["volume"] > got["volume"]:
            outcome["after_reset"] += 1
        else:  # with what the subscriber got around it, to tell why
            outcome["wrong"] += 1
            around = [(round(t - at, 3), "bar", b["time"], c) for t, _, b, c in sub.bars if abs(t - at) < 1]
            around += [(round(t - at, 3), m.get("type")) for t, m in sub.events if abs(t - at) < 1]
            wrong.append({"got": got, "history": stored, "around": sorted(around)})
    return outcome, wrong


def bar_from(server: ServerProcess, pid: int, within_s: float = 20.0) -> tuple[dict, int]:
    """Connect to the public port until the kernel hands a connection to process ``pid``
    (``SO_REUSEPORT`` spreads them over the processes listening; a new edge listens once it
    has started), then subscribe there: (its first bar, connections made)."""
    deadline = time.monotonic() + within_s
    n = 0
    while time.monotonic() < deadline:
        n += 1
        with connect(server.ws_url + "/ws?v=2", open_timeout=15) as ws:
            if ws.socket.getsockname()[1] in peer_ports([pid], server.port)[pid]:
                ws.send(json.dumps({"op": "subscribe", "id": "n", "symbol": "BTCUSD", "resolution": "1S"}))
                while True:
                    msg = json.loads(ws.recv(timeout=10))  # TimeoutError: the new edge took it, sent no bar
                    if msg["type"] == "bar":
                        return msg, n
        time.sleep(0.1)
    raise AssertionError(f"no connection landed on process {pid} in {within_s}s ({n} tries)")


def test_edge_killed(tmp_path, servers):
    server = make_server(tmp_path, TVFLUX_WORKERS="2")
    servers.append(server)
    started_s = int(time.time())
    server.start()
    edges_up = time.monotonic()  # (they started before the port answered)
    core_pid = server.proc.pid
    edges = wait_until(lambda: len(p := child_pids(core_pid)) == 2 and p, 20, what="two edge processes")
    # the port answered as soon as one edge was up; the other may not listen yet
    wait_until(lambda: len(listening(edges, server.port)) == 2, 20, what="both edges listening")
    # v2 subscribers, at least 6 and until each edge holds 2 or more of them (the kernel
    # spreads connections over the edges at random)
    subs: list[Subscriber] = []

    def fewest_on_an_edge() -> int:
        held = peer_ports(edges, server.port)
        return min(sum(1 for s in subs if s.sessions[-1][1] in held[e]) for e in edges)

    while len(subs) < 6 or (fewest_on_an_edge() < 2 and len(subs) < 16):
        sub = Subscriber(server, reconnect=True, give_up_s=10, version=2)
        sub.start()
        assert sub.connected.wait(15)
        subs.append(sub)
    n_subs = len(subs)
    assert fewest_on_an_edge() >= 2
    # clients posting through the public port (so through an edge to the core) on kept-alive
    # connections, at least 2 and until each edge holds one of them: the edge about to die
    # has a client whose request gets no answer, and who sends that batch again
    ingests: list[Ingest] = []

    def ingest_ports(held: dict[int, set[int]], pid: int) -> list[int]:
        return [i.local_port for i in ingests if i.local_port in held[pid]]

    while len(ingests) < 2 or (
        min(len(ingest_ports(peer_ports(edges, server.port), e)) for e in edges) < 1 and len(ingests) < 6
    ):
        ingest = Ingest(server, f"ek{len(ingests)}-", batch=50, pause_s=0.01, retry=True, keep_alive=True)
        ingest.start()
        wait_until(lambda ingest=ingest: ingest.statuses, 10, what="an answer to an ingest client")  # accepted
        ingests.append(ingest)
    wait_until(
        lambda: all(len(i.acked) >= 500 for i in ingests) and all(s.bars for s in subs),
        20,
        what="acks, and bars at every subscriber",
    )
    # an edge that dies within EDGE_QUICK_EXIT_S of its start is taken for one that cannot
    # start and is restarted ever more slowly: kill one that has been serving for longer
    time.sleep(max(0.0, edges_up + EDGE_QUICK_EXIT_S + 0.5 - time.monotonic()))
    held = peer_ports(edges, server.port)
    victim = max(edges, key=lambda pid: len(held[pid]))  # the edge holding most of our subscribers
    on_victim = [s for s in subs if s.sessions[-1][1] in held[victim]]
    others = [s for s in subs if s not in on_victim]
    assert on_victim and all(s.sessions[-1][1] in held[e] for s in others for e in edges if e != victim), held
    ingest_on_victim = len(ingest_ports(held, victim))
    assert ingest_on_victim >= 1, (held, [i.local_port for i in ingests])

    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)

    def back(sub: Subscriber) -> float | None:
        """When the subscriber had a bar on a connection it made after the kill."""
        session = next((at for at, _ in sub.sessions if at > killed), None)
        return None if session is None else sub.first(session, "bar")

    ready: list[str] = []  # /health/ready on the public port meanwhile, in order

    def healed() -> bool:
        try:
            ready.append(str(readiness(server)[0]))
        except (OSError, http.client.HTTPException) as exc:
            ready.append(type(exc).__name__)
        return all(back(s) is not None for s in on_victim)

    wait_until(healed, 30, step_s=0.2, what="every dropped subscriber back with a bar")
    recover_s = max(back(s) or 0.0 for s in on_victim) - killed
    after = wait_until(
        lambda: len(p := child_pids(core_pid)) == 2 and victim not in p and p, 20, what="the core to start a new edge"
    )
    new_edge_s = time.monotonic() - killed  # (polled: within 0.1 s)
    (new_edge,) = set(after) - set(edges)
    landed = peer_ports(after, server.port)
    on_new = sum(1 for s in on_victim if s.sessions[-1][1] in landed[new_edge])
    bar_from(server, new_edge)  # the new edge serves, too
    time.sleep(2.5)  # closed bars on the new connections
    for ingest in ingests:
        ingest.stop()
    time.sleep(1.5)  # the last bar closes (and a reset follows any late trade)
    for sub in subs:
        sub.stop_event.set()  # all at once: a subscriber still waiting must not take the silence for an outage
    for sub in subs:
        sub.stop()
    # what a chart refetches: history of the whole run, through the port (an edge, then the core)
    status, _, body = call(
        server, "GET", f"/api/bars?symbol=BTCUSD&resolution=1S&from={started_s - 5}&to={int(time.time()) + 5}"
    )
    assert status == 200, body
    checked: Counter = Counter()
    wrong: list = []
    for sub in subs:
        outcome, details = compare_with_history(sub, body["bars"])
        checked.update(outcome)
        wrong += details
    # each dropped one: at least one closed bar on its new connection, equal to history
    healed_with_equal = [
        s
        for s in on_victim
        if compare_with_history(s, body["bars"], since=next(at for at, _ in s.sessions if at > killed))[0]["equal"]
    ]
    exited = log_line(server, "exited with")
    restarted = log_line(server, f"started (pid {new_edge})")
    drain_and_stop(server)
    acked_ids = [i for ingest in ingests for i in ingest.acked]
    acked, stored, lost = loss(acked_ids, stored_ids(server.data_dir, "ek"))
    bare = sum(i.bare_500s() for i in ingests)
    retried = sum(i.retried for i in ingests)
    retried_acked = sum(i.retried_acked for i in ingests)
    duplicates = sum(i.retried_duplicates for i in ingests)
    unanswered: Counter = Counter()  # no answer (exception name) or a retryable refusal ("503 code")
    for ingest in ingests:
        unanswered.update({k: v for k, v in ingest.statuses.items() if isinstance(k, str)})
        unanswered.update(ingest.codes)
    drops = Counter(d for s in on_victim for d in s.disconnects)

    assert lost == 0 and bare == 0 and not any(i.bad for i in ingests), [i.bad[:3] for i in ingests]
    assert all(i.abandoned == 0 for i in ingests) and retried_acked == retried >= ingest_on_victim
    assert all(s.dropped_at and s.dropped_at[0] > killed for s in on_victim), [s.disconnects for s in on_victim]
    assert not any(s.disconnects for s in others), [s.disconnects for s in others]
    assert all(s.bars_between(killed, killed + recover_s) for s in others), "a subscriber on the other edge stalled"
    assert not wrong, json.dumps(wrong[:3])
    assert len(healed_with_equal) == len(on_victim)

    pid = re.compile(r"pid \d+")
    record(
        Row(
            "edge_killed",
            "edge process killed",
            "SIGKILL to one of the 2 edge processes of `tvflux serve --workers 2` under ingest through the "
            f"public port (id'd trades, so through an edge to the core) and {n_subs} v2 subscribers, to the "
            "edge holding most of them",
            f"{len(on_victim)} of {n_subs} subscribers were on it: their connections dropped "
            f"({', '.join(f'{n} × {k}' for k, n in sorted(drops.items()))}); they reconnected to the same port "
            f"after 0.5 s ({len(on_victim) - on_new} landed on the surviving edge, {on_new} on the new one), "
            f"subscribed again and had bars again; of the closed bars all subscribers got, {checked['equal']} "
            "equal history for their bucket"
            + (f", {checked['superseded']} were followed by a reset (late trades)" if checked["superseded"] else "")
            + (
                f", {checked['after_reset']} came right behind a reset in the same push and lack the late "
                "trades that reset announced (history has them)"
                if checked["after_reset"]
                else ""
            )
            + f", none other; the other {len(others)} stayed connected and kept getting bars; ingest "
            f"({len(ingests)} clients on kept-alive connections, {ingest_on_victim} on the killed edge): "
            f"{retried} batch{'es' if retried != 1 else ''} got no answer "
            f"({', '.join(f'{n} × {k}' for k, n in sorted(unanswered.items()))}), "
            "sent again with the same ids on a new connection: all acked"
            + (f" ({duplicates} trades as duplicates: the first try had reached the core)" if duplicates else ""),
            f"log: {pid.sub('pid …', exited)}, then {pid.sub('pid …', restarted)}: a new pid "
            f"{new_edge_s:.1f}s after the kill, which serves (a v2 client that landed on it got a bar); "
            f"/health/ready on the port every 0.2 s from the kill on: {', '.join(ready)}",
            acked,
            stored,
            lost,
            bare,
            round(recover_s, 1),
            "kill until every dropped subscriber had a bar on its new connection",
        )
    )


# --- 10. the broker gone (core and an edge through NATS) -----------------------------------------


def test_broker_gone(tmp_path, nats, servers):
    core = make_server(tmp_path / "core", TVFLUX_BROKER_URL=nats.url)
    servers.append(core)
    started_s = int(time.time())
    core.start()
    edge = make_server(tmp_path / "edge", TVFLUX_BROKER_URL="")
    servers.append(edge)
    start_raw(edge, command=["edge", "--core", core.base_url, "--broker", nats.url])
    sub = Subscriber(edge, version=2)  # stays on its connection: no reconnect
    sub.start()
    assert sub.connected.wait(10)
    ingest = Ingest(core, "bg-", batch=50, pause_s=0.05)  # to the core: ingest does not need the broker
    ingest.start()
    wait_until(lambda: len(ingest.acked) >= 500 and sub.bars, 20, what="acks, and bars at the edge's subscriber")

    stopped = time.monotonic()
    acked_before = len(ingest.acked)
    nats.stop()  # SIGTERM
    lost_at = wait_until(lambda: sub.first(stopped, "status", live=False), 15, what="status live false")
    lost_msg = next(m for at, m in sub.events if at == lost_at)
    edge_ready = wait_until(
        lambda: (r := call(edge, "GET", "/health/ready"))[0] == 503 and r[2], 15, what="the edge unready"
    )
    core_status, _, core_ready = wait_until(
        lambda: (r := call(core, "GET", "/health/ready"))[2].get("broker", {}).get("connected") is False and r,
        15,
        what="the core to report the broker disconnected",
    )
    time.sleep(max(0.0, stopped + 4.0 - time.monotonic()))  # a few seconds without the broker
    acked_during = len(ingest.acked) - acked_before
    back = time.monotonic()
    bars_during = sub.bars_between(lost_at, back)
    nats.start()  # the same port
    live_at = wait_until(lambda: sub.first(lost_at, "status", live=True), 20, what="status live true")
    reset_at = wait_until(lambda: sub.first(lost_at, "reset", topic=TOPIC), 10, what="a reset of the topic")
    bar_at = wait_until(lambda: sub.first(reset_at, "bar"), 15, what="a bar after the reset")
    recover_s = bar_at - back
    wait_until(lambda: readiness(edge)[0] == 200, 15, what="the edge ready again")
    wait_until(lambda: call(core, "GET", "/health/ready")[2]["broker"]["connected"], 15, what="the core's broker back")
    time.sleep(1.0)
    ingest.stop()
    sub.stop()
    # after the reset the chart refetches history (through the edge): the outage's trades are there
    history_volume = heal(edge, "BTCUSD", started_s)
    drain_and_stop(core)
    edge.stop(signal.SIGTERM)
    ids = stored_ids(core.data_dir, "bg-")
    acked, stored, lost = loss(ingest.acked, ids)

    assert live_at <= reset_at <= bar_at, (live_at, reset_at, bar_at)
    assert bars_during == 0 and acked_during > 0
    assert not sub.disconnects, sub.disconnects
    assert core_status == 200
    assert ingest.statuses.keys() == {200} and not ingest.bad and ingest.bare_500s() == 0, ingest.statuses
    assert lost == 0 and history_volume == pytest.approx(len(ids))
    places = {"NATS_URL": nats.url}
    record(
        Row(
            "broker_gone",
            "broker gone",
            "nats-server (the core's TVFLUX_BROKER_URL, the `tvflux edge --broker`'s source) stopped with "
            "SIGTERM for 4 s under ingest to the core and a v2 subscriber on the edge, then started again on "
            "the same port",
            f"the subscriber: status live false ({shown(lost_msg.get('reason', ''), **places)}) "
            f"{lost_at - stopped:.1f}s after the stop, no bars meanwhile, the connection stayed open; "
            f"then status live true, reset {TOPIC}, bars again; history through the edge holds the outage's "
            f"trades (volume {history_volume:.0f} = trades stored); ingest never refused ({acked_during} trades "
            "acked during the outage)",
            f"edge /health/ready 503 (upstream: {shown(edge_ready['upstream']['reason'] or '', **places)}); "
            f"core /health/ready {core_status}, broker connected false "
            f"({shown(core_ready['broker']['error'] or '', **places)})",
            acked,
            stored,
            lost,
            ingest.bare_500s(),
            round(recover_s, 1),
            "nats-server started again until the subscriber has a bar again",
        )
    )
