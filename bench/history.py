"""``tvflux-bench history``: chart-history latency, tvflux's pre-downsampled tiers against
aggregating finer data at request time, side by side in one run.

Strategies (all answer the same request: OHLCV bars of resolution R over [from, to)):

* ``tiers``      — tvflux: ``EmbeddedStore.bars``, served from the largest stored tier
                   that divides R (the code path behind ``/api/bars``);
* ``http``       — the same through a running ``tvflux serve`` (``GET /api/bars``):
                   end-to-end, with validation, the writer's pending trades and JSON;
* ``duckdb_1s``  — the users' approach in the same engine: per-second bars precompiled
                   once into ``bars_1s`` (same DuckDB file, same time-ordered layout as
                   the tiers), aggregated by SQL at request time — isolates the effect
                   of pre-downsampling;
* ``redis_1s``   — the users' approach on a NoSQL store: per-second bars in Redis sorted
                   sets, fetched and aggregated in the application
                   (:mod:`bench.redis_bars`);
* ``raw``        — raw trades aggregated at request time.

Each (strategy, resolution, range) cell runs once untimed (warm-up; kept as a sample when
it took a second or more) then the strategies take turns until each has ``reps`` samples
or spent ``budget_s`` seconds — so the slow cells (a year of per-second bars) get fewer
repetitions (the report shows ``n``), and outside load hits all strategies alike. Medians and
p95 per cell; ratios are to ``tiers`` measured in the same run. Every strategy's answer is
checked against ``tiers`` (bar count, OHLC, volume): :class:`Grid`, shared with the InfluxDB
benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from bench.data import DB_NAME, DatasetSpec, ensure_dataset
from loadgen.stats import fmt_num, summarize
from service.core.models import Bar
from service.core.resolution import Resolution, parse_resolution
from service.core.timestamps import NS_PER_MS

DAY_MS = 86_400_000
RESOLUTIONS = ("1", "5", "15", "60", "240", "1D")
RES_LABEL = {"1": "1m", "5": "5m", "15": "15m", "60": "1h", "240": "4h", "1D": "1d"}
RANGES = {"1 day": 1, "1 week": 7, "1 month": 30, "3 months": 90, "1 year": 365}
STRATEGIES = ("tiers", "http", "duckdb_1s", "redis_1s", "raw")
BARS_PER_CHART = 300


# --- the per-second table ---------------------------------------------------------------


def ensure_bars_1s(db_path: str, *, log: bool = True) -> dict[str, Any]:
    """``bars_1s`` built once from ``trades`` (time-ordered, like the tiers). Returns
    rows and, when built now, the seconds it took."""
    import duckdb

    con = duckdb.connect(db_path)
    try:
        exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'bars_1s'").fetchall()[
            0
        ]
        if exists and exists[0]:
            (rows,) = con.execute("SELECT count(*) FROM bars_1s").fetchall()[0]
            return {"rows": int(rows), "built_seconds": None}
        if log:
            print("building bars_1s (per-second bars, once) …", file=sys.stderr)
        t0 = time.perf_counter()
        con.execute(
            "CREATE TABLE bars_1s AS SELECT symbol, ts_ns // 1000000000 * 1000 AS time_ms, "
            "arg_min(price, ts_ns) AS open, max(price) AS high, min(price) AS low, arg_max(price, ts_ns) AS close, "
            "sum(size) AS volume, count(*) AS trades FROM trades GROUP BY ALL ORDER BY time_ms, symbol"
        )
        con.execute("CHECKPOINT")
        (rows,) = con.execute("SELECT count(*) FROM bars_1s").fetchall()[0]
        return {"rows": int(rows), "built_seconds": round(time.perf_counter() - t0, 2)}
    finally:
        con.close()


def _bucket(size_ms: int, expr: str) -> str:
    return f"({expr} // {size_ms} * {size_ms})"


def _to_bars(rows: list[tuple[Any, ...]]) -> list[Bar]:
    return [Bar(int(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]


# --- strategies ---------------------------------------------------------------------------


class DirectStrategies:
    """``tiers``, ``duckdb_1s`` and ``raw`` on one EmbeddedStore (same connection, same
    worker-thread hop for all three)."""

    def __init__(self, db_path: str, plan: Any) -> None:
        from service.storage.embedded.store import EmbeddedStore

        self.store = EmbeddedStore(db_path, plan)

    async def start(self) -> None:
        await self.store.start()

    async def close(self) -> None:
        await self.store.close()

    async def tiers(self, symbol: str, res: Resolution, lo: int, hi: int) -> list[Bar]:
        return await self.store.bars(symbol, res, lo, hi)

    async def _sql(self, sql: str, params: list[Any]) -> list[Bar]:
        # The store's own worker-thread runner: the same path and overhead as ``tiers``.
        rows = await self.store._run(lambda c: c.execute(sql, params).fetchall())  # noqa: SLF001
        return _to_bars(rows)

    async def duckdb_1s(self, symbol: str, res: Resolution, lo: int, hi: int) -> list[Bar]:
        size = res.size_ms
        sql = (
            f"SELECT {_bucket(size, 'time_ms')} AS b, arg_min(open, time_ms), max(high), min(low), "
            "arg_max(close, time_ms), sum(volume) FROM bars_1s WHERE symbol = ? AND time_ms >= ? AND time_ms < ? "
            "GROUP BY b ORDER BY b"
        )
        return await self._sql(sql, [symbol, lo, hi])

    async def raw(self, symbol: str, res: Resolution, lo: int, hi: int) -> list[Bar]:
        size = res.size_ms
        sql = (
            f"SELECT {_bucket(size, f'ts_ns // {NS_PER_MS}')} AS b, arg_min(price, ts_ns), max(price), "
            "min(price), arg_max(price, ts_ns), sum(size) FROM trades WHERE symbol = ? AND ts_ns >= ? AND ts_ns < ? "
            "GROUP BY b ORDER BY b"
        )
        return await self._sql(sql, [symbol, lo * NS_PER_MS, hi * NS_PER_MS])


class RedisStrategy:
    def __init__(self, db_path: str, symbols: tuple[str, ...]) -> None:
        from bench.redis_bars import RedisServer

        self.db_path = db_path
        self.symbols = symbols
        self.server = RedisServer()
        self.client: Any = None
        self.load: dict[str, Any] = {}

    def start(self, *, log: bool = True) -> None:
        import duckdb

        from bench.redis_bars import BAR_DTYPE, load_bars

        self.server.start()
        t0 = time.perf_counter()
        con = duckdb.connect(self.db_path, read_only=True)
        total = 0
        try:
            for symbol in self.symbols:
                if log:
                    print(f"loading per-second bars of {symbol} into redis-server …", file=sys.stderr)

                def chunks(symbol: str = symbol) -> Any:
                    reader = con.sql(
                        "SELECT time_ms // 1000, open, high, low, close, volume, trades "
                        "FROM bars_1s WHERE symbol = $symbol ORDER BY time_ms",
                        params={"symbol": symbol},
                    ).to_arrow_reader(1_000_000)
                    for batch in reader:
                        arr = np.empty(batch.num_rows, dtype=BAR_DTYPE)
                        for i, name in enumerate(BAR_DTYPE.names):
                            arr[name] = batch.column(i).to_numpy()
                        yield arr

                total += load_bars(self.server.port, symbol, chunks())
        finally:
            con.close()
        self.client = self.server.client()
        self.load = {
            "bars_loaded": total,
            "load_seconds": round(time.perf_counter() - t0, 1),
            "redis_used_memory_mb": self.server.info_memory_mb(),
            "symbols": list(self.symbols),
        }

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        self.server.stop()

    async def redis_1s(self, symbol: str, res: Resolution, lo: int, hi: int) -> list[Bar]:
        from bench.redis_bars import redis_bars

        return redis_bars(self.client, symbol, res.size_ms, lo, hi)


class Served:
    """``tvflux serve`` spawned on a data directory and asked over one keep-alive HTTP
    connection; ``http`` is the history benchmark's end-to-end strategy (``GET /api/bars``)."""

    def __init__(self, data_dir: str, env: dict[str, str]) -> None:
        from loadgen.server import SpawnedServer

        log = os.path.join(data_dir, "bench-server.log")
        self.server = SpawnedServer({"TVFLUX_MAX_BARS": "1000000", **env}, data_dir=data_dir, log_path=log)
        self.conn: Any = None

    async def start(self) -> None:
        from loadgen.httpclient import HttpConnection

        await asyncio.to_thread(self.server.start)
        self.conn = HttpConnection("127.0.0.1", self.server.port, timeout_s=600)

    async def stop(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        await asyncio.to_thread(self.server.stop)

    async def get(self, path: str) -> tuple[int, bytes]:
        return await self.conn.request("GET", path)

    async def bars(self, path: str) -> list[Bar]:
        import msgspec

        from service.core.models import BarsResponse

        status, body = await self.get(path)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}: {body[:300]!r}")
        return msgspec.json.decode(body, type=BarsResponse).bars

    async def http(self, symbol: str, res: Resolution, lo: int, hi: int) -> list[Bar]:
        return await self.bars(f"/api/bars?symbol={symbol}&resolution={res.text}&from={lo // 1000}&to={hi // 1000}")


