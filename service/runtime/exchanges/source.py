"""An exchange as a trade source: one WebSocket connection for all its fed symbols,
REST backfills for whatever the stream missed, trades into ingest in id order.

Lifecycle (:meth:`ExchangeSource.run`): learn each symbol's last stored id from the store,
fetch the instruments, then keep a connection up for good. Every connection starts with a
sync per symbol (service/core/venues/tracker.py); a closed connection is reopened after a
back-off with full jitter; a connection silent for ``TVFLUX_SOURCE_STALL_S`` is replaced
(for Binance, which has no heartbeats, only when REST shows newer trades: otherwise the
market is just quiet); a planned close (``serverShutdown``, or the connection's age near
Binance's 24 h) opens the new connection first and closes the old one once the new one
is up, so the two overlap and the tracker drops the duplicates. Nothing here stops
ingest from other sources: every failure is logged, shown in ``/api/sources`` and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from websockets.exceptions import WebSocketException

from service.core.errors import TvfluxError, VenueProtocolError
from service.core.settings import Settings
from service.core.sources import GapRecord, SourceSpec, SourceStatus
from service.core.timestamps import NS_PER_MS
from service.core.venues import venue as venue_protocol
from service.core.venues.budget import RestGate, TokenBucket, backoff_s
from service.core.venues.common import Heartbeat, Instrument, PlannedClose, Trades, VenueRefusal
from service.core.venues.kraken import default_rest_pair
from service.core.venues.tracker import Tracker
from service.runtime.clock import now_ms
from service.runtime.exchanges.feed import Feed, Sink
from service.runtime.exchanges.gaplog import GapLog
from service.runtime.exchanges.rest import RestClient, RestFailed, RestPaused
from service.runtime.exchanges.session import Session
from service.runtime.ingest import Ingestor
from service.storage.base import Store

log = logging.getLogger(__name__)
BACKOFF_BASE_S = 0.5
WATCH_S = 0.1  # how often the watchdog and the backfill loop look
NEWEST_IDS = 1000  # stored ids read back per symbol at start
INSTRUMENTS_RETRY_S = (1.0, 300.0)  # instrument data that did not come is asked again: first wait, cap


class ExchangeSource:
    kind = "exchange"

    def __init__(self, name: str, specs: list[SourceSpec], settings: Settings, ingestor: Ingestor, gaps: GapLog):
        self.venue = venue_protocol(name)
        self.name = name
        self.specs = specs
        self.settings = settings
        self.ingestor = ingestor
        self.store: Store = ingestor.store
        self.gaps = gaps
        self.ws_url, self.rest_url = settings.venue_urls(name)
        limit = 6000 if name == "binance" else None
        gate = RestGate(self.venue.rest_weight_per_s, self.venue.rest_weight_burst, limit_per_min=limit)
        self.rest = RestClient(self.venue, self.rest_url, gate)
        self.budget = TokenBucket(self.venue.client_messages_per_s, 1)
        self.sink = Sink(ingestor, gaps)
        self.feeds: dict[str, Feed] = {}  # by venue symbol
        self.connected_since_ms: int | None = None
        self.reconnects = 0
        self.last_error: str | None = None
        self._planned = asyncio.Event()
        self._wake = asyncio.Event()
        self._random = random.Random()
        self._instruments_wait_s = INSTRUMENTS_RETRY_S[0]
        self._instruments_at_s = 0.0  # monotonic: when to ask for missing instrument data again

    # --- the task -------------------------------------------------------------------

    async def run(self) -> None:
        helpers: list[asyncio.Task[None]] = []
        try:
            await self._prepare()
            helpers = [
                asyncio.create_task(self.sink.run(), name=f"{self.name}-sink"),
                asyncio.create_task(self._backfill_forever(), name=f"{self.name}-backfill"),
            ]
            await self._connect_forever()
        finally:
            for task in helpers:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.rest.close()
            await self.gaps.flush()

    async def _prepare(self) -> None:
        """Each symbol's place in its venue's id sequence, from the stored trades (retried
        while the store does not answer), then the venue's instrument data."""
        delay_s = 1.0
        while True:
            try:
                for spec in self.specs:
                    self.feeds[spec.venue_symbol] = await self._feed(spec)
                break
            except TvfluxError as exc:
                self._error(f"cannot read the last stored ids: {exc.message}")
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 30.0)
        await self._fetch_instruments()

    async def _feed(self, spec: SourceSpec) -> Feed:
        numeric = [(int(i), ts) for i, ts in await self.store.newest_ids(spec.symbol, NEWEST_IDS) if i.isdigit()]
        last_id, last_ts = max(numeric) if numeric else (None, None)
        stored = await self.store.last_ts_ns(spec.symbol, 0, 2**62)
        s = self.settings
        tracker = Tracker(
            self.name,
            spec.symbol,
            spec.venue_symbol,
            last_id=last_id,
            last_time_ms=None if last_ts is None else last_ts // NS_PER_MS,
            reorder_ms=s.source_reorder_ms,
            max_pending=s.source_buffer_trades,
            initial_backfill_ms=s.source_backfill_s * 1000,
            max_backfill_ms=s.source_max_backfill_s * 1000,
            floor_time_ms=None if stored is None else stored // NS_PER_MS,
        )
        rest_symbol = default_rest_pair(spec.venue_symbol) if self.name == "kraken" else spec.venue_symbol
        if last_id is not None:
            log.info("%s %s resumes after trade id %d", self.name, spec.symbol, last_id)
        return Feed(spec, tracker, Instrument(spec.venue_symbol, rest_symbol, "0.01", "0.000001"))

    async def _fetch_instruments(self) -> None:
        """The venue's trading rules of the fed symbols; what does not come is asked again
        later (back-off doubling to :data:`INSTRUMENTS_RETRY_S`), prices keep 2 decimals
        meanwhile."""
        symbols = [s for s, feed in self.feeds.items() if not feed.instrument_known]
        self._instruments_at_s = time.monotonic() + self._instruments_wait_s
        self._instruments_wait_s = min(self._instruments_wait_s * 2, INSTRUMENTS_RETRY_S[1])
        try:
            bodies = []
            for req in self.venue.instruments_request(symbols):
                bodies.append(await self.rest.get(req, deadline_s=time.monotonic() + 30))
            found = self.venue.parse_instruments(bodies, symbols)
        except (RestFailed, VenueProtocolError) as exc:
            self._error(f"instrument data unavailable ({exc.message}); prices keep 2 decimals")
            return
        for symbol in symbols:
            feed = self.feeds[symbol]
            if symbol in found:
                feed.instrument, feed.instrument_known = found[symbol], True
            else:
                self._error(f"{self.name} does not list {symbol}")

    # --- connections ----------------------------------------------------------------

    def _session(self) -> Session:
        symbols = list(self.feeds)
        url = self.venue.stream_url(self.ws_url, symbols)
        keepalive_s = max(0.25, self.settings.source_stall_s / 2)
        return Session(url, self.venue.subscribe_messages(symbols), self.budget, keepalive_s=keepalive_s)

    async def _open(self, cause: str) -> Session:
        """A new connection, retried with back-off; every tracker then syncs."""
        attempt = 0
        while True:
            session = self._session()
            try:
                await session.open()
            except (OSError, WebSocketException, TimeoutError) as exc:
                with contextlib.suppress(Exception):
                    await session.close()
                self._error(f"cannot connect to {self.ws_url}: {type(exc).__name__}: {exc}")
                delay = backoff_s(
                    attempt,
                    base_s=BACKOFF_BASE_S,
                    cap_s=self.settings.source_backoff_max_s,
                    jitter=self._random.random(),
                )
                attempt += 1
                await asyncio.sleep(delay)
                continue
            for feed in self.feeds.values():
                feed.tracker.connected(cause)
            self._wake.set()
            self.connected_since_ms = now_ms()
            log.info("%s connected (%s): %s", self.name, cause, ", ".join(self.feeds))
            return session

    async def _connect_forever(self) -> None:
        cause = "restart" if any(f.tracker.last_id is not None for f in self.feeds.values()) else "start"
        failures = 0
        current = await self._open(cause)
        reader = asyncio.create_task(self._read(current))
        try:
            while True:
                await asyncio.sleep(WATCH_S)
                reason = self._why_replace(current, reader) or await self._stalled(current)
                if reason is None:
                    continue
                if reason == "planned":
                    self._planned.clear()
                    new = await self._open("planned")  # the old connection keeps reading meanwhile
                    new_reader = asyncio.create_task(self._read(new))
                    await self._first_message(new)  # overlap: the tracker drops what both deliver
                    await self._stop(current, reader)
                else:
                    await self._stop(current, reader)
                    self.connected_since_ms = None
                    self.reconnects += 1
                    short = current.opened_s is not None and time.monotonic() - current.opened_s < 10
                    failures = failures + 1 if short else 0
                    cap_s = self.settings.source_backoff_max_s
                    jitter = self._random.random()
                    await asyncio.sleep(backoff_s(failures, base_s=BACKOFF_BASE_S, cap_s=cap_s, jitter=jitter))
                    new = await self._open(reason)
                    new_reader = asyncio.create_task(self._read(new))
                current, reader = new, new_reader
        finally:
            await self._stop(current, reader)

    async def _first_message(self, session: Session, timeout_s: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.first_message.wait(), timeout_s)

    def _why_replace(self, session: Session, reader: asyncio.Task[None]) -> str | None:
        if reader.done():
            return "reconnect"
        if self._planned.is_set():
            return "planned"
        max_age = self.settings.source_max_connection_s
        if max_age and session.opened_s is not None and time.monotonic() - session.opened_s > max_age:
            log.info("%s: connection is %.0f s old; replacing it before the venue does", self.name, max_age)
            return "planned"
        return None

    async def _stalled(self, session: Session) -> str | None:
        """``stall`` when nothing came for ``TVFLUX_SOURCE_STALL_S``; for a venue without
        heartbeats only if REST shows trades newer than the stream's (or cannot tell)."""
        if session.last_message_s is None or time.monotonic() - session.last_message_s < self.settings.source_stall_s:
            return None
        if not self.venue.has_heartbeats and not await self._newer_on_rest():
            session.last_message_s = time.monotonic()  # a quiet market: look again later
            return None
        self._error(f"no message for {self.settings.source_stall_s:g} s: reconnecting")
        return "stall"

    async def _newer_on_rest(self) -> bool:
        for feed in self.feeds.values():
            try:
                req = self.venue.latest_request(feed.instrument)
                latest = self.venue.parse_latest(await self.rest.get(req, deadline_s=time.monotonic() + 5))
            except (RestFailed, VenueProtocolError):
                return True  # cannot tell: a fresh connection costs little
            if latest is not None and (feed.tracker.last_id is None or latest > feed.tracker.last_id):
                return True
        return False

    async def _stop(self, session: Session, reader: asyncio.Task[None]) -> None:
        with contextlib.suppress(Exception):
            await session.close()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader

    # --- messages -------------------------------------------------------------------

    async def _read(self, session: Session) -> None:
        try:
            async for message in session.messages():
                await self._on_message(message)
        except WebSocketException as exc:
            self._error(f"connection lost: {type(exc).__name__}: {exc}")
        except OSError as exc:
            self._error(f"connection lost: {exc}")

    async def _on_message(self, message: str | bytes) -> None:
        try:
            events = self.venue.parse(message)
        except VenueProtocolError as exc:
            self._error(exc.message)
            return
        for event in events:
            if isinstance(event, Trades):
                feed = self.feeds.get(event.venue_symbol)
                if feed is not None:
                    await self.sink.put(feed, feed.tracker.offer(event.trades, now_ms()))
                    self._collect(feed)
            elif isinstance(event, PlannedClose):
                log.info("%s announced a close (%s): opening a new connection first", self.name, event.reason)
                self._planned.set()
            elif isinstance(event, VenueRefusal):
                self._error(event.message)
            elif isinstance(event, Heartbeat):
                pass

    # --- backfill -------------------------------------------------------------------

    async def _backfill_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), WATCH_S)
            self._wake.clear()
            if time.monotonic() >= self._instruments_at_s and not all(f.instrument_known for f in self.feeds.values()):
                await self._fetch_instruments()
            for feed in self.feeds.values():
                await self.sink.put(feed, feed.tracker.release(now_ms()))
                hole = feed.tracker.need(now_ms())
                if hole is not None:
                    feed.tracker.begin(hole, now_ms())
                    await self._fill(feed)
            await self.gaps.flush()

    async def _fill(self, feed: Feed) -> None:
        """Fetch the active hole page by page until the tracker says it is closed, or
        leave it open once ``TVFLUX_SOURCE_GAP_TIMEOUT_S`` passed without progress."""
        tracker, timeout_s = feed.tracker, self.settings.source_gap_timeout_s
        walk = self.venue.backfill(feed.instrument, from_id=_from_id(tracker), from_time_ms=_from_time(tracker))
        deadline = time.monotonic() + timeout_s
        retry_s = 0.2
        while True:
            try:
                body = await self.rest.get(walk.request(now_ms()), deadline_s=deadline)
                trades = walk.take(body, now_ms())
            except RestPaused as exc:
                if exc.banned or exc.until_s > deadline:
                    await self._leave_open(feed, exc.message)
                    return
                await asyncio.sleep(max(0.0, exc.until_s - time.monotonic()))
                continue
            except (RestFailed, VenueProtocolError) as exc:
                if time.monotonic() + retry_s > deadline:
                    await self._leave_open(feed, f"REST could not fetch it within {timeout_s:g} s: {exc.message}")
                    return
                await asyncio.sleep(retry_s)
                retry_s = min(retry_s * 2, 5.0)
                continue
            emitted, verdict = tracker.page(trades, walk.exhausted, now_ms())
            await self.sink.put(feed, emitted)
            self._collect(feed)
            if verdict == "closed":
                return
            if verdict == "more":
                deadline = time.monotonic() + timeout_s  # progress: the timeout is for a stuck gap
                continue
            if time.monotonic() + 0.5 > deadline:
                missing = f"ids {_from_id(tracker)}..{_missing_to(tracker)}"
                await self._leave_open(feed, f"{missing} are not in {self.name}'s REST history after {timeout_s:g} s")
                return
            await asyncio.sleep(0.5)  # REST may lag the stream: ask again from where we are
            walk = self.venue.backfill(feed.instrument, from_id=_from_id(tracker), from_time_ms=_from_time(tracker))

    async def _leave_open(self, feed: Feed, reason: str) -> None:
        await self.sink.put(feed, feed.tracker.leave_open(reason, now_ms()))
        self._collect(feed)

    def _collect(self, feed: Feed) -> None:
        records = feed.tracker.drain_records()
        if records:
            self.gaps.add(records)

    # --- status ---------------------------------------------------------------------

    def _error(self, message: str) -> None:
        if message != self.last_error:
            log.warning("%s: %s", self.name, message)
        self.last_error = message

    def instrument(self, symbol: str) -> Instrument | None:
        for feed in self.feeds.values():
            if feed.spec.symbol == symbol and feed.instrument_known:
                return feed.instrument
        return None

    def in_progress(self) -> list[GapRecord]:
        return [r for f in self.feeds.values() if (r := f.tracker.current_record()) is not None]

    def status(self) -> SourceStatus:
        gate = self.rest.gate
        paused = self.rest.paused_until_s()
        return SourceStatus(
            name=self.name,
            kind="exchange",
            connected=self.connected_since_ms is not None,
            symbols=[f.status() for f in self.feeds.values()],
            connected_since=self.connected_since_ms,
            reconnects=self.reconnects,
            rest_requests=gate.requests,
            rest_weight_used=gate.weight_spent,
            rest_weight_reported=gate.reported_weight,
            rest_paused_until=None if paused is None else now_ms() + int((paused - time.monotonic()) * 1000),
            last_error=self.last_error,
            ws_url=self.ws_url,
            rest_url=self.rest_url,
        )


def _from_id(tracker: Tracker) -> int | None:
    if tracker.last_id is not None:
        return tracker.last_id + 1
    return tracker.active.from_id if tracker.active is not None else None


def _from_time(tracker: Tracker) -> int:
    if tracker.last_time_ms is not None and tracker.last_id is not None:
        return tracker.last_time_ms
    return tracker.active.from_time_ms if tracker.active is not None else now_ms()


def _missing_to(tracker: Tracker) -> str:
    return str(min(tracker.pending) - 1) if tracker.pending else "?"
