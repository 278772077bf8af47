"""Which stored rows answer a history request: the composition rule of
:mod:`service.storage.base`, once, for both stores (they only turn segments into SQL or
Flux)::

    tier T bars in [from, wm_T) ∪ source(T) bars in [wm_T, wm_source) ∪ … ∪ raw in [wm_first, to)

Every boundary is a watermark, aligned to its tier and so to every smaller tier of the
chain: each trade is counted exactly once. Pure: watermarks are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from service.core.plan import Plan, Tier
from service.core.resolution import Resolution


class Segment(msgspec.Struct, frozen=True):
    """Rows in ``[start_ms, stop_ms)`` from tier ``tier`` (stored bars), or from raw trades
    when ``tier`` is ``None``; a store that aggregates raw trades before composing them
    (InfluxDB) buckets them by ``every_ms``, which divides the requested resolution."""

    start_ms: int
    stop_ms: int
    tier: str | None = None
    every_ms: int | None = None


def history_segments(
    plan: Plan,
    resolution: Resolution,
    from_ms: int,
    to_ms: int,
    watermarks: Mapping[str, int | None],
    dirty_span: tuple[int, int] | None = None,
) -> list[Segment]:
    """The segments covering ``[from_ms, to_ms)`` for bars of ``resolution``, oldest first.

    ``dirty_span``: the envelope ``[lo, hi)`` of the symbol's closed windows that late trades
    touched and no run has rebuilt yet (a store that tracks it); that span, widened to the
    serving tier's grid so the tier pieces around it stay whole bars, is read from raw
    trades until a run rebuilds it.
    """
    if to_ms <= from_ms:
        return []
    tier = plan.serving_tier(resolution)
    if tier is None:  # second resolutions: no tier divides them
        assert resolution.size_ms is not None  # months are always served by a day divisor
        return [Segment(from_ms, to_ms, None, resolution.size_ms)]
    if dirty_span is None or dirty_span[1] <= from_ms or dirty_span[0] >= to_ms:
        return _clean(plan, tier, from_ms, to_ms, watermarks)
    lo = max(from_ms, tier.floor(dirty_span[0]))
    hi = min(to_ms, tier.floor(dirty_span[1] - 1) + tier.size_ms)
    raw_every_ms = plan.chain(tier)[-1].size_ms
    return (
        _clean(plan, tier, from_ms, lo, watermarks)
        + [Segment(lo, hi, None, raw_every_ms)]
        + _clean(plan, tier, hi, to_ms, watermarks)
    )


def _clean(plan: Plan, tier: Tier, from_ms: int, to_ms: int, watermarks: Mapping[str, int | None]) -> list[Segment]:
    segments: list[Segment] = []
    cursor = from_ms
    chain = plan.chain(tier)
    for link in chain:
        wm = watermarks.get(link.name)
        if wm is None:
            continue
        end = min(wm, to_ms)
        if end > cursor:
            segments.append(Segment(cursor, end, link.name))
            cursor = end
    if to_ms > cursor:
        segments.append(Segment(cursor, to_ms, None, chain[-1].size_ms))
    return segments
