"""A remote store that is down at start: the service stays up, unready, and says why."""

from tests.conftest import free_port


def test_unreachable_influx_keeps_service_up_and_unready(server_factory):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    server = server_factory(start=False, store="influx", influx_url=dead, influx_token="t")
    server.env["TVFLUX_STORE"] = "influx"
    # start() waits for readiness, which never comes: start the process and poll liveness
    import subprocess
    import time

    from tests.conftest import ROOT, TVFLUX

    server.proc = subprocess.Popen(
        [TVFLUX, "serve"], env=server.env, cwd=ROOT, stdout=open(server.log_path, "ab"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if server.get("/health/live")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    time.sleep(1.5)  # a couple of retries
    status, ready = server.get("/health/ready")
    assert status == 503 and ready["ready"] is False
    status, body = server.get("/api/bars?symbol=BTCUSD&resolution=1&countback=1")
    assert status == 503 and body["error"]["code"] == "store_unavailable" and "unreachable" in body["error"]["message"]
    status, body = server.post("/api/trades", [{"symbol": "BTCUSD", "price": 1, "size": 1, "time": 1}])
    assert status == 503 and body["error"]["code"] == "store_unavailable"
    assert server.proc.poll() is None, "the service must not crash"
    assert "retrying" in server.log()
