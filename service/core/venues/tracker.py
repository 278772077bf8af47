"""Gap-free trades from ids alone: what to pass on, what is missing, and when a gap is
closed or left open, for one (venue, symbol).

A venue's trade ids are consecutive per symbol, so the tracker passes trades on strictly
in id order, each once: ``last_id`` is the newest id passed on, every id up to it is
stored (or explicitly given up in an ``open`` gap record). Trades beyond ``last_id + 1``
wait in ``pending`` (bounded). A *hole* is what REST must fetch:

* after every (re)connect or restart: a **sync** from ``last_id + 1`` to the present
  (no exchange replays its stream); it ends where the new stream's first trade begins,
  or where REST runs out;
* an **id jump** on the stream that the next trades do not fill within ``reorder_ms``
  (out-of-order delivery is not a gap; a dropped message is);
* on a fresh symbol, the last ``initial_backfill_ms`` of history, by time.

Time never makes a gap: a quiet market is ids that stay contiguous. A sync that finds
nothing missing leaves no record; a hole REST cannot fill (its history ends, rate limits,
a ban: the caller decides when to give up) is skipped with an ``open`` gap record.
Pure: times are arguments, nothing here does I/O.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from service.core.sources import GapRecord
from service.core.venues.common import VenueTrade

Verdict = Literal["more", "closed", "wait"]


class Hole(msgspec.Struct, frozen=True):
    """Ids ``from_id`` … ``to_id`` (inclusive; ``None``: up to the present) to fetch,
    starting at ``from_time_ms`` (venues that page by time); ``from_id`` ``None``: no id
    is known yet, fetch by time."""

    from_id: int | None
    to_id: int | None
    from_time_ms: int
    cause: str


class Tracker:
    def __init__(
        self,
        source: str,
        symbol: str,
        venue_symbol: str,
        *,
        last_id: int | None,
        last_time_ms: int | None,
        reorder_ms: int,
        max_pending: int,
        initial_backfill_ms: int,
        max_backfill_ms: int,
        floor_time_ms: int | None = None,
    ) -> None:
        self.source, self.symbol, self.venue_symbol = source, symbol, venue_symbol
        self.last_id = last_id
        self.last_time_ms = last_time_ms
        self.reorder_ms = reorder_ms
        self.max_pending = max_pending
        self.initial_backfill_ms = initial_backfill_ms
        self.max_backfill_ms = max_backfill_ms
        # a fresh symbol's history starts after what is stored (trades without exchange ids)
        self.floor_time_ms = floor_time_ms
        self.pending: dict[int, VenueTrade] = {}
        self._hole_seen_ms: int | None = None  # since when pending waits above a missing id
        self._base_seen_ms: int | None = None  # since when the stream's trades wait to start the sequence
        self._sync: str | None = None  # a sync to the present is due, and why
        self._edge: int | None = None  # the smallest id the stream delivered since the last connect
        self._watch_edge = False
        self._from_next: GapRecord | None = None  # given up: the next trade says where it ended
        self.active: Hole | None = None
        self._record: GapRecord | None = None  # the gap being backfilled
        self.finished: list[GapRecord] = []  # records the caller collects (drain_records)
        self.emitted = self.backfilled = self.duplicates = self.dropped = 0
        self.gaps_found = self.gaps_open = 0

    # --- what happened --------------------------------------------------------------

    def connected(self, cause: str) -> None:
        """A new connection (``start``, ``restart``, ``reconnect``, ``stall``, ``planned``):
        what it missed is fetched by a sync, unless a fresh symbol wants no history."""
        if self.last_id is not None or self.initial_backfill_ms > 0:
            self._sync = cause
        self._edge, self._watch_edge = None, True

    def offer(self, trades: list[VenueTrade], now_ms: int, *, from_rest: bool = False) -> list[VenueTrade]:
        """Take trades (any order, duplicates welcome); return those now passed on, in id
        order, without placeholders."""
        fetched: set[int] = set()
        for t in trades:
            if self._watch_edge and not from_rest:
                self._edge = t.id if self._edge is None else min(self._edge, t.id)
            if (self.last_id is not None and t.id <= self.last_id) or t.id in self.pending:
                self.duplicates += 1
                continue
            self.pending[t.id] = t
            if from_rest:
                fetched.add(t.id)
            elif self.last_id is None and self._base_seen_ms is None:
                self._base_seen_ms = now_ms
        if fetched or not from_rest:  # an empty page decides nothing
            self._take_base(not from_rest, now_ms)
        emitted = self._emit(now_ms, fetched)
        self._bound_pending()
        self._watch_hole(now_ms)
        return emitted

    def _take_base(self, from_stream: bool, now_ms: int) -> None:
        """Where the id sequence (re)starts when no id is known, or after a hole was given
        up without knowing its end: at the first trade that decides it (``from_stream``:
        no trade of a REST page is among the new ones). The stream decides only after
        ``reorder_ms``: its first trades may arrive out of order, and an id below the
        start would be taken for one already passed on."""
        if not self.pending or (self.last_id is not None and self._from_next is None):
            return
        if self.active is not None and self.active.from_id is None and from_stream:
            return  # fetching history by time: its first trades decide, not the stream
        if self.last_id is None and self._sync is not None:
            return  # a fetch by time is due
        if self.last_id is None and from_stream:
            seen = self._base_seen_ms
            if seen is None or now_ms - seen < self.reorder_ms:
                return  # within the grace: release() decides later
        self._base_seen_ms = None
        first = min(self.pending)
        record, self._from_next = self._from_next, None
        if self.last_id is not None and first == self.last_id + 1:
            return  # nothing was missing after all
        if record is not None:
            from_id = record.from_id if self.last_id is None else self.last_id + 1
            closed = msgspec.structs.replace(
                record, from_id=from_id, to_id=first - 1, to_time=self.pending[first].time_ms
            )
            self._finish(closed, now_ms)
        self.last_id = first - 1

    def release(self, now_ms: int) -> list[VenueTrade]:
        """Trades the passing of time releases (the caller asks every so often): the
        stream's first trades once their reorder grace is over."""
        if self.last_id is not None or self.active is not None:
            return []
        self._take_base(True, now_ms)
        emitted = self._emit(now_ms, set())
        self._watch_hole(now_ms)
        return emitted

    def _emit(self, now_ms: int, rest_ids: set[int]) -> list[VenueTrade]:
        out: list[VenueTrade] = []
        if self.last_id is None:
            return out
        pending = self.pending
        while self.last_id + 1 in pending:
            t = pending.pop(self.last_id + 1)
            self.last_id = t.id
            self.last_time_ms = t.time_ms if self.last_time_ms is None else max(self.last_time_ms, t.time_ms)
            if not t.placeholder:
                out.append(t)
        self.emitted += len(out)
        if rest_ids:
            fetched = [t for t in out if t.id in rest_ids]
            self.backfilled += len(fetched)
            if self._record is not None:
                end = self._end()
                missing = sum(1 for t in fetched if end is None or t.id <= end)
                self._record = msgspec.structs.replace(self._record, trades=self._record.trades + missing)
        return out

    def _bound_pending(self) -> None:
        """Past ``max_pending``, the newest waiting trades are dropped: they come back as a
        hole once the older ones are passed on, and REST fetches them."""
        excess = len(self.pending) - self.max_pending
        if excess > 0:
            for trade_id in sorted(self.pending)[-excess:]:
                del self.pending[trade_id]
            self.dropped += excess

    def _waiting(self) -> bool:
        return self.last_id is not None and bool(self.pending) and min(self.pending) > self.last_id + 1

    def _watch_hole(self, now_ms: int) -> None:
        if not self._waiting():
            self._hole_seen_ms = None
        elif self._hole_seen_ms is None:
            self._hole_seen_ms = now_ms

    # --- what to fetch --------------------------------------------------------------

    def need(self, now_ms: int) -> Hole | None:
        """The hole REST should fetch now, if any (``None`` while one is being fetched)."""
        if self.active is not None:
            return None
        if self._sync is not None:
            if self.last_id is None:
                start = now_ms - self.initial_backfill_ms
                if self.floor_time_ms is not None:
                    start = max(start, self.floor_time_ms + 1)
                return Hole(None, None, start, self._sync)
            return Hole(self.last_id + 1, None, self.last_time_ms or now_ms, self._sync)
        if self._hole_seen_ms is not None and now_ms - self._hole_seen_ms >= self.reorder_ms:
            assert self.last_id is not None
            return Hole(self.last_id + 1, min(self.pending) - 1, self.last_time_ms or now_ms, "id jump")
        return None

    def begin(self, hole: Hole, now_ms: int) -> Hole:
        """Start fetching ``hole`` (from :meth:`need`); returns what to fetch, which is less
        when the hole reaches further back than ``max_backfill_ms``: its older part is
        then left open at once (its end is where the fetch by time begins)."""
        self._sync = None
        if hole.from_id is not None and hole.from_time_ms < now_ms - self.max_backfill_ms:
            reason = "older than TVFLUX_SOURCE_MAX_BACKFILL_S: not fetched"
            self._from_next = msgspec.structs.replace(self._new_record(hole, now_ms), state="open", reason=reason)
            self.last_id = None
            hole = Hole(None, None, now_ms - self.max_backfill_ms, hole.cause)
        self.active = hole
        # fetching by time (a fresh symbol's history) fills no gap: no record
        self._record = self._new_record(hole, now_ms) if hole.from_id is not None else None
        return hole

    def _end(self) -> int | None:
        """The last id the active hole needs: its own end, or for a sync the id before the
        new stream's first trade (unknown until that trade arrives)."""
        if self.active is not None and self.active.to_id is not None:
            return self.active.to_id
        return None if self._edge is None else self._edge - 1

    def page(self, trades: list[VenueTrade], exhausted: bool, now_ms: int) -> tuple[list[VenueTrade], Verdict]:
        """One REST page of the active hole: the trades now passed on, and what next —
        ``more`` pages, ``closed`` (nothing is missing any more), or ``wait`` (REST has
        nothing more yet ids are missing: it may lag the stream; ask again later, or
        :meth:`leave_open`)."""
        assert self.active is not None, "page() without begin()"
        emitted = self.offer(trades, now_ms, from_rest=True)
        end = self._end()
        if self.last_id is not None and end is not None and self.last_id >= end:
            self._close(end, now_ms)
            return emitted, "closed"
        if not exhausted:
            return emitted, "more"
        if self.last_id is None:  # history by time found nothing: the stream starts the sequence
            self._close(None, now_ms)
            self._take_base(True, now_ms)
            return emitted + self._emit(now_ms, set()), "closed"
        if end is None and not self._waiting():  # REST reached the present; the stream has not begun
            self._close(self.last_id, now_ms)
            return emitted, "closed"
        return emitted, "wait"

    def leave_open(self, reason: str, now_ms: int) -> list[VenueTrade]:
        """Give up on the active hole: record it ``open`` with ``reason`` and pass on what
        follows it (when nothing follows yet, the next trade says where the gap ended).
        Returns the trades passed on."""
        hole = self.active
        assert hole is not None, "leave_open() without begin()"
        record = self._record
        self.active, self._record = None, None
        if hole.to_id is None:
            self._watch_edge = False
        if record is None:  # a fetch by time: no id known, nothing to report
            self._take_base(True, now_ms)
            return self._emit(now_ms, set())
        open_record = msgspec.structs.replace(record, state="open", reason=reason)
        if self.last_id is not None:
            open_record = msgspec.structs.replace(open_record, from_id=self.last_id + 1)
        self._from_next = open_record
        self._take_base(True, now_ms)
        emitted = self._emit(now_ms, set())
        self._watch_hole(now_ms)
        return emitted

    # --- records ---------------------------------------------------------------------

    def _new_record(self, hole: Hole, now_ms: int) -> GapRecord:
        after = self.pending.get(hole.to_id + 1) if hole.to_id is not None else None
        return GapRecord(
            source=self.source,
            symbol=self.symbol,
            venue_symbol=self.venue_symbol,
            from_id=hole.from_id if hole.from_id is not None else 0,
            to_id=hole.to_id,
            from_time=self.last_time_ms,
            to_time=after.time_ms if after is not None else None,
            state="backfilling",
            cause=hole.cause,
            detected_at=now_ms,
        )

    def _close(self, end: int | None, now_ms: int) -> None:
        hole, record = self.active, self._record
        self.active, self._record = None, None
        if hole is not None and hole.to_id is None:
            self._watch_edge = False
        if record is None or end is None or (hole is not None and hole.to_id is None and record.trades == 0):
            return  # a sync that found nothing missing is not a gap
        after = self.pending.get(end + 1)
        to_time = record.to_time if record.to_time is not None else (after.time_ms if after else self.last_time_ms)
        self._finish(msgspec.structs.replace(record, state="backfilled", to_id=end, to_time=to_time), now_ms)

    def _finish(self, record: GapRecord, now_ms: int) -> None:
        self.gaps_found += 1
        if record.state == "open":
            self.gaps_open += 1
        self.finished.append(msgspec.structs.replace(record, resolved_at=now_ms))

    def drain_records(self) -> list[GapRecord]:
        """Records finished since the last call (backfilled or open), oldest first."""
        out, self.finished = self.finished, []
        return out

    def current_record(self) -> GapRecord | None:
        """The gap being backfilled now (for ``/api/sources``)."""
        return self._record

    @property
    def state(self) -> str:
        if self.active is not None:
            return "backfilling"
        return "waiting" if self.last_id is None else "live"
