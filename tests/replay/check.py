"""The pass criterion of every replay case: the trade ids tvflux stored for a symbol are
exactly the server's (minus the ids of gaps tvflux reported open), each once, with the
server's times, prices and sizes; and every resolution tvflux serves equals an
independent aggregation (pandas, tests/reference.py) of the server's trades."""

from __future__ import annotations

import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from service.core.resolution import parse_resolution
from tests.reference import reference_bars
from tests.replay.harness import ReplayServer, Row, wait_until

RESOLUTIONS = ("1S", "5S", "1", "5", "60", "1D")


def sources(server: Any) -> dict[str, Any]:
    status, body = server.get("/api/sources")
    assert status == 200, body
    return body


def feed(server: Any, symbol: str) -> dict[str, Any]:
    for source in sources(server)["sources"]:
        for f in source["symbols"]:
            if f["symbol"] == symbol:
                return {**f, "source": source}
    raise AssertionError(f"{symbol} is not fed: {sources(server)}")


def caught_up(server: Any, replay: ReplayServer, symbol: str, venue_symbol: str, timeout_s: float = 30.0) -> None:
    """Until tvflux passed on the server's newest id and has nothing left to fetch, and its
    writer holds nothing pending."""
    last = replay.books[venue_symbol].rows[-1].id

    def done() -> bool:
        f = feed(server, symbol)
        _, stats = server.get("/api/stats")
        return f["lastTradeId"] == last and f["state"] == "live" and stats["writer"]["pendingRows"] == 0

    wait_until(done, timeout_s, f"{symbol} to reach id {last}: {feed(server, symbol)}")


def open_ids(server: Any, symbol: str) -> set[int]:
    out: set[int] = set()
    for gap in sources(server)["gaps"]:
        if gap["symbol"] == symbol and gap["state"] == "open" and gap.get("toId") is not None:
            out.update(range(gap["fromId"], gap["toId"] + 1))
    return out


def assert_bars(server: Any, rows: list[Row], symbol: str) -> None:
    server.post("/api/downsampling/run?wait=600")
    trades = [{"time": r.time_ms, "price": float(Decimal(r.price)), "size": float(Decimal(r.size))} for r in rows]
    for res in RESOLUTIONS:
        pad_s = parse_resolution(res).size_ms // 1000
        lo, hi = trades[0]["time"] // 1000 - pad_s, trades[-1]["time"] // 1000 + pad_s
        status, body = server.get(f"/api/bars?symbol={symbol}&resolution={res}&from={lo}&to={hi}")
        assert status == 200, body
        want = reference_bars(trades, parse_resolution(res))
        got = body["bars"]
        assert [(b["time"], b["open"], b["high"], b["low"], b["close"]) for b in got] == [
            (w["time"], w["open"], w["high"], w["low"], w["close"]) for w in want
        ], (res, got[:3], want[:3], len(got), len(want))
        assert [b["volume"] for b in got] == pytest.approx([w["volume"] for w in want], rel=1e-9), res


def stored(data_dir: str, symbol: str) -> list[tuple[str, int, float, float]]:
    con = duckdb.connect(str(Path(data_dir) / "tvflux.duckdb"), read_only=True)
    try:
        return con.execute(
            "SELECT id, ts_ns, price, size FROM trades WHERE symbol = ? ORDER BY ts_ns", [symbol]
        ).fetchall()
    finally:
        con.close()


def assert_exact(server: Any, replay: ReplayServer, symbol: str, venue_symbol: str) -> set[int]:
    """Bars, then (after a clean stop: the server holds the DuckDB file) the stored rows.
    Returns the ids reported open (empty unless the case expects a gap left open)."""
    caught_up(server, replay, symbol, venue_symbol)
    missing = open_ids(server, symbol)
    rows = [r for r in replay.trades(venue_symbol) if r.id not in missing]
    assert_bars(server, rows, symbol)
    server.stop(signal.SIGTERM)
    got = stored(server.data_dir, symbol)
    ids = [int(i) for i, *_ in got]
    assert len(ids) == len(set(ids)), "a trade was stored twice"
    assert sorted(ids) == [r.id for r in rows], (
        f"stored ids differ: missing {sorted({r.id for r in rows} - set(ids))[:10]}, "
        f"extra {sorted(set(ids) - {r.id for r in rows})[:10]}"
    )
    by_id = {int(i): (ts // 1_000_000, p, s) for i, ts, p, s in got}
    assert all(by_id[r.id] == (r.time_ms, float(Decimal(r.price)), float(Decimal(r.size))) for r in rows)
    return missing
