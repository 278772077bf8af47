"""The benchmark dataset: built once with ``tvflux generate`` + ``tvflux downsample``,
reused while its description (``dataset.json``) matches.

Both steps run as subprocesses (``python -m service.ops.cli``), as a user would run them, and
are timed with the child's peak RSS sampled by psutil — so building the dataset is also
the generation and backfill benchmark. :func:`rebackfill` re-times the backfill on a copy
whose tiers were emptied, without regenerating.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import psutil

DB_NAME = "tvflux.duckdb"
META_NAME = "dataset.json"
DEFAULT_END_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z: a fixed year, reproducible
DAY_MS = 86_400_000


@dataclass(frozen=True)
class DatasetSpec:
    trades: int = 50_000_000
    days: float = 365.0
    end_ms: int = DEFAULT_END_MS
    seed: int = 1
    symbols: tuple[str, ...] = ("BTCUSD", "ETHUSD", "LTCUSD")

    @property
    def start_ms(self) -> int:
        return self.end_ms - int(self.days * DAY_MS)

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["symbols"] = list(self.symbols)
        return d


@dataclass
class TimedRun:
    argv: list[str]
    seconds: float
    peak_rss_mb: float
    returncode: int
    cpu_s: float
    log_tail: str


def run_timed(
    argv: list[str], env: dict[str, str], log_path: str, *, poll_s: float = 0.1, echo: bool = True
) -> TimedRun:
    """Run ``argv``, sampling the child's RSS (and its children's) until it exits."""
    started = time.perf_counter()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
        ps = psutil.Process(proc.pid)
        peak = 0
        cpu = 0.0
        while proc.poll() is None:
            try:
                rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
                peak = max(peak, rss)
                t = ps.cpu_times()
                cpu = t.user + t.system
            except psutil.Error:
                pass
            time.sleep(poll_s)
    seconds = time.perf_counter() - started
    if proc.returncode in (130, -signal.SIGINT):  # Ctrl-C reached the child too: stop here, quietly
        raise KeyboardInterrupt
    with open(log_path, errors="replace") as f:
        tail = f.read()[-3000:]
    if echo:
        last = [line for line in tail.replace("\r", "\n").splitlines() if line.strip()][-8:]
        print("\n".join("    " + line for line in last), file=sys.stderr)
    return TimedRun(argv, seconds, round(peak / 2**20, 1), proc.returncode, round(cpu, 2), tail)


def cli_env(data_dir: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TVFLUX_")}
    env["TVFLUX_DATA_DIR"] = os.path.abspath(data_dir)
    env["TVFLUX_LOG_LEVEL"] = "WARNING"
    env.update(extra)
    return env


def tvflux_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "service.ops.cli", *args]


def read_meta(data_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(data_dir, META_NAME)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_meta(data_dir: str, meta: dict[str, Any]) -> None:
    tmp = os.path.join(data_dir, META_NAME + ".tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, os.path.join(data_dir, META_NAME))


def ensure_dataset(data_dir: str, spec: DatasetSpec, *, log: bool = True) -> dict[str, Any]:
    """The dataset described by ``spec`` in ``data_dir``, built if missing or different.
    Returns its metadata; ``built_now`` says whether this call built it (then the
    ``generate`` and ``backfill`` entries are fresh timings)."""
    os.makedirs(data_dir, exist_ok=True)
    db = os.path.join(data_dir, DB_NAME)
    meta = read_meta(data_dir)
    if meta is not None and meta.get("spec") == spec.describe() and meta.get("complete") and os.path.exists(db):
        meta["built_now"] = False
        return meta
    for name in os.listdir(data_dir):  # a stale or half-built dataset: start over
        path = os.path.join(data_dir, name)
        if name.startswith("tvflux.duckdb") or name in (META_NAME, "spool") or name.endswith(".log"):
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    env = cli_env(data_dir)
    if log:
        print(f"generating {spec.trades:,} trades over {spec.days:g} days into {db} …", file=sys.stderr)
    gen = run_timed(
        tvflux_argv(
            "generate",
            "--symbols",
            ",".join(spec.symbols),
            "--days",
            str(spec.days),
            "--trades",
            str(spec.trades),
            "--seed",
            str(spec.seed),
            "--end-ms",
            str(spec.end_ms),
        ),
        env,
        os.path.join(data_dir, "generate.log"),
        echo=log,
    )
    if gen.returncode != 0:
        raise RuntimeError(f"tvflux generate failed ({gen.returncode}):\n{gen.log_tail}")
    written = _trade_count(db)
    if log:
        print("downsampling (backfill through every tier) …", file=sys.stderr)
    down = run_timed(tvflux_argv("downsample"), env, os.path.join(data_dir, "downsample.log"), echo=log)
    if down.returncode != 0:
        raise RuntimeError(f"tvflux downsample failed ({down.returncode}):\n{down.log_tail}")
    meta = {
        "spec": spec.describe(),
        "complete": True,
        "trades_written": written,
        "db_bytes": os.path.getsize(db),
        "generate": {
            "seconds": round(gen.seconds, 2),
            "trades_per_s": round(written / gen.seconds),
            "peak_rss_mb": gen.peak_rss_mb,
            "cpu_s": gen.cpu_s,
        },
        "backfill": {
            "seconds": round(down.seconds, 2),
            "trades_per_s": round(written / down.seconds),
            "peak_rss_mb": down.peak_rss_mb,
            "cpu_s": down.cpu_s,
        },
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_meta(data_dir, meta)
    meta["built_now"] = True
    return meta


def _trade_count(db: str) -> int:
    import duckdb

    con = duckdb.connect(db, read_only=True)
    try:
        (n,) = con.execute("SELECT count(*) FROM trades").fetchall()[0]
        return int(n)
    finally:
        con.close()


def rebackfill(data_dir: str, scratch_dir: str, *, log: bool = True) -> dict[str, Any]:
    """Copy the dataset's trades into ``scratch_dir`` with empty tiers and time
    ``tvflux downsample`` on it (backfill through every tier from raw trades)."""
    import duckdb

    os.makedirs(scratch_dir, exist_ok=True)
    src = os.path.join(data_dir, DB_NAME)
    dst = os.path.join(scratch_dir, DB_NAME)
    for suffix in ("", ".wal"):
        if os.path.exists(dst + suffix):
            os.remove(dst + suffix)
    shutil.copyfile(src, dst)
    con = duckdb.connect(dst)
    try:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'bars_%'"
            ).fetchall()
        ]
        for table in tables:
            con.execute(f"DROP TABLE {table}")  # bars_1s too: the copy holds what tvflux needs only
        con.execute(
            "UPDATE tier_state SET watermark_ms = NULL, last_run_ms = NULL, last_duration_ms = NULL, "
            "rows = 0, error = NULL"
        )
        con.execute("DELETE FROM dirty")
        (n,) = con.execute("SELECT count(*) FROM trades").fetchall()[0]
        con.execute("CHECKPOINT")
    finally:
        con.close()
    if log:
        print(f"backfill: downsampling {n:,} trades through every tier (fresh tiers) …", file=sys.stderr)
    run = run_timed(
        tvflux_argv("downsample"), cli_env(scratch_dir), os.path.join(scratch_dir, "downsample.log"), echo=log
    )
    if run.returncode != 0:
        raise RuntimeError(f"tvflux downsample failed ({run.returncode}):\n{run.log_tail}")
    con = duckdb.connect(dst, read_only=True)
    try:
        rows = dict(con.execute("SELECT tier, rows FROM tier_state").fetchall())
    finally:
        con.close()
    return {
        "trades": int(n),
        "seconds": round(run.seconds, 2),
        "trades_per_s": round(n / run.seconds),
        "peak_rss_mb": run.peak_rss_mb,
        "cpu_s": run.cpu_s,
        "tier_rows": rows,
    }
