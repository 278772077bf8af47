"""Runs the downsampling plan every ``interval_ms`` and on request. A store that runs the
plan on its own schedule (``Store.downsampling_in_database``) is only asked for runs now.

Each run brings every tier to the live edge; the store serialises runs, so a manual run
during a scheduled one simply waits for it. Windows rebuilt because of late trades make
the hub send a ``reset`` to the subscribers of those symbols.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from service.core.errors import TvfluxError
from service.core.models import ManualRun
from service.runtime.hub import Hub
from service.runtime.runlog import RunLog
from service.storage.base import RunReport, Store

log = logging.getLogger(__name__)

KEEP_MANUAL_RUNS = 20  # finished manual runs remembered for GET /api/downsampling/runs/{id}


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
        self._manual: dict[str, tuple[ManualRun, asyncio.Event]] = {}  # newest last
        self._manual_task: asyncio.Task[None] | None = None

    async def run_once(self, *, bounded: bool = True) -> RunReport:
        """One run of the plan to the live edge. ``bounded``: within ``timeout_s`` (the
        scheduler's runs); a manual run may take as long as a backfill takes."""
        started = time.perf_counter()
        # The store keeps the deadline: DuckDB rolls the window in progress back, InfluxDB
        # abandons the wait; either raises RunTimeout and the next run retries.
        report = await self.store.run_downsampling(self.clock_ms(), timeout_s=self.timeout_s if bounded else None)
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

    # --- runs asked for (POST /api/downsampling/run) -----------------------------------

    def start_manual(self, before: Callable[[], Awaitable[None]]) -> ManualRun:
        """Start a run in the background (after ``before``, e.g. a writer flush) and return
        it at once; while one is running, asking again returns that one."""
        if self._manual_task is not None and not self._manual_task.done():
            return next(reversed(self._manual.values()))[0]
        run = ManualRun(id=uuid.uuid4().hex[:12], state="running", started_at=self.clock_ms())
        self._manual[run.id] = (run, asyncio.Event())
        while len(self._manual) > KEEP_MANUAL_RUNS:
            del self._manual[next(iter(self._manual))]
        self._manual_task = asyncio.create_task(self._run_manual(run, before), name=f"manual-run-{run.id}")
        return run

    async def _run_manual(self, run: ManualRun, before: Callable[[], Awaitable[None]]) -> None:
        try:
            await before()
            report = await self.run_once(bounded=False)
            run.ran, run.state = report.ran, "done"
        except TvfluxError as exc:
            run.state, run.error = "failed", exc.message
        except Exception as exc:  # noqa: BLE001 - reported on the run, not lost in a task
            log.exception("manual downsampling run %s failed", run.id)
            run.state, run.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            run.finished_at = self.clock_ms()
            self._manual[run.id][1].set()

    def manual(self, run_id: str) -> ManualRun | None:
        found = self._manual.get(run_id)
        return None if found is None else found[0]

    async def wait_manual(self, run_id: str, timeout_s: float) -> ManualRun | None:
        """The run once it is over, or as it stands after ``timeout_s``."""
        found = self._manual.get(run_id)
        if found is None:
            return None
        run, done = found
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout_s)
        return run

    async def close(self) -> None:
        task, self._manual_task = self._manual_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

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