# --- timing -------------------------------------------------------------------------------


async def time_cells(
    fns: dict[str, Callable[[], Awaitable[list[Bar]]]],
    reps: dict[str, int],
    budget_s: float,
    min_reps: dict[str, int] | None = None,
) -> dict[str, tuple[list[float], list[Bar]]]:
    """Latencies (ms) and first answer of each strategy for one cell. Each runs once
    untimed (kept as a sample when it took ≥ 1 s), then the strategies take turns, one
    run each per round, until each has ``reps`` samples or spent ``budget_s`` (but at
    least ``min_reps``, default 1) — so a burst of outside load hits all strategies alike."""
    min_reps = min_reps or {}
    samples: dict[str, list[float]] = {}
    answers: dict[str, list[Bar]] = {}
    spent: dict[str, float] = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        answers[name] = await fn()
        first = time.perf_counter() - t0
        samples[name] = [first * 1000] if first >= 1.0 else []
        spent[name] = first if first >= 1.0 else 0.0
    while True:
        active = [
            n
            for n in fns
            if len(samples[n]) < reps[n] and (spent[n] < budget_s or len(samples[n]) < max(1, min_reps.get(n, 1)))
        ]
        if not active:
            break
        for name in active:
            t0 = time.perf_counter()
            await fns[name]()
            took = time.perf_counter() - t0
            samples[name].append(took * 1000)
            spent[name] += took
    return {name: (samples[name], answers[name]) for name in fns}


