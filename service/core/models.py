"""Messages and values, as msgspec Structs.

Units, stated once for the whole service:

* prices and sizes are float64; ``volume`` is the sum of trade sizes. The stores keep
  the full float64 sums; every output (``/api``, ``/udf``, ``/ws``, SSE, export) shows
  them through :func:`round_volume`, so ``0.1 + 0.2`` reads ``0.3``, not
  ``0.30000000000000004``;
* trade time on the wire (``time``) is integer epoch **milliseconds**; inside the service
  and in the stores a trade's time is ``ts_ns``, integer epoch **nanoseconds**, made unique
  per symbol (see :mod:`service.core.timestamps`);
* a bar's ``time`` is the bar's **start** in epoch ms (the ``/udf`` layer converts to
  seconds).
"""

from __future__ import annotations

import re
from operator import attrgetter
from typing import Annotated, Any

import msgspec
import numpy as np

from service.core.errors import InvalidMessage, InvalidTrade

# Symbols are also InfluxDB tag values and DuckDB literals; keep them boring.
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,31}$"
Symbol = Annotated[str, msgspec.Meta(pattern=SYMBOL_PATTERN)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=253_402_300_799_999)]  # up to year 9999
# No control characters: ids travel in InfluxDB line protocol, which cannot carry them.
TradeId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
# What exchanges send (Binance's aggregate id, Kraken's trade_id): accepted on the wire and
# stored as its decimal text, so ``12345`` and ``"12345"`` are the same trade.
NumericTradeId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
WireTradeId = TradeId | NumericTradeId


def time_unit_hint(time_value: int) -> str:
    """What a trade ``time`` too large to be epoch ms probably is: microseconds or
    nanoseconds of 2001-2286 (what many exchanges send), said with the value in ms."""
    for unit, per_ms in (("microseconds", 1000), ("nanoseconds", 1_000_000)):
        if 10**12 <= time_value // per_ms < 10**13:
            return f" (it looks like epoch {unit}: `time` is epoch milliseconds, {time_value // per_ms})"
    return ""


