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
DEFAULT_TIERS = ("1m", "5m", "15m", "1h", "4h", "1d")
DEFAULT_LOOKBACK_MS = 5 * MINUTE_MS
DEFAULT_GRACE_MS = 5 * SECOND_MS


class Tier(msgspec.Struct, frozen=True):
    """One stored bar tier. ``source`` is :data:`RAW` or the name of another tier."""

    name: str
    size_ms: int
    source: str
    chunk_ms: int

    def floor(self, t_ms: int) -> int:
        return t_ms // self.size_ms * self.size_ms


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
    ) -> Window | None:
        """The window of the next run of ``tier``, or ``None`` when it is up to date.

        ``source_watermark_ms`` is the source tier's watermark (``None`` for a tier fed by
        raw trades, whose edge is ``now - grace``). ``earliest_ms`` is the time of the
        earliest source row, used by the first run (backfill starts there).
        """
        if tier.source != RAW and source_watermark_ms is None:
            return None  # the source tier has produced nothing final yet
        limit = self.edge_ms(tier, source_watermark_ms=source_watermark_ms, now_ms=now_ms)
        if watermark_ms is None:
            if earliest_ms is None:
                return None
            start = tier.floor(earliest_ms)
            if limit <= start:
                return None
            return Window(start, min(limit, start + tier.chunk_ms))
        if limit <= watermark_ms:
            return None
        start = tier.floor(watermark_ms - self.lookback_ms)
        return Window(start, min(limit, watermark_ms + tier.chunk_ms))


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
        tiers.append(Tier(name=name, size_ms=size, source=source, chunk_ms=chunk))
    if lookback_ms < 0:
        problems.append("lookback must be >= 0")
    if grace_ms < 0:
        problems.append("grace must be >= 0")
    if problems:
        raise ConfigError(problems)
    return Plan(tiers=tuple(tiers), lookback_ms=lookback_ms, grace_ms=grace_ms)


def default_plan() -> Plan:
    return build_plan(DEFAULT_TIERS)
