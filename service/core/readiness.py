"""Is the service ready? A pure judgement over numbers the adapters read.

``/health/ready`` answers 503 with every reason when any of these fails:

* the service is starting or stopping, or the store does not answer;
* the data disk is full (``disk full at PATH``: ingest answers 507 meanwhile);
* the process has 90 % of its file descriptors in use (new connections are refused at the
  limit; :mod:`service.core.descriptors`);
* the writer: its last append failed, trades wait only in the spool, or the oldest
  accepted trade not yet in the store has waited longer than
  ``max(writer_lag_s, 3 × flush interval)`` (a long flush interval is not lag);
* downsampling: the last scheduled run failed, a tier reports an error, or a tier's
  lag (now − watermark) exceeds what the plan makes normal plus a slack. A tier's watermark trails the clock by up to its own size on top of its
  source's lag (``wm_T = floor_T(min(wm_source, now − grace))``), and each tier runs at
  most one scheduler period late, so the normal worst case is
  ``grace + Σ(size of the tiers down the chain) + period × chain length``. Not checked
  when nothing schedules runs (embedded store with ``TVFLUX_DOWNSAMPLE_INTERVAL_MS=0``)
  or before a tier's first run.

A backfill after a long outage or a big import counts as lag: the service serves exact
history meanwhile (from lower tiers and raw trades), but slower, and says so here.
"""

from __future__ import annotations

import msgspec

from service.core.models import TierStatus
from service.core.plan import Plan

# Defaults of the thresholds (see docs/deployment.md; settings may override them).
DEFAULT_WRITER_LAG_S = 30.0
DEFAULT_DOWNSAMPLING_SLACK_S = 300.0
# InfluxDB runs the tasks on their own schedules (every 10 s to 1 min, see flux/).
INFLUX_TASK_PERIOD_MS = 60_000


class Thresholds(msgspec.Struct, frozen=True):
    writer_lag_s: float = DEFAULT_WRITER_LAG_S
    downsampling_slack_s: float = DEFAULT_DOWNSAMPLING_SLACK_S


class WriterState(msgspec.Struct, frozen=True):
    pending_rows: int
    oldest_pending_age_s: float
    flush_interval_s: float
    last_error: str | None = None
    spilling: bool = False
    spilled_rows: int = 0
    disk_full: str | None = None  # "disk full at PATH: …" while the data disk refuses writes


class TierLag(msgspec.Struct, frozen=True, rename="camel"):
    tier: str
    lag_ms: int | None
    max_lag_ms: int | None  # None: not checked
    ok: bool


class Verdict(msgspec.Struct, frozen=True, rename="camel"):
    ready: bool
    reasons: list[str]
    store_ok: bool
    writer_max_age_s: float
    tiers: list[TierLag]


def max_tier_lags_ms(plan: Plan, period_ms: int, slack_ms: int) -> dict[str, int]:
    """The largest normal lag of each tier plus ``slack_ms`` (see the module doc)."""
    out = {}
    for tier in plan.tiers:
        chain = plan.chain(tier)
        out[tier.name] = plan.grace_ms + sum(t.size_ms for t in chain) + period_ms * len(chain) + slack_ms
    return out


def scheduler_period_ms(in_database: bool, downsample_interval_ms: int) -> int | None:
    """How often runs happen, or ``None`` when nothing runs them on its own.
    ``in_database``: the store runs the plan on its own schedule (``Store.downsampling_in_database``)."""
    if in_database:
        return max(downsample_interval_ms, INFLUX_TASK_PERIOD_MS)
    return downsample_interval_ms if downsample_interval_ms > 0 else None


def assess(
    *,
    running: bool,
    store_ok: bool,
    store_error: str | None,
    writer: WriterState,
    tiers: list[TierStatus],
    downsampler_error: str | None,
    plan: Plan,
    period_ms: int | None,
    thresholds: Thresholds = Thresholds(),
    descriptors: str | None = None,
) -> Verdict:
    reasons = []
    if not running:
        reasons.append("starting or stopping")
    if descriptors:
        reasons.append(descriptors)
    if writer.disk_full:
        reasons.append(writer.disk_full)
    if not store_ok:
        reasons.append(f"store: {store_error}")
    if writer.last_error:
        reasons.append(f"writer: {writer.last_error}")
    if writer.spilling:
        reasons.append(f"writer: {writer.spilled_rows} trades wait in the spool for the store")
    max_age_s = max(thresholds.writer_lag_s, 3 * writer.flush_interval_s)
    if writer.pending_rows and writer.oldest_pending_age_s > max_age_s:
        reasons.append(
            f"writer: the oldest of {writer.pending_rows} trades has waited "
            f"{writer.oldest_pending_age_s:.0f}s for the store (limit {max_age_s:.0f}s)"
        )
    if downsampler_error:
        reasons.append(f"downsampling: {downsampler_error}")
    limits = (
        max_tier_lags_ms(plan, period_ms, int(thresholds.downsampling_slack_s * 1000)) if period_ms is not None else {}
    )
    lags = []
    for status in tiers:
        limit = limits.get(status.tier)
        ok = limit is None or status.lag_ms is None or status.lag_ms <= limit
        if not ok and limit is not None and status.lag_ms is not None:
            reasons.append(
                f"downsampling: tier {status.tier} is {status.lag_ms / 1000:.0f}s behind (limit {limit / 1000:.0f}s)"
            )
        if status.error:
            reasons.append(f"downsampling: tier {status.tier}: {status.error}")
        lags.append(TierLag(status.tier, status.lag_ms, limit, ok))
    return Verdict(ready=not reasons, reasons=reasons, store_ok=store_ok, writer_max_age_s=max_age_s, tiers=lags)
