"""Trade corrections: the one use case behind ``DELETE /api/trades`` and ``tvflux trades
delete``.

A correction removes trades of one symbol by id, by time range, or both (the ids within the
range). The store deletes them and marks the windows they were in dirty, so the next
downsampling run rebuilds every tier from what is left (:meth:`Store.delete_trades`); then
the correction is recorded in the audit log (``audit.jsonl`` in the data directory, see
:mod:`service.runtime.audit`) before anyone is told it is done.

On a running node the live parts must agree with the store, so :class:`LiveParts` are
given: what was accepted reaches the store first (nothing deleted comes back from the
writer), the deleted ids are forgotten by the duplicate filter (posting one again stores
it again), caches of closed history are dropped, and the live series of the symbol are
rebuilt, their subscribers reset. The CLI, which opens the store itself only when no
service holds it, has no live parts: the next start reads the corrected store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio.to_thread
import msgspec

from service.core.errors import StoreUnavailable
from service.core.models import TradeColumns
from service.core.timestamps import NS_PER_MS
from service.runtime.audit import AuditEntry, AuditLog
from service.runtime.clock import now_ms
from service.runtime.hub import Hub
from service.runtime.ingest import Ingestor
from service.runtime.writer import TradeWriter
from service.storage.base import Deletion, Store

FLUSH_TIMEOUT_S = 10.0  # how long a correction waits for the writer before checking what is left


class Correction(msgspec.Struct, frozen=True):
    """One correction as asked for: ``ids`` and/or the range ``[from_ms, to_ms)`` (epoch ms,
    both or neither), by ``who`` (the credential and client address, or the CLI), with
    what the client said it is (``actor``)."""

    symbol: str
    who: str
    ids: list[str] | None = None
    from_ms: int | None = None
    to_ms: int | None = None
    actor: str | None = None

    @property
    def from_ns(self) -> int | None:
        return None if self.from_ms is None else self.from_ms * NS_PER_MS

    @property
    def to_ns(self) -> int | None:
        return None if self.to_ms is None else self.to_ms * NS_PER_MS

    def touches(self, batch: TradeColumns) -> bool:
        """Whether ``batch`` (trades of the symbol) holds a trade this correction deletes."""
        hit = batch.ids is not None and self.ids is not None and bool(set(self.ids) & set(batch.ids))
        lo, hi = self.from_ns, self.to_ns
        if lo is not None and hi is not None:
            hit = hit or bool(((batch.ts_ns >= lo) & (batch.ts_ns < hi)).any())
        return hit


@dataclass(frozen=True)
class LiveParts:
    """What a running node keeps of the stored trades, which a correction must update."""

    writer: TradeWriter
    ingestor: Ingestor
    hub: Hub
    on_changed: Sequence[Callable[[str], None]]  # caches of a symbol's closed history


async def delete_trades(
    store: Store,
    audit: AuditLog,
    correction: Correction,
    *,
    live: LiveParts | None = None,
    clock_ms: Callable[[], int] = now_ms,
) -> Deletion:
    """Delete the trades ``correction`` names from the started ``store``, keep ``live``
    parts (if any) in step, and append the audit entry. Raises
    :class:`~service.core.errors.StoreUnavailable` while trades of the correction still wait
    for the store (retry shortly)."""
    symbol = correction.symbol
    if live is not None:
        with contextlib.suppress(asyncio.TimeoutError):
            # shield: a timed-out wait must not cancel an append half-way
            await asyncio.wait_for(asyncio.shield(live.writer.flush()), timeout=FLUSH_TIMEOUT_S)
        if any(correction.touches(batch) for batch in live.writer.pending_for(symbol)):
            raise StoreUnavailable("trades of this correction still wait for the store; retry shortly")
    deletion = await store.delete_trades(symbol, ids=correction.ids, from_ns=correction.from_ns, to_ns=correction.to_ns)
    if live is not None:
        if correction.ids:
            live.ingestor.forget(symbol, correction.ids)
        for hook in live.on_changed:
            hook(symbol)
        await live.hub.rebuild_symbol(symbol)
    entry = AuditEntry(
        time=clock_ms(),
        who=correction.who,
        action="delete_trades",
        symbol=symbol,
        deleted=deletion.deleted,
        ids=correction.ids,
        from_ms=correction.from_ms,
        to_ms=correction.to_ms,
        actor=correction.actor,
    )
    await anyio.to_thread.run_sync(audit.append, entry)
    return deletion
