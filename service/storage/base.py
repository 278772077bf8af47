"""The store contract both backends implement (``tests/service/storage/test_contract.py``
runs the same tests against each).

A store keeps raw trades, the bar tiers of a :class:`~service.core.plan.Plan` with one
watermark per tier, and answers history by composing tiers exactly:

    bars(symbol, R, [from, to)) = aggregate to R of
        tier T bars in [from, wm_T)                      (T = plan.serving_tier(R))
      ∪ tier source(T) bars in [wm_T, wm_source(T))     … down the chain …
      ∪ raw trades in [wm_first_tier, to)

so history is complete up to the last stored trade whatever the downsampling lag.
Watermarks never decrease and a tier's watermark never passes its source's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from service.core.models import Bar, TierRun, TierStatus, TradeColumns
from service.core.resolution import Resolution


class ChangedWindow(msgspec.Struct, frozen=True):
    """Closed history of ``symbol`` in ``[start_ms, end_ms)`` was rebuilt by a late-data
    recomputation; subscribers of the symbol need a ``reset``."""

    symbol: str
    start_ms: int
    end_ms: int


class RunReport(msgspec.Struct, frozen=True):
    ran: list[TierRun]
    changed: list[ChangedWindow]


class Health(msgspec.Struct, frozen=True):
    ok: bool
    error: str | None = None


class Store(Protocol):
    kind: str

    async def start(self) -> None:
        """Open connections and create what is missing (tables, buckets). Raises
        :class:`~service.core.errors.StoreUnavailable` with a clear message if it cannot."""

    async def close(self) -> None: ...

    async def health(self) -> Health: ...

    async def append(self, batches: Sequence[TradeColumns]) -> None:
        """Store trades: one write for the whole call. Trades older than the first tier's
        watermark mark their windows dirty so the next run rebuilds them."""

    async def bars(self, symbol: str, resolution: Resolution, from_ms: int, to_ms: int) -> list[Bar]:
        """Bars of ``resolution`` whose start is in ``[from_ms, to_ms)``, ascending.
        ``from_ms`` must be aligned to the resolution."""

    async def previous_bar_time(self, symbol: str, resolution: Resolution, before_ms: int) -> int | None:
        """Start of the latest bar of ``resolution`` that starts before ``before_ms``."""

    async def symbols(self) -> list[str]:
        """Symbols that have stored trades."""

    async def last_ts_ns(self, symbol: str, from_ns: int, to_ns: int) -> int | None:
        """Largest stored ``ts_ns`` of ``symbol`` in ``[from_ns, to_ns)``; used to keep
        timestamps unique when a late trade lands in an old millisecond."""

    async def known_ids(self, symbol: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are already stored for ``symbol``."""

    async def downsampling_status(self, now_ms: int) -> list[TierStatus]: ...

    async def run_downsampling(self, now_ms: int, *, max_windows: int | None = None) -> RunReport:
        """Run every tier in plan order until each is at the live edge (or ``max_windows``
        runs were made). Idempotent; concurrent calls are serialised."""
