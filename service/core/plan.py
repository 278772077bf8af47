"""The downsampling plan: which bar tiers are stored, what each is built from, and how
an incremental run picks its window.

Pure: the current time is always an argument. Both stores run the same plan: DuckDB by
the service's own scheduler (:mod:`service.runtime.downsampler`), InfluxDB by Flux tasks rendered
from it (:mod:`service.storage.influx.flux_render`).
"""

from __future__ import annotations

import re

import msgspec

from service.core.errors import ConfigError
from service.core.resolution import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS, Resolution

RAW = "trades"  # the source name of the first tier

_UNIT_MS = {"s": SECOND_MS, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS}

# Backfill chunk per tier: big enough that a run is worth its overhead, small enough that a
# run over a year of 50M trades stays well under a second of work per chunk.
DEFAULT_CHUNK_MS = {
    "1m": 1 * DAY_MS,
    "5m": 3 * DAY_MS,
    "15m": 7 * DAY_MS,
    "1h": 14 * DAY_MS,
    "4h": 30 * DAY_MS,
    "1d": 90 * DAY_MS,
}
# InfluxDB's tasks size a run by its work instead: up to this many source rows (trades for
# the first tier, bars of the source tier above it), within the tier's ``span_ms``. A task
# run has a fixed cost of about a second (InfluxDB's scheduler starts queued runs on a
# one-second tick) and writes ~100k field values a second on 2 cores, so few big runs
# beat many small ones: 2M trades is ~6 s of work, the live edge a few ms.
DEFAULT_RUN_ROWS = 2_000_000
DEFAULT_SPAN_MS = {
    "1m": 31 * DAY_MS,
    "5m": 92 * DAY_MS,
    "15m": 183 * DAY_MS,
    "1h": 366 * DAY_MS,
    "4h": 732 * DAY_MS,
    "1d": 3660 * DAY_MS,
}
DEFAULT_TIERS = ("1m", "5m", "15m", "1h", "4h", "1d")
DEFAULT_LOOKBACK_MS = 5 * MINUTE_MS
DEFAULT_GRACE_MS = 5 * SECOND_MS


