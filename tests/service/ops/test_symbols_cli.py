"""``tvflux symbols`` as a user runs it: on the store directly, and through the running
service (where the change reaches open subscriptions at once)."""

from __future__ import annotations

import json

from tests.service.ops.test_cli import run


def test_symbols_add_list_remove_on_the_store_and_through_the_service(tmp_path, server_factory):
    data = tmp_path / "data"
    added = run(["symbols", "add", "SHIBUSD", "--tick-size", "0.00000001", "--description", "Shiba"], data)
    assert added.returncode == 0, added.stderr
    assert "pricescale 100000000" in added.stderr and "in the store" in added.stderr
    listed = run(["symbols", "list", "--json"], data)
    records = {r["spec"]["symbol"]: r for r in json.loads(listed.stdout)["symbols"]}
    assert records["SHIBUSD"]["spec"]["tickSize"] == 1e-8 and records["BTCUSD"]["configured"] is True
    refused = run(["symbols", "remove", "BTCUSD"], data)
    assert refused.returncode == 1 and "TVFLUX_SYMBOLS" in refused.stderr and "Traceback" not in refused.stderr
    bad = run(["symbols", "add", "BTC USD"], data)
    assert bad.returncode == 2 and "not a valid symbol" in bad.stderr and "invalid settings" not in bad.stderr

    server = server_factory(str(data), synthetic_rate="0")  # the service lists what the store's registry says
    assert "SHIBUSD" in [s["symbol"] for s in server.get("/api/symbols")[1]["symbols"]]
    gone = run(["symbols", "remove", "SHIBUSD", "--with-data"], data)
    assert gone.returncode == 0, gone.stderr
    assert "through the service" in gone.stderr and "0 stored trades" in gone.stderr
    assert "SHIBUSD" not in [s["symbol"] for s in server.get("/api/symbols")[1]["symbols"]]
    table = run(["symbols", "list"], data)
    assert table.returncode == 0 and "SHIBUSD" in table.stdout and "removed" in table.stdout
    _, audit = server.get("/api/admin/audit")
    assert [e["action"] for e in audit["entries"]][:2] == ["remove_symbol", "add_symbol"]
    assert audit["entries"][0]["actor"].startswith("tvflux symbols")
