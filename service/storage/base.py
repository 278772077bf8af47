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

Nothing outside a store asks more of it than this protocol: differences between the
backends are declared here as capabilities (``retry_start``, ``downsampling_in_database``,
``commits_spool_seq``) or as a method a store may decline (:meth:`Store.snapshot`), never
found out by testing ``kind``. The one place that knows which class backs which setting
is :mod:`service.storage.factory`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from service.core.models import Bar, TierRun, TierStatus, TradeColumns
from service.core.resolution import Resolution
from service.core.symbols import SymbolSpec

NEWEST_IDS_SPAN_NS = 60 * 1_000_000_000  # how far before the newest id'd trade newest_ids looks


class ChangedWindow(msgspec.Struct, frozen=True):
    """Closed history of ``symbol`` in ``[start_ms, end_ms)`` was rebuilt by a late-data
    recomputation; subscribers of the symbol need a ``reset``."""

    symbol: str
    start_ms: int
    end_ms: int


class RunReport(msgspec.Struct, frozen=True):
    ran: list[TierRun]
    changed: list[ChangedWindow]


class Deletion(msgspec.Struct, frozen=True):
    """What :meth:`Store.delete_trades` removed: ``deleted`` trades, and ``changed``, the
    span of closed history (first-tier bars) they were in, which the next downsampling run
    rebuilds in every tier (empty when they were all past the first tier's watermark)."""

    deleted: int
    changed: list[ChangedWindow]


class Health(msgspec.Struct, frozen=True):
    ok: bool
    error: str | None = None


# --- snapshots (Store.snapshot) ---------------------------------------------------------

MANIFEST_FILE = "manifest.json"
"""The one file of a snapshot directory that describes the rest (a :class:`Manifest`);
whoever moves a snapshot elsewhere (``POST /api/admin/backup``) sends it first."""


class FileEntry(msgspec.Struct, frozen=True):
    name: str
    bytes: int
    sha256: str


class TableEntry(msgspec.Struct, frozen=True):
    name: str
    file: str
    rows: int


class Manifest(msgspec.Struct, frozen=True):
    """What :meth:`Store.snapshot` wrote: every file with its size and checksum, and every
    table with its row count, so a copy can be verified before it is restored."""

    format: str
    created_utc: str
    source: str  # absolute path of the store file the snapshot came from
    duckdb_version: str
    tvflux_version: str
    files: list[FileEntry]
    tables: list[TableEntry]

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)


class TradeSink(Protocol):
    """Where trades are written and looked up to keep them unique: every :class:`Store`,
    and a running service the CLI sends an import through (its ``ServiceSink``, which
    allocates timestamps and checks ids itself, so it answers "nothing stored")."""

    async def append(self, batches: Sequence[TradeColumns], *, spool_seq: int | None = None) -> None:
        """Store trades: one write for the whole call. Trades older than the first tier's
        watermark mark their windows dirty so the next run rebuilds them. ``spool_seq``:
        the newest spool record in ``batches`` (see ``commits_spool_seq``)."""

    async def last_ts_ns(self, symbol: str, from_ns: int, to_ns: int) -> int | None:
        """Largest stored ``ts_ns`` of ``symbol`` in ``[from_ns, to_ns)``; used to keep
        timestamps unique when a late trade lands in an old millisecond."""

    async def known_ids(
        self, symbol: str, ids: Sequence[str], from_ns: int | None = None, to_ns: int | None = None
    ) -> set[str]:
        """Which of ``ids`` are already stored for ``symbol``. ``from_ns``/``to_ns`` (both or
        neither) narrow the search to ``[from_ns, to_ns)``, where a retry of the same
        trades would be (their own timestamps); without them all time is searched."""