def compare(reference: list[Bar], other: list[Bar]) -> str | None:
    """``None`` when ``other`` has the same bars as ``reference`` (volumes within 1e-9
    relative), else what differs."""
    if len(reference) != len(other):
        return f"{len(other)} bars instead of {len(reference)}"
    if not reference:
        return None
    ref = np.array([(b.time, b.open, b.high, b.low, b.close, b.volume) for b in reference])
    oth = np.array([(b.time, b.open, b.high, b.low, b.close, b.volume) for b in other])
    if not np.array_equal(ref[:, :5], oth[:, :5]):
        bad = int(np.flatnonzero((ref[:, :5] != oth[:, :5]).any(axis=1))[0])
        return f"bar {bad} differs: {reference[bad]} vs {other[bad]}"
    if not np.allclose(ref[:, 5], oth[:, 5], rtol=1e-9, atol=1e-9):
        return "volumes differ"
    return None


class Grid:
    """The history benchmark's questions — every resolution over every range, and the last
    300 bars — asked of several strategies at once. Each cell is timed by :func:`time_cells`
    and every answer is checked against the *tiers* answer to the same request (timed first,
    in the same or an earlier :meth:`time` call). Strategies in ``slow`` get ``slow_reps``
    samples on ranges of 90 days or more. Used by the embedded store's benchmark here and by
    the InfluxDB one (``bench/influx.py``)."""

    def __init__(
        self,
        symbol: str,
        end_ms: int,
        resolutions: tuple[str, ...],
        ranges: dict[str, int],
        *,
        reps: int,
        chart_reps: int,
        budget_s: float,
        slow: frozenset[str] = frozenset(),
        slow_reps: int = 3,
        log: bool = True,
    ) -> None:
        self.symbol, self.end_ms, self.resolutions, self.ranges = symbol, end_ms, resolutions, ranges
        self.reps, self.chart_reps, self.budget_s = reps, chart_reps, budget_s
        self.slow, self.slow_reps, self.log = slow, slow_reps, log
        self.out: dict[str, Any] = {"cells": [], "chart": [], "mismatches": []}
        self._tiers: dict[tuple[str, str, str], list[Bar]] = {}

    async def time(self, fns: dict[str, Callable[[str, Resolution, int, int], Awaitable[list[Bar]]]]) -> None:
        end = self.end_ms
        questions = [("cells", r, label, days) for label, days in self.ranges.items() for r in self.resolutions]
        questions += [("chart", r, f"{BARS_PER_CHART} bars", 0) for r in self.resolutions]
        for kind, res_text, label, days in questions:
            res = parse_resolution(res_text)
            lo = end - BARS_PER_CHART * res.size_ms if kind == "chart" else res.bucket_start_ms(end - days * DAY_MS)
            slow = {name for name in fns if name in self.slow and days >= 90}
            reps = {
                name: self.slow_reps if name in slow else (self.chart_reps if kind == "chart" else self.reps)
                for name in fns
            }
            timed = await time_cells(
                {name: (lambda fn=fn, res=res, lo=lo: fn(self.symbol, res, lo, end)) for name, fn in fns.items()},
                reps,
                self.budget_s,
                {name: self.slow_reps for name in slow},
            )
            for strategy, (samples, bars) in timed.items():
                self._record(kind, strategy, res_text, label, lo, samples, bars)

    def _record(
        self, kind: str, strategy: str, res_text: str, label: str, lo: int, samples: list[float], bars: list[Bar]
    ) -> None:
        entry = {
            "strategy": strategy,
            "resolution": res_text,
            "range": label,
            "from_ms": lo,
            "to_ms": self.end_ms,
            "bars": len(bars),
            **summarize(samples),
        }
        self.out[kind].append(entry)
        if strategy == "tiers":
            self._tiers[(kind, res_text, label)] = bars
        elif (ref := self._tiers.get((kind, res_text, label))) is not None and (diff := compare(ref, bars)):
            self.out["mismatches"].append({"strategy": strategy, "resolution": res_text, "range": label, "diff": diff})
        if self.log:
            print(
                f"  {kind:5} {strategy:10} {RES_LABEL.get(res_text, res_text):>4} {label:>9}: "
                f"p50 {fmt_num(entry['p50'], 'ms', 2)} (n={entry['n']}, {len(bars):,} bars)",
                file=sys.stderr,
            )

    def results(self) -> dict[str, Any]:
        """The cells with each one's ratio of medians to *tiers*, measured in this run."""
        for kind in ("cells", "chart"):
            base = {(e["resolution"], e["range"]): e["p50"] for e in self.out[kind] if e["strategy"] == "tiers"}
            for e in self.out[kind]:
                b = base.get((e["resolution"], e["range"]))
                e["ratio_to_tiers"] = round(e["p50"] / b, 2) if b and e["p50"] is not None else None
        return {
            "symbol": self.symbol,
            "end_ms": self.end_ms,
            "resolutions": list(self.resolutions),
            "ranges": dict(self.ranges),
            "reps": self.reps,
            "budget_s": self.budget_s,
            **self.out,
        }


