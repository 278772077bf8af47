"""``tvflux downsample``, and the end of ``tvflux import``: run the downsampling plan
until every tier is at the live edge, with a progress bar, then print where each tier
stands."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from service.ops.console import Progress
from service.runtime.clock import now_ms
from service.storage.base import Store

# For the progress bar only: a tier this close to now counts as caught up (the 1d tier
# normally trails by up to a day and a bit).
CAUGHT_UP_LAG_MS = 2 * 86_400_000
# Windows per run: small enough for the progress bar to move during a long backfill.
WINDOWS_PER_RUN = 20


async def run_to_edge(store: Store, *, clock_ms: Callable[[], int] = now_ms) -> int:
    """Run the plan on a started ``store`` until a run finds nothing to do; returns the
    number of windows run."""
    started = time.perf_counter()
    progress: Progress | None = None
    windows = 0
    while True:
        report = await store.run_downsampling(clock_ms(), max_windows=WINDOWS_PER_RUN)
        windows += len(report.ran)
        status = await store.downsampling_status(clock_ms())
        if progress is None:
            progress = Progress("downsample", len(status), "tiers at the edge", rate=False)
        progress.update(sum(1 for s in status if s.lag_ms is not None and s.lag_ms < CAUGHT_UP_LAG_MS))
        if not report.ran:
            break
    progress.finish(len(status))
    for s in status:
        wm = "-" if s.watermark is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.watermark / 1000))
        print(f"{s.tier:>4} watermark {wm} UTC" + ("" if s.bars is None else f"  bars {s.bars:,}"), file=sys.stderr)
    print(f"downsampling: {windows} windows run in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return windows
