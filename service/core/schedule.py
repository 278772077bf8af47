"""The scheduler's rules around :meth:`Plan.next_window <service.core.plan.Plan.next_window>`:
which bars late trades touch, which part of a dirty window a run may rebuild and what
it hands on to the tiers built from it, and how far a run over an empty stretch may
move the watermark.

Pure: watermarks, the clock and what the source holds are passed in; the stores turn the
answers into SQL (DuckDB) or write them as markers for the Flux tasks (InfluxDB).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
import numpy as np
import numpy.typing as npt

from service.core.plan import Plan, Tier, Window
from service.core.timestamps import NS_PER_MS


class DirtyWindow(msgspec.Struct, frozen=True):
    """Closed bars of ``tier`` in ``[start_ms, end_ms)`` that must be rebuilt."""

    tier: str
    start_ms: int
    end_ms: int


def late_window(tier: Tier, ts_ns: npt.NDArray[np.int64], edge_ms: int) -> Window | None:
    """The bars of ``tier`` that trades at ``ts_ns`` older than ``edge_ms`` fall in (from the
    bar of the earliest to the end of the bar of the latest), or ``None`` if none is.

    ``edge_ms`` is where the tier may already be final: its watermark when the store knows
    it at write time (DuckDB), else ``Plan.edge_ms`` at the write's clock (InfluxDB)."""
    late = ts_ns[ts_ns < edge_ms * NS_PER_MS]
    if not late.size:
        return None
    return Window(tier.floor(int(late.min()) // NS_PER_MS), tier.floor(int(late.max()) // NS_PER_MS) + tier.size_ms)


def closed_part(tier: Tier, start_ms: int, end_ms: int, watermark_ms: int | None) -> Window:
    """The part of the dirty span ``[start_ms, end_ms)`` a run of ``tier`` rebuilds: whole
    bars, and only below the watermark (the rest is the next regular window's). May be
    empty (``end_ms <= start_ms``): then there is nothing to rebuild, only to hand on."""
    start = tier.floor(start_ms)
    end = min(tier.floor(end_ms - 1) + tier.size_ms, watermark_ms if watermark_ms is not None else start)
    return Window(start, end)


def dirty_dependents(
    plan: Plan, tier: Tier, rebuilt: Window, watermarks: Mapping[str, int | None]
) -> list[DirtyWindow]:
    """What rebuilding ``rebuilt`` in ``tier`` makes dirty in the tiers built from it: their
    bars over the same span, below their own watermarks (a tier that never ran, or whose
    watermark is not past the span, will build those bars in a regular run anyway)."""
    out: list[DirtyWindow] = []
    if rebuilt.end_ms <= rebuilt.start_ms:
        return out
    for dep in plan.dependents(tier.name):
        dep_wm = watermarks.get(dep.name)
        if dep_wm is not None and rebuilt.start_ms < dep_wm:
            out.append(
                DirtyWindow(
                    dep.name, dep.floor(rebuilt.start_ms), min(dep_wm, dep.floor(rebuilt.end_ms - 1) + dep.size_ms)
                )
            )
    return out


def watermark_after(
    plan: Plan,
    tier: Tier,
    window: Window,
    *,
    source_has_rows: bool,
    next_source_ms: int | None,
    source_watermark_ms: int | None,
    now_ms: int,
) -> int:
    """The watermark a run of ``window`` leaves behind. Normally ``window.end_ms``; when the
    window held no source rows, it jumps over the gap to the bar of the next source row
    (``next_source_ms``, at or after ``window.end_ms``), never past the tier's edge, instead
    of walking an empty stretch (e.g. after a lone old trade) chunk by chunk."""
    if source_has_rows:
        return window.end_ms
    edge = plan.edge_ms(tier, source_watermark_ms=source_watermark_ms, now_ms=now_ms)
    return max(window.end_ms, edge if next_source_ms is None else min(edge, tier.floor(next_source_ms)))