class Store(TradeSink, Protocol):
    kind: str
    """A display label ("duckdb", "influx") for logs, ``/metrics`` and ``/api/downsampling``.
    Nothing branches on it: use the capabilities below."""

    retry_start: bool
    """``True``: the store is reached over the network and may be down when the service
    starts, so :meth:`start` is retried with backoff while the service stays unready.
    ``False``: a local file; if it cannot be opened, starting fails at once, loudly."""

    downsampling_in_database: bool
    """``True``: the database runs the downsampling plan on its own schedule (InfluxDB
    tasks); :meth:`run_downsampling` only asks for runs now. ``False``: only the service's
    downsampler runs it, so with no interval nothing does."""

    commits_spool_seq: bool
    """``True``: :meth:`append` commits ``spool_seq`` in the same transaction as the trades
    and :meth:`committed_spool_seq` reads it back, so a replay stores nothing twice.
    ``False``: the store ignores it; the writer keeps its own marker file (a replay may
    write a batch again, which must be harmless there: equal points overwrite themselves)."""

    async def start(self) -> None:
        """Open connections and create what is missing (tables, buckets). Raises
        :class:`~service.core.errors.StoreUnavailable` with a clear message if it cannot."""

    async def close(self) -> None: ...

    async def health(self) -> Health: ...

    async def delete_trades(
        self, symbol: str, *, ids: Sequence[str] | None = None, from_ns: int | None = None, to_ns: int | None = None
    ) -> Deletion:
        """Trade corrections: remove the trades of ``symbol`` whose ``id`` is in ``ids``,
        or whose ``ts_ns`` is in ``[from_ns, to_ns)`` (both given: the ids within the
        range). The windows they were in are marked dirty, so the next
        :meth:`run_downsampling` rebuilds every tier exactly from what is left — bars left
        with no trades disappear — and history is exact at once (read from raw trades
        until then), as for late trades."""

    async def committed_spool_seq(self) -> int:
        """The newest spool record committed with an append (0: none, or the store does not
        keep it, see ``commits_spool_seq``)."""

    async def bars(self, symbol: str, resolution: Resolution, from_ms: int, to_ms: int) -> list[Bar]:
        """Bars of ``resolution`` whose start is in ``[from_ms, to_ms)``, ascending.
        ``from_ms`` must be aligned to the resolution."""

    async def previous_bar_time(self, symbol: str, resolution: Resolution, before_ms: int) -> int | None:
        """Start of the latest bar of ``resolution`` that starts before ``before_ms``. Bounded:
        never a scan of the raw trades from the epoch."""

    async def bars_before(self, symbol: str, resolution: Resolution, to_ms: int, count: int) -> list[Bar]:
        """The newest ``count`` bars of ``resolution`` starting before ``to_ms``, ascending
        (``countback``): fewer only when no older data exist. Bounded work, not a loop
        widening its window per empty stretch."""

    async def symbols(self) -> list[str]:
        """Symbols that have stored trades or bars. What is *listed* is the registry's
        (:meth:`symbol_specs`): this only finds symbols written without it (an offline
        import, a store from before the registry). InfluxDB may go on naming a purged
        symbol here until its index is compacted."""

    async def trade_span(self, symbol: str) -> tuple[int, int] | None:
        """``(first, last)`` stored ``ts_ns`` of ``symbol``, ``None`` when it has no stored
        trades (where ``tvflux generate`` may write without overlapping them; the symbol
        list shows it). One bounded read per end."""

    async def recent_ids(self, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` ``(symbol, id)`` of the newest stored trades that carry an id,
        newest first, to warm the duplicate filter at start. A store may return fewer
        (none): :meth:`known_ids` still answers for the rest, only more slowly."""

    async def newest_ids(self, symbol: str, limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` ``(id, ts_ns)`` of ``symbol``'s newest stored trades that carry an
        id, newest first, from the minute before the newest of them (:data:`NEWEST_IDS_SPAN_NS`).
        An exchange source resumes its venue's id sequence from these after a restart: the
        ids live with the trades, so they survive whatever the trades survive."""

    async def symbol_specs(self) -> list[SymbolSpec]:
        """The symbol registry: every symbol ever saved, removed ones included (their
        ``removedMs`` is set), so a removal outlives a restart."""

    async def save_symbol(self, spec: SymbolSpec) -> None:
        """Add or replace the registry's record of ``spec.symbol`` (a removal saves the
        spec with ``removedMs``). Durable when it returns."""

    async def purge_symbol(self, symbol: str) -> int:
        """Delete every stored trade of ``symbol``, its bars in every tier and its dirty
        windows (a symbol removed with its data); returns the trades deleted. The registry
        record is the caller's (:meth:`save_symbol`)."""

    async def trade_count(self) -> int | None:
        """How many trades the store holds, where that is cheap to answer (for ``/admin``);
        ``None`` where it would mean scanning everything (an InfluxDB bucket)."""

    async def downsampling_status(self, now_ms: int) -> list[TierStatus]: ...

    async def run_downsampling(
        self, now_ms: int, *, max_windows: int | None = None, timeout_s: float | None = None
    ) -> RunReport:
        """Run every tier in plan order until each is at the live edge (or ``max_windows``
        runs were made). Idempotent; concurrent calls are serialised. Past ``timeout_s``
        the run is abandoned with :class:`~service.core.errors.RunTimeout`: what was
        committed stays, the rest is retried from its watermark next time."""

    async def snapshot(self, directory: str) -> Manifest:
        """Write a consistent snapshot of the whole store into ``directory`` (its files and
        :data:`MANIFEST_FILE`; see :mod:`service.storage.embedded.backup`) while the store
        keeps serving. A store backed up by
        other means raises :class:`~service.core.errors.NotSupported` saying which."""