async def run_history_bench(
    data_dir: str,
    spec: DatasetSpec,
    *,
    symbol: str = "BTCUSD",
    strategies: tuple[str, ...] = STRATEGIES,
    resolutions: tuple[str, ...] = RESOLUTIONS,
    ranges: dict[str, int] = RANGES,
    reps: int = 15,
    budget_s: float = 3.0,
    slow_reps: int = 3,
    plan: Any = None,
    log: bool = True,
) -> dict[str, Any]:
    from service.core.plan import default_plan

    plan = plan or default_plan()
    dataset = ensure_dataset(data_dir, spec, log=log)
    db_path = os.path.join(data_dir, DB_NAME)
    bars_1s = ensure_bars_1s(db_path, log=log) if {"duckdb_1s", "redis_1s"} & set(strategies) else None
    grid = Grid(
        symbol,
        spec.end_ms,
        resolutions,
        ranges,
        reps=reps,
        chart_reps=max(reps, 30) if reps >= 10 else reps,  # chart requests are cheap: more samples
        budget_s=budget_s,
        slow=frozenset({"duckdb_1s", "redis_1s", "raw"}),
        slow_reps=slow_reps,
        log=log,
    )
    extra: dict[str, Any] = {}
    started = time.perf_counter()
    # 1. in-process strategies on one store, interleaved per cell
    direct = DirectStrategies(db_path, plan)
    redis_strategy = None
    await direct.start()
    try:
        fns: dict[str, Any] = {}
        for name in ("tiers", "duckdb_1s", "redis_1s", "raw"):
            if name not in strategies and name != "tiers":
                continue
            if name == "redis_1s":
                redis_strategy = RedisStrategy(db_path, (symbol,))
                await direct.close()  # the loader reads the file; reopen after
                redis_strategy.start(log=log)
                await direct.start()
                extra["redis"] = redis_strategy.load
                fns[name] = redis_strategy.redis_1s
            else:
                fns[name] = getattr(direct, name)
        if log:
            print(f"timing {', '.join(fns)} on {symbol} …", file=sys.stderr)
        await grid.time(fns)
    finally:
        await direct.close()
        if redis_strategy is not None:
            redis_strategy.stop()
    # 2. end to end through the HTTP API (the server needs the file to itself)
    if "http" in strategies:
        http = Served(data_dir, {"TVFLUX_SYNTHETIC_RATE": "0", "TVFLUX_DOWNSAMPLE_INTERVAL_MS": "0"})
        await http.start()
        try:
            if log:
                print("timing http (GET /api/bars) …", file=sys.stderr)
            await grid.time({"http": http.http})
        finally:
            await http.stop()
    return {
        "dataset": dataset,
        "bars_1s": bars_1s,
        "strategies": list(strategies),
        **grid.results(),
        **extra,
        "seconds": round(time.perf_counter() - started, 1),
    }


# --- command line ---------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bench-dir", default="bench/data", help="dataset directory (default bench/data)")
    p.add_argument("--trades", type=int, default=50_000_000)
    p.add_argument("--days", type=float, default=365.0)
    p.add_argument("--end-ms", type=int, default=DatasetSpec.end_ms)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--symbol", default="BTCUSD", help="symbol the requests are for")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--reps", type=int, default=15, help="samples per cell (fewer when over budget)")
    p.add_argument("--slow-reps", type=int, default=3, help="samples for 3-month/1-year cells of the slow strategies")
    p.add_argument("--budget-s", type=float, default=3.0, help="time budget per cell")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
