"""A subscriber that stops reading is cut off (close 4008) and never delays the others."""

from __future__ import annotations

import json
import socket
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from service.core.resolution import SUPPORTED


def test_stalled_reader_is_cut_off_and_others_stay_fast(server_factory):
    server = server_factory(
        synthetic_rate="3000", push_interval_ms="20", send_timeout_s="1", max_subscriptions_per_connection="300"
    )
    host, port = "127.0.0.1", server.port
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills fast
    raw.connect((host, port))
    # max_queue=1: the client library itself stops reading from the socket once one
    # message waits unread, so the server's buffers really fill up.
    slow = connect(server.ws_url + "/ws", sock=raw, max_queue=1, compression=None).__enter__()
    n = 0
    for symbol in ("BTCUSD", "ETHUSD", "LTCUSD"):
        for res in SUPPORTED:
            for _copy in range(4):
                slow.send(json.dumps({"op": "subscribe", "id": f"s{n}", "symbol": symbol, "resolution": res}))
                n += 1
    # ...and the slow client never reads again.
    with connect(server.ws_url + "/ws") as fast:
        fast.send(json.dumps({"op": "subscribe", "id": "f", "symbol": "BTCUSD", "resolution": "1S"}))
        worst_ms = 0.0
        deadline = time.monotonic() + 20
        cut = False
        while time.monotonic() < deadline and not cut:
            marker = 1_000_000.0 + (time.monotonic() % 1000)
            sent = time.monotonic()
            server.post_trades([{"symbol": "BTCUSD", "price": marker, "size": 0.001, "time": int(time.time() * 1000)}])
            while True:
                msg = json.loads(fast.recv(timeout=5))
                if msg["type"] == "bar" and msg["bar"]["high"] >= marker:
                    break
            worst_ms = max(worst_ms, (time.monotonic() - sent) * 1000)
            _, metrics = server.get("/metrics")
            cut = "tvflux_clients_cut_total 1.0" in metrics
            time.sleep(0.2)
        print(f"worst trade→push latency of the fast client while the slow one stalled: {worst_ms:.0f} ms")
        assert cut, "the stalled client was never cut off"
        assert worst_ms < 2000, "a stalled subscriber delayed the others"
    # The slow client finds its buffered frames, then the end of the connection: a close
    # frame with 4008 when it still fitted in the buffers, else the server drops the TCP
    # connection (a stalled peer cannot be made to read a close frame).
    code = "still open"
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            try:
                slow.recv(timeout=2)
            except TimeoutError:
                continue
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
    finally:
        raw.close()
    assert code in (4008, None), code
