"""Each tier's recent downsampling runs, and how fast a backfill advances.

The stores keep only a tier's *last* run. :class:`RunLog` keeps, in memory and bounded,
the last :data:`RUNS_KEPT` runs per tier (when it ended, its window, rows, duration,
error) and samples of each tier's watermark over the last :data:`RATE_WINDOW_MS`. From
the samples, a tier that is far behind the live edge (a backfill: first start on a large
store, after an import, after an outage) gets its progress and an expected finish: the
rate at which its watermark advanced recently, projected over the lag left. Pure: times
are passed in. Resets with the process (``/api/downsampling`` says since when).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import msgspec

from service.core.models import Backfill, RunRecord, TierRun, TierStatus
from service.core.plan import parse_tier_size_ms

RUNS_KEPT = 20
RATE_WINDOW_MS = 60_000  # the watermark's advance rate is measured over this much wall time
MIN_RATE_SPAN_MS = 1_000  # ... once it spans at least this much
BACKFILL_SLACK_MS = 10 * 60_000  # behind by more than 2 tier periods + this: a backfill


class RunLog:
    """Per tier, created on first sight of the tier (the plan's tiers: a handful)."""

    def __init__(self) -> None:
        self._runs: dict[str, deque[RunRecord]] = {}
        self._samples: dict[str, deque[tuple[int, int]]] = {}
        self._origin: dict[str, int] = {}  # the lowest watermark (or window start) seen: where a backfill began
        self.bars_written: dict[str, int] = {}  # per tier, by this process's runs (a counter for /metrics)

    def _tier(self, tier: str) -> deque[RunRecord]:
        runs = self._runs.get(tier)
        if runs is None:
            runs = self._runs[tier] = deque(maxlen=RUNS_KEPT)
            self._samples[tier] = deque()
        return runs

    def record(self, ran: Iterable[TierRun], now_ms: int) -> None:
        for run in ran:
            self.bars_written[run.tier] = self.bars_written.get(run.tier, 0) + run.rows
            self._tier(run.tier).append(
                RunRecord(now_ms, run.from_ms, run.to_ms, run.rows, round(run.duration_ms, 3), None)
            )
            if run.from_ms is not None:
                self._origin[run.tier] = min(self._origin.get(run.tier, run.from_ms), run.from_ms)
            if run.to_ms is not None:
                self._sample(run.tier, now_ms, run.to_ms)

    def record_failure(self, message: str, now_ms: int) -> None:
        """A run that failed as a whole: every tier's log says so (the store's status says
        which tier, when it knows)."""
        for runs in self._runs.values():
            runs.append(RunRecord(now_ms, None, None, 0, None, message))

    def observe(self, tiers: Iterable[TierStatus], now_ms: int) -> None:
        """Watermarks as a status read found them (also during a long run: each window
        commits its watermark)."""
        for t in tiers:
            self._tier(t.tier)
            if t.watermark is not None:
                self._sample(t.tier, now_ms, t.watermark)

    def _sample(self, tier: str, now_ms: int, watermark: int) -> None:
        samples = self._samples[tier]
        self._origin[tier] = min(self._origin.get(tier, watermark), watermark)
        if samples and samples[-1][0] == now_ms:
            samples.pop()
        samples.append((now_ms, watermark))
        while len(samples) > 2 and samples[1][0] <= now_ms - RATE_WINDOW_MS:
            samples.popleft()

    def runs(self, tier: str) -> list[RunRecord]:
        """Most recent first."""
        return list(reversed(self._runs.get(tier, ())))

    def backfill(self, status: TierStatus, now_ms: int) -> Backfill | None:
        """Progress of a tier that is far behind, or ``None`` when it follows the edge."""
        if status.watermark is None or status.lag_ms is None:
            return None
        try:
            size = parse_tier_size_ms(status.tier)
        except ValueError:
            size = 86_400_000
        if status.lag_ms <= 2 * size + BACKFILL_SLACK_MS:
            return None
        edge = status.watermark + status.lag_ms
        origin = min(self._origin.get(status.tier, status.watermark), status.watermark)
        progress = (status.watermark - origin) / (edge - origin) if edge > origin else 0.0
        rate = None
        samples = self._samples.get(status.tier)
        if samples and len(samples) >= 2:
            (t0, w0), (t1, w1) = samples[0], samples[-1]
            if t1 - t0 >= MIN_RATE_SPAN_MS and w1 > w0:
                rate = (w1 - w0) / (t1 - t0)  # ms of data per ms of wall time
        finish = None if rate is None else now_ms + round(status.lag_ms / rate)
        return Backfill(
            progress=round(max(0.0, min(1.0, progress)), 4),
            from_ms=origin,
            to_ms=edge,
            range_per_s=None if rate is None else round(rate * 1000),
            expected_finish=finish,
        )

    def annotate(self, tiers: list[TierStatus], now_ms: int) -> list[TierStatus]:
        """``tiers`` with their recent runs and, when behind, their backfill progress."""
        self.observe(tiers, now_ms)
        return [self._with_last_run(t, self.runs(t.tier), now_ms) for t in tiers]

    def _with_last_run(self, status: TierStatus, runs: list[RunRecord], now_ms: int) -> TierStatus:
        """``lastRun`` is the newest run of either kind: a store may record only the runs that
        advance the watermark, not the rebuilds of closed windows late or deleted trades
        touched, which this log lists too."""
        out = msgspec.structs.replace(status, recent_runs=runs, backfill=self.backfill(status, now_ms))
        newest = next((r for r in runs if r.error is None), None)
        if newest is not None and (status.last_run is None or newest.time > status.last_run):
            out = msgspec.structs.replace(
                out, last_run=newest.time, last_duration_ms=newest.duration_ms, rows=newest.rows
            )
        return out
