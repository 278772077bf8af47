"""Runs the downsampling plan every ``interval_ms`` and on request. A store that runs the
plan on its own schedule (``Store.downsampling_in_database``) is only asked for runs now.

Each run brings every tier to the live edge; the store serialises runs, so a manual run
during a scheduled one simply waits for it. Windows rebuilt because of late trades make
the hub send a ``reset`` to the subscribers of those symbols.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from service.core.errors import TvfluxError
from service.runtime.hub import Hub
from service.runtime.runlog import RunLog
from service.storage.base import RunReport, Store

log = logging.getLogger(__name__)


class Downsampler:
    def __init__(
        self, store: Store, hub: Hub, *, interval_ms: int, clock_ms: Callable[[], int], timeout_s: float = 120.0
    ) -> None:
        self.store = store
        self.hub = hub
        self.on_changed: list[Callable[[str], None]] = []  # symbols whose closed history a run rebuilt
        self.interval_s = interval_ms / 1000
        self.clock_ms = clock_ms
        self.timeout_s = timeout_s
        self.last_error: str | None = None
        self.runs = 0
        self.last_run_duration_s: float | None = None
        self.runlog = RunLog()  # each tier's recent runs and backfill progress, for /api/downsampling

    async def run_once(self) -> RunReport:
        started = time.perf_counter()
        # The store keeps the deadline: DuckDB rolls the window in progress back, InfluxDB
        # abandons the wait; either raises RunTimeout and the next run retries.
        report = await self.store.run_downsampling(self.clock_ms(), timeout_s=self.timeout_s)
        self.runs += 1
        self.last_run_duration_s = time.perf_counter() - started
        self.last_error = None
        self.runlog.record(report.ran, self.clock_ms())
        for window in report.changed:
            for hook in self.on_changed:
                hook(window.symbol)
            self.hub.reset_symbol(window.symbol)
        if len(report.ran) > 10:
            log.info("downsampling caught up %d windows in %.1fs", len(report.ran), self.last_run_duration_s)
        return report

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except TvfluxError as exc:
                if self.last_error != exc.message:
                    log.warning("downsampling failed: %s", exc.message)
                self.last_error = exc.message
                self.runlog.record_failure(exc.message, self.clock_ms())
            await asyncio.sleep(self.interval_s)
