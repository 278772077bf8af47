"""``tvflux-bench chart``: the requests charts really send, against a running server with
trades arriving, and the same questions asked of the peers a user might pick instead.

tvflux cells (``GET /api/bars`` over one keep-alive connection, a server on a copy of the
dataset, its synthetic source publishing ``rate`` trades/s so the live edge moves):

* ``open``   — a chart opening: ``countback=300``, ``to`` = now, every tier resolution and
               1W/1M (the hot window's case);
* ``scroll`` — a scroll-back page: ``countback=300``, ``to`` = 7 days before the
               dataset's end (the store's case);
* ``range``  — long ranges: 1 year of 1D, 3 months of 60 (``from``/``to``).

Each cell reports client time (request to last byte) and server time: the delta of the
``tvflux_history_request_seconds`` histogram in ``/metrics`` over the cell, its median
interpolated inside the bucket (bounds 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5 ms …).

Peers answer the chart opening at the dataset's end (they have no live edge), bar for
bar checked against tvflux's answer to the same request, each as tvflux does a countback
(``windowed``: the window of 300 buckets first, all history before ``to`` only when that
holds fewer bars):

* ``duckdb_sorted`` — DuckDB on the raw trades in a table sorted by (symbol, time),
  ``GROUP BY … ORDER BY … DESC LIMIT 300``;
* ``chdb_raw``      — ClickHouse (chDB, in process) aggregating raw trades in a MergeTree
  ordered by (symbol, ts_ns);
* ``chdb_mv_1m``    — ClickHouse's own incremental 1-minute ``AggregatingMergeTree``
  materialized view (its native equivalent of a tier), states merged at query time;
* ``chdb_mv_tiers`` — the same with 1-minute, hourly and daily views, each request read
  from the coarsest view whose buckets tile its bars (tvflux's plan, done the ClickHouse
  way).

Peers are a benchmark extra (``pip install -e '.[bench]'``), never a runtime dependency; a
peer that is not installed is skipped with the reason in the results.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.data import DB_NAME, DatasetSpec, ensure_dataset
from bench.history import Served, compare
from service.core.models import Bar
from service.core.resolution import Resolution, Unit, parse_resolution
from service.core.timestamps import NS_PER_MS

DAY_MS = 86_400_000
OPEN_RES = ("1", "5", "15", "60", "240", "1D", "1W", "1M")
COUNT = 300
PEERS = ("duckdb_sorted", "chdb_raw", "chdb_mv_1m", "chdb_mv_tiers")


# --- server time from /metrics ---------------------------------------------------------------


def parse_histogram(text: str, resolution: str) -> tuple[list[float], list[float]]:
    """Cumulative bucket counts of ``tvflux_history_request_seconds`` for one resolution."""
    bounds, counts = [], []
    prefix = "tvflux_history_request_seconds_bucket{"
    for line in text.splitlines():
        if line.startswith(prefix) and f'resolution="{resolution}"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            bounds.append(float("inf") if le == "+Inf" else float(le))
            counts.append(float(line.rsplit(" ", 1)[1]))
    return bounds, counts


def histogram_quantile(bounds: list[float], before: list[float], after: list[float], q: float) -> float | None:
    """The ``q`` quantile (ms) of the observations between two scrapes, linear inside a bucket."""
    if not bounds:
        return None
    if not before:
        before = [0.0] * len(bounds)
    delta = [a - b for a, b in zip(after, before)]
    total = delta[-1]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in zip(bounds, delta):
        if count >= rank:
            if bound == float("inf"):
                return prev_bound * 1000
            inside = count - prev_count
            frac = (rank - prev_count) / inside if inside else 1.0
            return (prev_bound + (bound - prev_bound) * frac) * 1000
        prev_bound, prev_count = bound, count
    return None


async def time_http_cell(server: Served, res: str, make_path: Any, reps: int) -> dict[str, Any]:
    _, text = await server.get("/metrics")
    before = parse_histogram(text.decode(), res)[1]
    samples = []
    bars: list[Bar] = []
    for _ in range(reps):
        path = make_path()
        t0 = time.perf_counter()
        bars = await server.bars(path)
        samples.append((time.perf_counter() - t0) * 1000)
    _, text = await server.get("/metrics")
    bounds, after = parse_histogram(text.decode(), res)
    samples.sort()
    return {
        "n": reps,
        "bars": len(bars),
        "client_p50": round(statistics.median(samples), 3),
        "client_p95": round(samples[int(0.95 * (len(samples) - 1))], 3),
        "server_p50": _r(histogram_quantile(bounds, before, after, 0.5)),
        "server_p95": _r(histogram_quantile(bounds, before, after, 0.95)),
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


# --- peers ---------------------------------------------------------------------------------------


def _bucket_ms_sql(res: Resolution, ms: str, *, clickhouse: bool) -> str:
    """SQL for the bucket start (epoch ms) of the epoch-ms expression ``ms``."""
    if res.unit is Unit.MONTH:
        if clickhouse:
            return f"toUnixTimestamp(toStartOfMonth(toDateTime(intDiv({ms}, 1000), 'UTC'))) * 1000"
        return f"epoch_ms(date_trunc('month', epoch_ms({ms})))"
    size = res.size_ms
    offset = res.bucket_start_ms(0) % size  # Mondays for weeks
    if clickhouse:
        return f"(intDiv({ms} - {offset}, {size}) * {size} + {offset})"
    return f"(({ms} - {offset}) // {size} * {size} + {offset})"


def windowed(query: Any, symbol: str, res: Resolution, to_ms: int, count: int) -> list[Bar]:
    """A peer's countback as tvflux does it: first only the window of ``count`` buckets
    before ``to_ms`` (enough on dense data), then, when that holds fewer bars, everything
    before ``to_ms``. Without the window a peer would aggregate all history before ``to``
    for every request, which no one would ship."""
    lo = res.bucket_start_ms(max(0, to_ms - count * res.nominal_ms))
    bars = query(symbol, res, lo, to_ms, count)
    if len(bars) >= count or lo <= 0:
        return bars[-count:]
    return query(symbol, res, 0, to_ms, count)


class DuckSorted:
    """Raw trades in their own DuckDB file, sorted by (symbol, ts_ns)."""

    def __init__(self, src_db: str, path: str) -> None:
        import duckdb

        self.path = path
        built = None
        if not os.path.exists(path):
            t0 = time.perf_counter()
            con = duckdb.connect(path)
            con.execute(f"ATTACH '{src_db}' AS src (READ_ONLY)")
            con.execute(
                "CREATE TABLE trades AS SELECT symbol, ts_ns, price, size FROM src.trades ORDER BY symbol, ts_ns"
            )
            con.execute("DETACH src")
            con.execute("CHECKPOINT")
            con.close()
            built = round(time.perf_counter() - t0, 1)
        self.built_s = built
        self.con = duckdb.connect(path, read_only=True)

    def countback(self, symbol: str, res: Resolution, to_ms: int, count: int) -> list[Bar]:
        return windowed(self._countback, symbol, res, to_ms, count)

    def _countback(self, symbol: str, res: Resolution, from_ms: int, to_ms: int, count: int) -> list[Bar]:
        b = _bucket_ms_sql(res, f"ts_ns // {NS_PER_MS}", clickhouse=False)
        rows = self.con.execute(
            f"SELECT {b} AS t, arg_min(price, ts_ns), max(price), min(price), arg_max(price, ts_ns), sum(size) "
            f"FROM trades WHERE symbol = ? AND ts_ns >= ? AND ts_ns < ? GROUP BY t ORDER BY t DESC LIMIT {count}",
            [symbol, from_ms * NS_PER_MS, to_ms * NS_PER_MS],
        ).fetchall()
        return [Bar(int(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in reversed(rows)]

    def close(self) -> None:
        self.con.close()


VIEWS = {"1d": DAY_MS, "1h": 3_600_000, "1m": 60_000}  # coarsest first


# marks a finished chDB build; named after its views, so a store built with other views is rebuilt
LOADED = "loaded-views-1m-1h-1d"


class ChdbPeer:
    """chDB (ClickHouse in process): raw trades in a MergeTree, and 1-minute, hourly and daily
    ``AggregatingMergeTree`` materialized views filled as the trades are inserted."""

    def __init__(self, src_db: str, directory: str) -> None:
        import chdb.session  # noqa: F401  (the bench extra)
        import duckdb

        fresh = not os.path.exists(os.path.join(directory, LOADED))
        if fresh:
            shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)
        from chdb import session

        self.sess = session.Session(os.path.join(directory, "db"))
        self.built_s = None
        if fresh:
            t0 = time.perf_counter()
            parquet = os.path.join(directory, "trades.parquet")
            con = duckdb.connect(src_db, read_only=True)
            con.execute(f"COPY (SELECT symbol, ts_ns, price, size FROM trades) TO '{parquet}' (FORMAT parquet)")
            con.close()
            q = self.sess.query
            q("CREATE DATABASE IF NOT EXISTS b")
            q(
                "CREATE TABLE b.trades (symbol LowCardinality(String), ts_ns Int64, price Float64, size Float64) "
                "ENGINE = MergeTree ORDER BY (symbol, ts_ns)"
            )
            for name, size_ms in VIEWS.items():
                q(
                    f"CREATE TABLE b.bars_{name} (symbol LowCardinality(String), t Int64, "
                    "o AggregateFunction(argMin, Float64, Int64), h SimpleAggregateFunction(max, Float64), "
                    "l SimpleAggregateFunction(min, Float64), c AggregateFunction(argMax, Float64, Int64), "
                    "v SimpleAggregateFunction(sum, Float64)) ENGINE = AggregatingMergeTree ORDER BY (symbol, t)"
                )
                q(
                    f"CREATE MATERIALIZED VIEW b.mv_{name} TO b.bars_{name} AS SELECT symbol, "
                    f"intDiv(ts_ns, {size_ms * NS_PER_MS}) * {size_ms} AS t, argMinState(price, ts_ns) AS o, "
                    "max(price) AS h, min(price) AS l, argMaxState(price, ts_ns) AS c, sum(size) AS v "
                    "FROM b.trades GROUP BY symbol, t"
                )
            q(f"INSERT INTO b.trades SELECT * FROM file('{parquet}', Parquet)")
            for name in VIEWS:
                q(f"OPTIMIZE TABLE b.bars_{name} FINAL")
            os.remove(parquet)
            open(os.path.join(directory, LOADED), "w").close()
            self.built_s = round(time.perf_counter() - t0, 1)

    def _rows(self, sql: str) -> list[Bar]:
        out = self.sess.query(sql, "CSV").bytes().decode()
        bars = []
        for line in out.splitlines():
            t, o, h, lo, c, v = line.split(",")
            bars.append(Bar(int(t), float(o), float(h), float(lo), float(c), float(v)))
        return bars[::-1]

    def raw(self, symbol: str, res: Resolution, to_ms: int, count: int) -> list[Bar]:
        return windowed(self._raw, symbol, res, to_ms, count)

    def _raw(self, symbol: str, res: Resolution, from_ms: int, to_ms: int, count: int) -> list[Bar]:
        b = _bucket_ms_sql(res, "intDiv(ts_ns, 1000000)", clickhouse=True)
        return self._rows(
            f"SELECT {b} AS bt, argMin(price, ts_ns), max(price), min(price), argMax(price, ts_ns), sum(size) "
            f"FROM b.trades WHERE symbol = '{symbol}' AND ts_ns >= {from_ms * NS_PER_MS} "
            f"AND ts_ns < {to_ms * NS_PER_MS} "
            f"GROUP BY bt ORDER BY bt DESC LIMIT {count}"
        )

    def mv_1m(self, symbol: str, res: Resolution, to_ms: int, count: int) -> list[Bar]:
        return windowed(lambda *a: self._from_view("1m", *a), symbol, res, to_ms, count)

    def mv_tiers(self, symbol: str, res: Resolution, to_ms: int, count: int) -> list[Bar]:
        view = next(name for name, size in VIEWS.items() if res.is_multiple_of(size))
        return windowed(lambda *a: self._from_view(view, *a), symbol, res, to_ms, count)

    def _from_view(self, view: str, symbol: str, res: Resolution, from_ms: int, to_ms: int, count: int) -> list[Bar]:
        b = _bucket_ms_sql(res, "t", clickhouse=True)
        # merge the view's states per bucket of the view, then roll them up to the resolution
        return self._rows(
            f"SELECT {b} AS bt, argMin(o1, t), max(h1), min(l1), argMax(c1, t), sum(v1) FROM ("
            f"SELECT t, argMinMerge(o) AS o1, max(h) AS h1, min(l) AS l1, argMaxMerge(c) AS c1, sum(v) AS v1 "
            f"FROM b.bars_{view} WHERE symbol = '{symbol}' AND t >= {from_ms} AND t < {to_ms} GROUP BY t) "
            f"GROUP BY bt ORDER BY bt DESC LIMIT {count}"
        )

    def close(self) -> None:
        self.sess.close()


def time_sync(fn: Any, reps: int, budget_s: float) -> tuple[list[float], Any]:
    samples: list[float] = []
    answer = None
    spent = 0.0
    while len(samples) < reps and (spent < budget_s or len(samples) < 3):
        t0 = time.perf_counter()
        answer = fn()
        took = time.perf_counter() - t0
        samples.append(took * 1000)
        spent += took
    return samples, answer


# --- the run -------------------------------------------------------------------------------------


async def _time_server(
    data_dir: str,
    rate: int,
    env: dict[str, str],
    cells: list[tuple[str, str, Any]],
    reps: int,
    log: bool,
    references: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], dict[str, list[Bar]]]:
    """Each cell (kind, resolution, path maker) against a server on ``data_dir`` with trades
    arriving: one untimed request (it loads the hot window for ``open``), then ``reps``; and the
    answers to the peers' question (the last bars before the dataset's end, ``references``)."""
    server = Served(data_dir, {"TVFLUX_SYNTHETIC_RATE": str(rate), **env})
    await server.start()
    out = []
    try:
        await asyncio.sleep(3.0)  # trades arriving, a few flushes and a downsampling run
        for kind, res, make in cells:
            await server.bars(make())
            out.append({"kind": kind, "resolution": res, **await time_http_cell(server, res, make, reps)})
            if log:
                e = out[-1]
                print(f"  {kind:12} {res:>3}: server p50 {e['server_p50']} ms, client p50 {e['client_p50']} ms "
                      f"({e['bars']} bars)", file=sys.stderr)  # fmt: skip
        answers = {path: await server.bars(path) for path in references}
    finally:
        await server.stop()
    return out, answers


async def run_chart_bench(
    data_dir: str,
    spec: DatasetSpec,
    scratch_dir: str,
    *,
    symbol: str = "BTCUSD",
    reps: int = 40,
    rate: int = 2_000,
    peers: tuple[str, ...] = PEERS,
    peer_reps: int = 10,
    peer_budget_s: float = 5.0,
    log: bool = True,
) -> dict[str, Any]:
    dataset = ensure_dataset(data_dir, spec, log=log)
    src_db = os.path.join(data_dir, DB_NAME)
    end_ms = spec.end_ms
    results: dict[str, Any] = {"dataset": dataset, "symbol": symbol, "rate": rate, "count": COUNT}
    results.update(peers=[], peer_status={}, mismatches=[], loadavg_start=list(os.getloadavg()))
    started = time.perf_counter()
    # 1. tvflux over HTTP on a copy (the server writes the arriving trades into it), with the
    # hot window, then the chart opens again with it off: what the store path costs
    shutil.rmtree(scratch_dir, ignore_errors=True)
    os.makedirs(scratch_dir)
    shutil.copy(src_db, os.path.join(scratch_dir, DB_NAME))

    def countback(res: str, to_s: int | None = None) -> Any:
        q = f"/api/bars?symbol={symbol}&resolution={res}&countback={COUNT}&to="
        return lambda: q + str(int(time.time()) if to_s is None else to_s)

    ranges = [(f"range {days}d", res, (end_ms - days * DAY_MS) // 1000) for res, days in (("1D", 365), ("60", 90))]
    cells = [("open", res, countback(res)) for res in OPEN_RES]
    cells += [("scroll", res, countback(res, (end_ms - 7 * DAY_MS) // 1000)) for res in OPEN_RES]
    cells += [
        (kind, res, lambda res=res, lo=lo: f"/api/bars?symbol={symbol}&resolution={res}&from={lo}&to={end_ms // 1000}")
        for kind, res, lo in ranges
    ]
    question = {res: countback(res, end_ms // 1000)() for res in OPEN_RES}  # the peers', at the data's end
    results["cells"], answers = await _time_server(scratch_dir, rate, {}, cells, reps, log, list(question.values()))
    reference = {res: answers[path] for res, path in question.items()}
    store = [("open_store", res, countback(res)) for res in OPEN_RES]
    results["cells"] += (await _time_server(scratch_dir, rate, {"TVFLUX_HOT_WINDOW_BARS": "0"}, store, reps, log))[0]
    # 2. the peers at the dataset's end, each answer checked bar for bar against tvflux's
    fns: dict[str, Any] = {}
    closing: list[Any] = []
    try:
        if "duckdb_sorted" in peers:
            d = DuckSorted(src_db, os.path.join(data_dir, "peer_sorted.duckdb"))
            fns["duckdb_sorted"], results["peer_status"]["duckdb_sorted"] = d.countback, {"built_s": d.built_s}
            closing.append(d)
        if {"chdb_raw", "chdb_mv_1m", "chdb_mv_tiers"} & set(peers):
            try:
                c = ChdbPeer(src_db, os.path.join(data_dir, "peer_chdb"))
            except ImportError as exc:
                results["peer_status"]["chdb"] = {"skipped": f"chdb not installed: {exc}"}
            else:
                closing.append(c)
                results["peer_status"]["chdb"] = {"built_s": c.built_s}
                for name, fn in (("chdb_raw", c.raw), ("chdb_mv_1m", c.mv_1m), ("chdb_mv_tiers", c.mv_tiers)):
                    if name in peers:
                        fns[name] = fn
        for res in OPEN_RES:
            r = parse_resolution(res)
            for name, fn in fns.items():
                samples, answer = time_sync(lambda fn=fn, r=r: fn(symbol, r, end_ms, COUNT), peer_reps, peer_budget_s)
                samples.sort()
                if diff := compare(reference[res], answer):
                    results["mismatches"].append({"peer": name, "resolution": res, "diff": diff})
                entry = {"peer": name, "resolution": res, "n": len(samples), "bars": len(answer)}
                entry |= {"p50": round(statistics.median(samples), 3), "same_bars": diff is None}
                entry["p95"] = round(samples[int(0.95 * (len(samples) - 1))], 3)
                results["peers"].append(entry)
                if log:
                    print(f"  peer {name:14} {res:>3}: p50 {entry['p50']} ms, {diff or 'identical'}", file=sys.stderr)
    finally:
        for peer in closing:
            peer.close()
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["loadavg_end"] = list(os.getloadavg())
    return results


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bench-dir", default="bench/data")
    p.add_argument("--scratch-dir", default="bench/data/scratch-chart")
    p.add_argument("--trades", type=int, default=50_000_000)
    p.add_argument("--days", type=float, default=365.0)
    p.add_argument("--symbol", default="BTCUSD")
    p.add_argument("--reps", type=int, default=40)
    p.add_argument("--rate", type=int, default=2_000, help="synthetic trades/s arriving during the run")
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--json", metavar="PATH")