class Trade(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One trade as clients send it (``POST /api/trades``, ``/ws/ingest``), once decoded:
    an ``id`` sent as a number is its decimal text here (:class:`TradesDecoder`)."""

    symbol: Symbol
    price: PositiveFloat
    size: PositiveFloat
    time: EpochMs
    id: TradeId | None = None


class _TradeIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """:class:`Trade` as the wire carries it: ``id`` may be a number."""

    symbol: Symbol
    price: PositiveFloat
    size: PositiveFloat
    time: EpochMs
    id: WireTradeId | None = None


class _TradeWire(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """:class:`Trade` without the symbol pattern, which :class:`TradesDecoder` checks once
    per distinct symbol of a batch instead of once per trade. Not tracked by the cyclic
    GC (``gc=False``): it holds only strings and numbers, and ingest makes millions."""

    symbol: str
    price: PositiveFloat
    size: PositiveFloat
    time: EpochMs
    id: WireTradeId | None = None


def _text_ids(trades: list[Any]) -> list[Trade]:
    """Numeric ids as their decimal text (a batch of string or no ids is returned as is)."""
    if int not in set(map(type, map(_id_of, trades))):
        return trades
    return [msgspec.structs.replace(t, id=str(t.id)) if type(t.id) is int else t for t in trades]


class TradesDecoder:
    """Decodes a JSON or msgpack array of trades as ``Decoder(list[Trade])`` does — the
    same values, the same errors — but runs the symbol regex once per distinct symbol:
    per trade it was most of the decoding time. A batch the fast decoder refuses, or one
    with a bad symbol, is decoded again by the strict decoder, whose error is raised."""

    def __init__(self, protocol: str = "json") -> None:  # "json" or "msgpack"
        codec = msgspec.json if protocol == "json" else msgspec.msgpack
        self._format = "JSON" if protocol == "json" else "msgpack"
        self._fast = codec.Decoder(list[_TradeWire])
        self._strict = codec.Decoder(list[_TradeIn])
        self._items = codec.Decoder(list[msgspec.Raw])  # to list every bad trade of a batch
        self._one = codec.Decoder(_TradeIn)
        self._any = codec.Decoder()  # a refused trade's own values, for a hint
        self._symbol_ok = re.compile(SYMBOL_PATTERN).search  # msgspec's pattern semantics

    def decode(self, data: bytes | str) -> list[Trade]:
        try:
            trades: list[_TradeWire] = self._fast.decode(data)
        except msgspec.DecodeError:
            return _text_ids(self._strict.decode(data))
        if all(self._symbol_ok(s) for s in set(map(_symbol_of, trades))):
            # the lenient decoder's Trade has Trade's fields and, the symbol's pattern now
            # checked too, its checks: it stands in for Trade (not converted: ingest's hot path)
            return _text_ids(trades)
        return _text_ids(self._strict.decode(data))

    def decode_batch(self, data: bytes | str) -> list[Trade]:
        """:meth:`decode` for a client's batch, with the errors a client gets: malformed
        JSON/msgpack or not an array is :class:`InvalidMessage`; a well-formed batch with
        bad trades is :class:`InvalidTrade` listing **every** trade's problem
        (``{"index", "reason"}``), found by decoding the trades one by one only after the
        fast path refused the batch."""
        try:
            return self.decode(data)
        except msgspec.ValidationError:
            pass
        except msgspec.DecodeError as exc:
            raise InvalidMessage(f"the batch must be a {self._format} array of trades: {exc}") from None
        try:
            items = self._items.decode(data)
        except msgspec.ValidationError as exc:
            raise InvalidTrade(
                f"the batch must be an array of trades: {exc}; nothing from this batch was accepted",
                details=[{"index": None, "reason": str(exc)}],
            ) from None
        except msgspec.DecodeError as exc:  # malformed past a first schema problem
            raise InvalidMessage(f"the batch must be a {self._format} array of trades: {exc}") from None
        problems = []
        for i, item in enumerate(items):
            try:
                self._one.decode(item)
            except msgspec.ValidationError as exc:
                reason = str(exc)
                if reason.endswith("`$.time`"):
                    value = self._any.decode(item).get("time")
                    reason += time_unit_hint(value) if isinstance(value, int) else ""
                problems.append({"index": i, "reason": reason})
        raise InvalidTrade(f"{len(problems)} invalid trade(s); nothing from this batch was accepted", details=problems)


_symbol_of, _id_of = attrgetter("symbol"), attrgetter("id")


VOLUME_DIGITS = 15


def round_volume(volume: float) -> float:
    """A bar's volume as every output shows it: rounded to 15 significant digits.

    A volume is a float64 sum of decimal sizes, so it carries binary noise in its last
    one or two digits (``0.030400999999999997``, ``4795.9545020000005``). float64 holds
    15.9 significant decimal digits, so rounding to 15 drops that noise while keeping
    every digit a real volume has (a 100,000-unit volume with 8 decimals has 14): the
    relative change stays below 5e-15. Sums of millions of trades can carry noise past
    the 15th digit; that is float64's limit, not hidden here. Applied at the edges only
    (history answers, live bars), never to stored data, so re-summing stored bars stays
    as exact as float64 allows."""
    return float(f"{volume:.{VOLUME_DIGITS}g}")


class Bar(msgspec.Struct, frozen=True):
    """OHLCV of one bucket; ``time`` is the bucket start in epoch ms."""

    time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class TradeColumns(msgspec.Struct, frozen=True):
    """Accepted trades of one symbol, columnar, ordered as received.

    ``ts_ns`` is unique per symbol. ``ids`` is ``None`` when no trade carried an id.
    """

    symbol: str
    ts_ns: np.ndarray  # int64
    price: np.ndarray  # float64
    size: np.ndarray  # float64
    ids: list[str | None] | None = None

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])


# --- HTTP answers -------------------------------------------------------------------


class BarsResponse(msgspec.Struct, frozen=True, rename="camel"):
    bars: list[Bar]
    no_data: bool
    next_time: int | None = None


class TradesAccepted(msgspec.Struct, frozen=True):
    accepted: int
    duplicates: int


class RunRecord(msgspec.Struct, frozen=True, rename="camel"):
    """One downsampling run of a tier, as ``/api/downsampling`` lists it."""

    time: int  # epoch ms when the run ended
    from_ms: int | None  # the window it rebuilt: [fromMs, toMs)
    to_ms: int | None
    rows: int
    duration_ms: float | None
    error: str | None


class Backfill(msgspec.Struct, frozen=True, rename="camel"):
    """A tier far behind the live edge: how far along, how fast, when done."""

    progress: float  # 0..1 of [fromMs, toMs)
    from_ms: int  # where the watermark was when this process first saw it
    to_ms: int  # the live edge it is heading for
    range_per_s: int | None  # ms of data the watermark advanced per second, recently
    expected_finish: int | None  # epoch ms, at that rate; None until it has been measured


class TierStatus(msgspec.Struct, frozen=True, rename="camel"):
    tier: str
    source: str
    watermark: int | None  # epoch ms: everything before it is final in this tier
    lag_ms: int | None
    last_run: int | None
    last_duration_ms: float | None
    rows: int  # bars the last run wrote (not what the tier holds: that is ``bars``)
    error: str | None
    dirty_windows: int = 0
    recent_runs: list[RunRecord] | None = None  # most recent first, bounded (service.runtime.runlog)
    backfill: Backfill | None = None
    bars: int | None = None  # rows the tier holds (None: the store does not count them cheaply)
    normal_lag_ms: int | None = None  # lag up to this is the plan's nature, not a fault (readiness)


class TierRun(msgspec.Struct, frozen=True, rename="camel"):
    tier: str
    rows: int
    duration_ms: float
    from_ms: int | None = None
    to_ms: int | None = None


class DownsamplingResponse(msgspec.Struct, frozen=True):
    tiers: list[TierStatus]
    ran: list[TierRun] | None = None


class ManualRun(msgspec.Struct, kw_only=True, rename="camel"):
    """A run asked for with ``POST /api/downsampling/run``: it answers at once with this,
    and ``GET /api/downsampling/runs/{id}`` follows it. ``state``: ``running``, ``done`` or
    ``failed`` (with ``error``); ``ran``: the windows it ran, once it is over."""

    id: str
    state: str
    started_at: int  # ms
    finished_at: int | None = None
    ran: list[TierRun] = []
    error: str | None = None
    tiers: list[TierStatus] | None = None  # where each tier stands (with backfill progress) when answered


# --- WebSocket messages: client → server (tagged by "op") ----------------------------


class Subscribe(msgspec.Struct, frozen=True, tag_field="op", tag="subscribe"):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    symbol: str
    resolution: str


class Unsubscribe(msgspec.Struct, frozen=True, tag_field="op", tag="unsubscribe"):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class Ping(msgspec.Struct, frozen=True, tag_field="op", tag="ping"):
    pass


class EdgeStats(msgspec.Struct, frozen=True, tag_field="op", tag="edgeStats"):
    """An edge's own clients, sent to the core over its upstream connection every few
    seconds, so the core's ``/api/stats`` counts the clients, not the edges."""

    clients: Annotated[int, msgspec.Meta(ge=0)]
    subscriptions: Annotated[int, msgspec.Meta(ge=0)]


ClientMessage = Subscribe | Unsubscribe | Ping | EdgeStats


# --- WebSocket messages: server → client (tagged by "type") --------------------------


class BarMessage(msgspec.Struct, frozen=True, tag_field="type", tag="bar"):
    id: str
    bar: Bar
    closed: bool


class ResetMessage(msgspec.Struct, frozen=True, tag_field="type", tag="reset"):
    id: str


# Protocol v2 (``/ws?v=2``): a series' frames name its topic (``<symbol>@<resolution>``)
# and are the same bytes for every subscriber (service/runtime/fanout.py splices them).


class Subscribed(msgspec.Struct, frozen=True, tag_field="type", tag="subscribed"):
    """v2: subscription ``id`` receives the frames of ``topic`` from now on."""

    id: str
    topic: str


class TopicBar(msgspec.Struct, frozen=True, tag_field="type", tag="bar"):
    topic: str
    bar: Bar
    closed: bool


class TopicReset(msgspec.Struct, frozen=True, tag_field="type", tag="reset"):
    topic: str


class LiveStatus(msgspec.Struct, frozen=True, tag_field="type", tag="status", omit_defaults=True):
    """v2, from an edge: ``live`` false while it has lost its upstream (core or broker);
    true again once it is back, followed by a ``reset`` of every topic."""

    live: bool
    reason: str | None = None


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str
    details: object | None = None


class ErrorMessage(msgspec.Struct, frozen=True, tag_field="type", tag="error", omit_defaults=True):
    """``id``: the subscription (``/ws``); ``seq``: the frame's number on ``/ws/ingest``,
    the same integer its ``ack`` would have carried."""

    error: ErrorBody
    id: str | None = None
    seq: int | None = None


class Pong(msgspec.Struct, frozen=True, tag_field="type", tag="pong"):
    pass


# what an edge reads from its upstream (the core's /ws?v=2, or the broker)
UpstreamMessage = Subscribed | TopicBar | TopicReset | LiveStatus | ErrorMessage | Pong


class IngestAck(msgspec.Struct, frozen=True, tag_field="type", tag="ack"):
    """Answer to one ``/ws/ingest`` frame; ``seq`` counts frames on the connection from 1."""

    seq: int
    accepted: int
    duplicates: int


ServerMessage = BarMessage | ResetMessage | ErrorMessage | Pong | IngestAck
