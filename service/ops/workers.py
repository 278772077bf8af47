"""``tvflux serve --workers N`` and ``tvflux edge``.

With workers, one process is the *core* (ingest, writer, store, downsampling, the live
bars) and listens on a loopback port of its own; N *edge* processes share the public port
(``SO_REUSEPORT``: the kernel spreads new connections over them), hold the WebSocket/SSE
clients, take their live bars from the core's ``/ws?v=2`` (one connection each) and proxy
everything else to it. The core restarts an edge that dies; that edge's clients reconnect
to the same port and land on a living one.

``tvflux edge --core URL [--broker nats://…]`` runs one edge by hand, on this host or
another one; with ``--broker`` its live bars come through NATS instead of the core's socket.
"""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

from service.core.settings import Settings

if TYPE_CHECKING:  # imported where a server starts: the CLI's other commands stay light
    import uvicorn
    from litestar import Litestar

    from service.edge.app import EdgeApp

log = logging.getLogger("tvflux")

EDGE_RESTART_DELAY_S = 1.0
EDGE_QUICK_EXIT_S = 5.0


def uvicorn_config(app: Litestar | EdgeApp, settings: Settings) -> uvicorn.Config:
    """The one uvicorn configuration of tvflux's servers (core and edge)."""
    import uvicorn

    from service.api.wsproto import FrameLimitProtocol

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        ws=FrameLimitProtocol,
        http="httptools" if _has("httptools") else "h11",
        log_config=None,
        ws_max_size=settings.max_frame_bytes,
        lifespan="on",
        timeout_graceful_shutdown=10,
        access_log=False,
        # Bar frames are ~150 bytes: per-message deflate would cost CPU per frame per client
        # (the fan-out hot path) and hide a stalled reader for a minute behind compression.
        ws_per_message_deflate=False,
    )


def tune_gc() -> None:
    """Fewer, cheaper cyclic-GC passes for a server holding ~200 objects per WebSocket
    connection. With CPython's defaults (700, 10, 10) and thousands of subscribers, the
    short-lived objects of each push (futures, timer handles, frames) kept promoting into
    the old generation and forcing full collections over a million objects: 0.5–0.8 s
    stalls every few seconds, a third of the event loop's time. Startup objects are frozen
    (never scanned again), the young generation is larger so most push garbage dies before
    a collection, and the middle one is collected often so it stays small. Reference
    counting, which frees nearly everything, is unaffected. Measured in
    ``docs/performance.md`` (optimisation log). Core and edges alike: an edge holds the
    connections, so it has the most objects."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 3, 50)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def shared_port_socket(host: str, port: int, *, listen: bool) -> socket.socket:
    """A socket on ``host:port`` that other processes of this user may bind too."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    if listen:
        sock.listen(2048)
    return sock


# --- edge -----------------------------------------------------------------------------------


def listen_socket(host: str, port: int, prog: str = "tvflux") -> socket.socket | None:
    """A socket bound to ``host:port`` (not yet listening), or ``None`` after saying why
    it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        print(f"{prog}: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        why = (
            ("the port is already in use (another tvflux?); stop it, or pick another port with TVFLUX_PORT or --port")
            if exc.errno == errno.EADDRINUSE
            else exc.strerror or str(exc)
        )
        print(f"{prog}: cannot listen on {host}:{port}: {why}", file=sys.stderr)
        return None
    sock.set_inheritable(True)
    return sock


def cmd_edge(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from service.edge.app import create_edge_app
    from service.edge.upstream import CoreUpstream, Upstream

    core_url = args.core.rstrip("/")
    upstream: Upstream
    if args.broker:
        from service.edge.nats import NatsUpstream

        upstream = NatsUpstream(args.broker)
    else:
        upstream = CoreUpstream(core_url.replace("http", "ws", 1) + "/ws?v=2")
    app = create_edge_app(settings, upstream, core_url)
    try:  # bound before anything starts: a busy port fails at once, saying so
        sock = (
            shared_port_socket(settings.host, settings.port, listen=True)
            if args.reuse_port
            else listen_socket(settings.host, settings.port, "tvflux edge")
        )
    except OSError as exc:
        print(f"tvflux edge: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    if sock is None:
        return 1
    server = uvicorn.Server(uvicorn_config(app, settings))
    tune_gc()
    print(
        f"tvflux edge on http://{settings.host}:{settings.port}/ (core {core_url}"
        f"{', broker ' + args.broker if args.broker else ''})",
        file=sys.stderr,
        flush=True,
    )
    server.run(sockets=[sock])
    return 0 if server.started else 1


def count(text: str) -> int:
    """An argparse type: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    edge = sub.add_parser("edge", help="serve live bars to clients from a core (and proxy the rest to it)")
    edge.add_argument("--core", required=True, help="the core's base URL, e.g. http://10.0.0.1:8000")
    edge.add_argument("--broker", help="take live bars from this NATS server (nats://host:4222) instead of the core")
    edge.add_argument("--host", help="overrides TVFLUX_HOST")
    edge.add_argument("--port", type=int, help="overrides TVFLUX_PORT")
    edge.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the port with other edges (SO_REUSEPORT; set by serve --workers)",
    )
    edge.set_defaults(func=cmd_edge)


# --- serve --workers ------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM when the core dies, however it
    dies (a SIGKILLed core must not leave edges holding the port)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class EdgeSupervisor:
    """Runs N edge processes and starts a new one when one exits (until stopped)."""

    def __init__(self, count: int, core_url: str, settings: Settings) -> None:
        self.count = count
        self.core_url = core_url
        self.settings = settings
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self.restarts = 0
        self._started_at = [0.0] * count
        self._delay_s = [EDGE_RESTART_DELAY_S] * count
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="edge-supervisor", daemon=True)

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        args = [
            sys.executable,
            "-m",
            "service.ops.cli",
            "edge",
            "--core",
            self.core_url,
            "--host",
            self.settings.host,
            "--port",
            str(self.settings.port),
            "--reuse-port",
        ]
        proc = subprocess.Popen(args, preexec_fn=_die_with_parent)
        self._started_at[index] = time.monotonic()
        log.info("edge %d started (pid %d)", index, proc.pid)
        return proc

    def start(self) -> None:
        for i in range(self.count):
            self.procs[i] = self._spawn(i)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.wait(0.2):
            for i, proc in enumerate(self.procs):
                if proc is not None and proc.poll() is not None and not self._stopping.is_set():
                    # one that dies right after starting (bad settings, say) is retried ever more slowly
                    quick = time.monotonic() - self._started_at[i] < EDGE_QUICK_EXIT_S
                    self._delay_s[i] = min(self._delay_s[i] * 2, 30.0) if quick else EDGE_RESTART_DELAY_S
                    log.error(
                        "edge %d (pid %d) exited with %s; starting another in %.0fs",
                        i,
                        proc.pid,
                        proc.returncode,
                        self._delay_s[i],
                    )
                    self.restarts += 1
                    self.procs[i] = None
                    if not self._stopping.wait(self._delay_s[i]):
                        self.procs[i] = self._spawn(i)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p is not None and p.poll() is None]
