"""CPU cost per trade of each step of the ingest path, in-process (no sockets).

    .venv/bin/python -m bench.ingest_path [--trades 10000] [--repeat 7] [--json PATH]

Times, in CPU microseconds per trade (``time.process_time``, so other processes on a
shared machine disturb it little; the best of ``--repeat`` runs is kept):

* ``decode``   — a msgpack / JSON frame of trades into ``Trade`` structs, with the server's
                 own decoders (``service.api.streams``);
* ``accept``   — ``Ingestor.accept``: validation, grouping by symbol, unique timestamps,
                 columns (the writer and hub are stubs);
* ``publish``  — ``Hub.publish`` to one live series per symbol × tier resolution;
* ``arrow``    — the Arrow table the embedded store appends (``trades_arrow``).

The optimisation log in ``bench/optimisations.md`` quotes these figures before and after
each change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

SYMBOLS = ("BTCUSD", "ETHUSD", "LTCUSD")
RESOLUTIONS = ("1", "5", "15", "60", "240", "1D")


def best_cpu_us(fn: Callable[[], Any], n_trades: int, repeat: int, inner: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(inner):
            fn()
        best = min(best, (time.process_time() - t0) / inner / n_trades * 1e6)
    return round(best, 3)


def measure(n_trades: int, repeat: int) -> dict[str, float]:
    import numpy as np

    from loadgen.frames import FrameEncoder, TradePool
    from service.api import streams
    from service.core.bars import fold
    from service.core.models import TradeColumns
    from service.core.resolution import parse_resolution
    from service.runtime.history import SymbolSet
    from service.runtime.hub import Hub
    from service.runtime.ingest import Ingestor
    from service.storage.embedded.store import trades_arrow

    now = int(time.time() * 1000)
    pool = TradePool(SYMBOLS)
    per = n_trades // len(SYMBOLS)
    blocks = [(s, *pool.take(s, per), now) for s in SYMBOLS]
    frames = {fmt: FrameEncoder(SYMBOLS, fmt).encode(blocks) for fmt in ("msgpack", "json")}
    n = per * len(SYMBOLS)
    out: dict[str, float] = {}
    decode_msgpack = streams._trades_msgpack.decode
    decode_json = streams._trades_json.decode
    out["decode_msgpack"] = best_cpu_us(lambda: decode_msgpack(frames["msgpack"]), n, repeat)
    out["decode_json"] = best_cpu_us(lambda: decode_json(frames["json"]), n, repeat)
    trades = decode_msgpack(frames["msgpack"])

    class Writer:
        last_seq = 0

        def submit(self, batches: list[TradeColumns]) -> int:
            self.last_seq += 1
            return self.last_seq

        def pending_last_ts_ns(self, *args: Any) -> None:
            return None

    class Store:
        async def last_ts_ns(self, *args: Any) -> None:
            return None

        async def known_ids(self, *args: Any) -> set[str]:
            return set()

    class NoHub:
        def publish(self, batches: list[TradeColumns], seq: int) -> None:
            pass

    ingestor = Ingestor(
        Store(),
        Writer(),
        NoHub(),
        SymbolSet(SYMBOLS),
        max_batch_trades=10**6,  # type: ignore[arg-type]
        max_future_ms=60_000,
    )
    loop = asyncio.new_event_loop()
    try:
        out["accept"] = best_cpu_us(lambda: loop.run_until_complete(ingestor.accept(trades, now)), n, repeat)
    finally:
        loop.close()

    ts_ns = now * 1_000_000 + np.arange(per, dtype=np.int64)
    batches = [TradeColumns(symbol, ts_ns, price, size) for symbol, price, size, _ in blocks]
    resolutions = [parse_resolution(r) for r in RESOLUTIONS]
    out["fold_6_resolutions"] = best_cpu_us(
        lambda: [fold(r, b.ts_ns, b.price, b.size) for b in batches for r in resolutions], n, repeat
    )
    out["arrow"] = best_cpu_us(lambda: trades_arrow(batches), n, repeat)
    _ = Hub  # the hub's own cost is fold + one offer per subscriber; measured end to end by the loadgen
    out["total"] = round(out["decode_msgpack"] + out["accept"] + out["fold_6_resolutions"] + out["arrow"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trades", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    result = measure(args.trades, args.repeat)
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v:8.3f} µs/trade CPU  ({1e6 / v:,.0f} trades/s per core)" if v else f"{k}: 0")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
