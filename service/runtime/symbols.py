"""The symbol registry: which symbols are listed, with their metadata, kept in the store
(:meth:`Store.symbol_specs`) and in the :class:`~service.runtime.history.SymbolSet` that
ingest, history and live bars consult.

Every change goes through :class:`SymbolRegistry` — the admin API, ``tvflux symbols``,
bulk history that brings a new symbol, and trade sources (an exchange feed registers the
venue's tick size with :meth:`SymbolRegistry.upsert`): it is saved in the store, applied
to the listed set at once, recorded in the audit log, and a removal ends the open
subscriptions of the symbol with an ``error`` (``unknown_symbol``).

At start (:meth:`SymbolRegistry.load`) the listed set is the store's registry, plus the
``TVFLUX_SYMBOLS`` it lacks (or had removed: configuration wins), plus symbols found with
stored trades that the registry has never seen (an offline import, a store from before
the registry). A removed symbol keeps a tombstone, so its kept trades do not list it again.
Symbols in ``TVFLUX_SYMBOLS`` cannot be removed (the next start would list them again):
they are taken out of the setting instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import anyio.to_thread
import msgspec

from service.core.errors import Conflict, StoreUnavailable, UnknownSymbol
from service.core.models import ErrorBody
from service.core.symbols import SymbolRecord, SymbolRequest, SymbolSpec, apply_request, record
from service.runtime.audit import AuditEntry, AuditLog
from service.runtime.history import SymbolSet
from service.runtime.writer import TradeWriter
from service.storage.base import Store

log = logging.getLogger(__name__)

FLUSH_WAIT_S = 10.0
# What the registry tells the rest of the process when a symbol goes (hub, ingest, caches).
OnRemoved = Callable[[str, ErrorBody], object]
OnPurged = Callable[[str], Awaitable[None] | None]


class SymbolRegistry:
    def __init__(
        self,
        store: Store,
        symbols: SymbolSet,
        *,
        configured: tuple[str, ...],
        audit: AuditLog,
        clock_ms: Callable[[], int],
        writer: TradeWriter | None = None,
    ) -> None:
        self.store = store
        self.symbols = symbols
        self.configured = configured
        self.audit = audit
        self.clock_ms = clock_ms
        self.writer = writer
        self.on_removed: list[OnRemoved] = []  # called at once, before the store is touched
        self.on_purged: list[OnPurged] = []  # after a symbol's data was deleted
        self._records: dict[str, SymbolSpec] = {}  # the store's registry, tombstones included
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Read the store's registry and list what it says (see the module doc)."""
        async with self._lock:
            self._records = {s.symbol: s for s in await self.store.symbol_specs()}
            now = self.clock_ms()
            for name in self.configured:
                spec = self._records.get(name)
                if spec is None or not spec.listed:
                    base = spec if spec is not None else SymbolSpec(symbol=name)
                    await self._save(msgspec.structs.replace(base, added_ms=now, removed_ms=None))
            for name in await self.store.symbols():
                if name not in self._records:
                    await self._save(SymbolSpec(symbol=name, added_ms=now))
            self.symbols.replace([s for s in self._records.values() if s.listed])

    def records(self) -> list[SymbolSpec]:
        """Listed and removed symbols, by name."""
        return sorted(self._records.values(), key=lambda s: s.symbol)

    def is_configured(self, symbol: str) -> bool:
        return symbol in self.configured

    async def listing(self) -> list[SymbolRecord]:
        """Every record, removed ones included, with where its stored trades begin and end
        (one bounded store read per end and symbol)."""
        return [
            record(
                spec, configured=self.is_configured(spec.symbol), trade_span_ns=await self.store.trade_span(spec.symbol)
            )
            for spec in self.records()
        ]

    async def upsert(self, request: SymbolRequest, *, who: str, actor: str | None = None) -> SymbolSpec:
        """Add ``request.symbol``, or update its metadata (fields it leaves out stay): saved,
        listed at once, audited. The one call for code that registers symbols (an exchange
        source with the venue's tick size), as for the admin API."""
        async with self._lock:
            existing = self._records.get(request.symbol)
            spec = apply_request(request, existing, self.clock_ms())
            if spec == existing:
                return spec
            await self._save(spec)
            self.symbols.put(spec)
        action = "add_symbol" if existing is None or not existing.listed else "update_symbol"
        await self._audit(action, spec.symbol, who=who, actor=actor, spec=spec)
        log.info("symbol %s: %s by %s", spec.symbol, action.replace("_symbol", "ed"), who)
        return spec

    async def ensure(self, symbols: list[str], *, who: str) -> None:
        """List these symbols with default metadata where they are not listed yet (bulk
        history welcomes new symbols); a listed one is left as it is."""
        for name in symbols:
            if name not in self.symbols:
                await self.upsert(SymbolRequest(symbol=name), who=who)

    async def remove(self, symbol: str, *, purge: bool, who: str, actor: str | None = None) -> int:
        """Unlist ``symbol`` at once (ingest refuses it, open subscriptions get an error),
        remember the removal in the store, and with ``purge`` delete its stored trades and
        bars too (after the writer has stored what was accepted for it). Returns the trades
        deleted. A removed symbol may be removed again with ``purge`` to delete its data."""
        if symbol in self.configured:
            raise Conflict(
                f"{symbol} is in TVFLUX_SYMBOLS, which lists it again at every start: take it out of "
                "TVFLUX_SYMBOLS (and restart) to remove it",
                details={"symbol": symbol},
            )
        async with self._lock:
            record = self._records.get(symbol)
            if record is None or (not record.listed and not purge):
                raise UnknownSymbol(f"unknown symbol {symbol!r}", details={"symbol": symbol})
            if record.listed:
                self.symbols.remove(symbol)
                error = ErrorBody("unknown_symbol", f"symbol {symbol!r} was removed")
                for hook in self.on_removed:
                    hook(symbol, error)
                await self._save(msgspec.structs.replace(record, removed_ms=self.clock_ms()))
            deleted = await self._purge(symbol) if purge else 0
        await self._audit("remove_symbol", symbol, who=who, actor=actor, deleted=deleted, purge=purge)
        log.warning(
            "symbol %s removed by %s%s", symbol, who, f", with its data ({deleted} trades)" if purge else ", data kept"
        )
        return deleted

    async def _purge(self, symbol: str) -> int:
        writer = self.writer
        if writer is not None:
            # what was accepted for it before the removal must not be written after the purge
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(writer.flush()), timeout=FLUSH_WAIT_S)
            if writer.pending_for(symbol):
                raise StoreUnavailable(
                    f"{symbol} is removed, but trades of it still wait for the store; retry the removal with its "
                    "data shortly"
                )
        deleted = await self.store.purge_symbol(symbol)
        for hook in self.on_purged:
            result = hook(symbol)
            if result is not None:
                await result
        return deleted

    async def _save(self, spec: SymbolSpec) -> None:
        await self.store.save_symbol(spec)
        self._records[spec.symbol] = spec

    async def _audit(
        self,
        action: str,
        symbol: str,
        *,
        who: str,
        actor: str | None,
        spec: SymbolSpec | None = None,
        deleted: int = 0,
        purge: bool | None = None,
    ) -> None:
        entry = AuditEntry(
            time=self.clock_ms(),
            who=who,
            action=action,
            symbol=symbol,
            deleted=deleted,
            actor=actor,
            spec=None if spec is None else msgspec.to_builtins(spec),
            purge=purge,
        )
        await anyio.to_thread.run_sync(self.audit.append, entry)