class Tier(msgspec.Struct, frozen=True):
    """One stored bar tier. ``source`` is :data:`RAW` or the name of another tier."""

    name: str
    size_ms: int
    source: str
    chunk_ms: int  # the span of one run of the service's downsampler (the embedded store)
    # the longest span of one InfluxDB task run, which stops earlier at Plan.run_rows;
    # 0: chunk_ms
    span_ms: int = 0

    def floor(self, t_ms: int) -> int:
        return t_ms // self.size_ms * self.size_ms

    @property
    def task_span_ms(self) -> int:
        return self.span_ms or self.chunk_ms

    @property
    def probe_ms(self) -> int:
        """The windows a task counts its source rows in, to size a run: a whole number of
        bars, at least an hour (cheap to count, fine enough to stop near the budget)."""
        return -(-HOUR_MS // self.size_ms) * self.size_ms


class Window(msgspec.Struct, frozen=True):
    """What one run of a tier does: rebuild bars in ``[start_ms, end_ms)``, then set the
    watermark to ``end_ms``. ``start_ms`` lies before the old watermark by the lookback."""

    start_ms: int
    end_ms: int


class Plan(msgspec.Struct, frozen=True):
    tiers: tuple[Tier, ...]
    lookback_ms: int = DEFAULT_LOOKBACK_MS
    # Trades may reach the store this long after their time (writer batching); a tier
    # fed by raw trades never closes bars younger than this.
    grace_ms: int = DEFAULT_GRACE_MS
    # the source rows one InfluxDB task run reads at most (see DEFAULT_RUN_ROWS)
    run_rows: int = DEFAULT_RUN_ROWS

    def tier(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(name)

    def serving_tier(self, resolution: Resolution) -> Tier | None:
        """The largest stored tier whose buckets tile ``resolution`` exactly, or ``None``
        when only raw trades can build it (second resolutions)."""
        best = None
        for tier in self.tiers:
            if resolution.is_multiple_of(tier.size_ms) and (best is None or tier.size_ms > best.size_ms):
                best = tier
        return best

    def chain(self, tier: Tier) -> list[Tier]:
        """``tier`` followed by its source, the source's source, … down to the first tier."""
        out = [tier]
        while out[-1].source != RAW:
            out.append(self.tier(out[-1].source))
        return out

    def dependents(self, name: str) -> list[Tier]:
        """Tiers built (directly) from tier ``name``."""
        return [t for t in self.tiers if t.source == name]

    def edge_ms(self, tier: Tier, *, source_watermark_ms: int | None, now_ms: int) -> int:
        """How far ``tier`` may be final now: its source's watermark (raw trades: the
        clock less the grace), floored to the tier."""
        edge = now_ms - self.grace_ms
        if tier.source != RAW and source_watermark_ms is not None:
            edge = min(edge, source_watermark_ms)
        return tier.floor(edge)

    def next_window(
        self,
        tier: Tier,
        *,
        watermark_ms: int | None,
        source_watermark_ms: int | None,
        earliest_ms: int | None,
        now_ms: int,
        span_ms: int | None = None,
    ) -> Window | None:
        """The window of the next run of ``tier``, or ``None`` when it is up to date.

        ``source_watermark_ms`` is the source tier's watermark (``None`` for a tier fed by
        raw trades, whose edge is ``now - grace``). ``earliest_ms`` is the time of the
        earliest source row, used by the first run (backfill starts there). ``span_ms``:
        the longest window (default ``tier.chunk_ms``; InfluxDB's tasks pass
        ``tier.task_span_ms`` and then stop at :meth:`sized_end_ms`).
        """
        chunk_ms = tier.chunk_ms if span_ms is None else span_ms
        if tier.source != RAW and source_watermark_ms is None:
            return None  # the source tier has produced nothing final yet
        limit = self.edge_ms(tier, source_watermark_ms=source_watermark_ms, now_ms=now_ms)
        if watermark_ms is None:
            if earliest_ms is None:
                return None
            start = tier.floor(earliest_ms)
            if limit <= start:
                return None
            return Window(start, min(limit, start + chunk_ms))
        if limit <= watermark_ms:
            return None
        start = tier.floor(watermark_ms - self.lookback_ms)
        return Window(start, min(limit, watermark_ms + chunk_ms))

    def sized_end_ms(
        self,
        tier: Tier,
        window: Window,
        *,
        watermark_ms: int | None,
        limit_ms: int,
        crossing_ms: int | None,
        next_row_ms: int | None,
        last_row_ms: int | None,
    ) -> int:
        """Where an InfluxDB task run over ``window`` (from :meth:`next_window` with
        ``tier.task_span_ms``) stops, sized by its work.

        ``crossing_ms``: the start of the first probe window (:attr:`Tier.probe_ms`) whose
        source rows take the count since ``window.start_ms`` past :attr:`run_rows`
        (``None``: the window stays under it); the run stops there, but always covers the
        probe window holding the watermark, so it progresses however dense the data.
        ``next_row_ms``: the first source row at or after ``window.start_ms`` before
        ``limit_ms`` (:meth:`edge_ms`), ``None`` for none, and ``last_row_ms`` the last one:
        a window holding no row skips the empty span up to that row's bar (or the limit) in
        one go, and a window under the budget holding the last row extends to the limit."""
        if next_row_ms is None or next_row_ms >= window.end_ms:
            skip_to = limit_ms if next_row_ms is None else min(limit_ms, tier.floor(next_row_ms))
            return max(window.end_ms, skip_to)
        if crossing_ms is None:
            return limit_ms if last_row_ms is not None and last_row_ms < window.end_ms else window.end_ms
        probe = tier.probe_ms
        least = max(window.start_ms, -1 if watermark_ms is None else watermark_ms) // probe * probe + probe
        return min(window.end_ms, max(crossing_ms, least))


def parse_tier_size_ms(name: str) -> int:
    match = re.fullmatch(r"([1-9][0-9]*)([smhd])", name)
    if not match:
        raise ValueError(f"tier {name!r} is not <count><s|m|h|d>")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def build_plan(
    tier_names: tuple[str, ...] | list[str] = DEFAULT_TIERS,
    *,
    lookback_ms: int = DEFAULT_LOOKBACK_MS,
    grace_ms: int = DEFAULT_GRACE_MS,
    run_rows: int = DEFAULT_RUN_ROWS,
) -> Plan:
    """Build a plan: each tier is computed from the largest earlier tier that divides it,
    the first from raw trades. Raises :class:`ConfigError` listing every problem."""
    problems: list[str] = []
    sizes: list[tuple[str, int]] = []
    for name in tier_names:
        try:
            size = parse_tier_size_ms(name)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if DAY_MS % size and size % DAY_MS:
            problems.append(f"tier {name!r} neither divides nor is a multiple of a day")
        sizes.append((name, size))
    if not sizes and not problems:
        problems.append("the plan needs at least one tier")
    ordered = sorted(sizes, key=lambda item: item[1])
    if [s for _, s in ordered] != sorted({s for _, s in ordered}):
        problems.append("tiers must have distinct sizes")
    tiers: list[Tier] = []
    for name, size in ordered:
        sources = [t for t in tiers if size % t.size_ms == 0]
        source = max(sources, key=lambda t: t.size_ms).name if sources else RAW
        if source == RAW and tiers:
            problems.append(f"tier {name!r} is not a multiple of any smaller tier")
        # Unknown tiers get ~1440 bars per chunk, at least a day.
        chunk = DEFAULT_CHUNK_MS.get(name, max(DAY_MS, size * 1440 // DAY_MS * DAY_MS or DAY_MS))
        span = DEFAULT_SPAN_MS.get(name, chunk * 30)
        tiers.append(Tier(name=name, size_ms=size, source=source, chunk_ms=chunk, span_ms=span))
    if lookback_ms < 0:
        problems.append("lookback must be >= 0")
    if grace_ms < 0:
        problems.append("grace must be >= 0")
    if run_rows < 1:
        problems.append("run rows must be >= 1")
    if problems:
        raise ConfigError(problems)
    return Plan(tiers=tuple(tiers), lookback_ms=lookback_ms, grace_ms=grace_ms, run_rows=run_rows)


def default_plan() -> Plan:
    return build_plan(DEFAULT_TIERS)
