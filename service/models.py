"""Messages and values, as msgspec Structs.

Units, stated once for the whole service:

* prices and sizes are float64; ``volume`` is the sum of trade sizes;
* trade time on the wire (``time``) is integer epoch **milliseconds**; inside the service
  and in the stores a trade's time is ``ts_ns``, integer epoch **nanoseconds**, made unique
  per symbol (see :mod:`service.timestamps`);
* a bar's ``time`` is the bar's **start** in epoch ms (the ``/udf`` layer converts to
  seconds).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
import numpy as np

# Symbols are also InfluxDB tag values and DuckDB literals; keep them boring.
Symbol = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,31}$")]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=253_402_300_799_999)]  # up to year 9999
TradeId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class Trade(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One trade as clients send it (``POST /api/trades``, ``/ws/ingest``)."""

    symbol: Symbol
    price: PositiveFloat
    size: PositiveFloat
    time: EpochMs
    id: TradeId | None = None


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


class BarsResponse(msgspec.Struct, frozen=True):
    bars: list[Bar]
    noData: bool
    nextTime: int | None = None


class TradesAccepted(msgspec.Struct, frozen=True):
    accepted: int
    duplicates: int


class SymbolInfo(msgspec.Struct, frozen=True):
    symbol: str
    description: str
    pricescale: int
    exchange: str = "tvflux"
    type: str = "crypto"


class SymbolsResponse(msgspec.Struct, frozen=True):
    symbols: list[SymbolInfo]


class TierStatus(msgspec.Struct, frozen=True):
    tier: str
    source: str
    watermark: int | None  # epoch ms: everything before it is final in this tier
    lagMs: int | None
    lastRun: int | None
    lastDurationMs: float | None
    rows: int
    error: str | None
    dirtyWindows: int = 0


class TierRun(msgspec.Struct, frozen=True):
    tier: str
    rows: int
    durationMs: float
    fromMs: int | None = None
    toMs: int | None = None


class DownsamplingResponse(msgspec.Struct, frozen=True):
    tiers: list[TierStatus]
    ran: list[TierRun] | None = None


# --- WebSocket messages: client → server (tagged by "op") ----------------------------


class Subscribe(msgspec.Struct, frozen=True, tag_field="op", tag="subscribe"):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    symbol: str
    resolution: str


class Unsubscribe(msgspec.Struct, frozen=True, tag_field="op", tag="unsubscribe"):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class Ping(msgspec.Struct, frozen=True, tag_field="op", tag="ping"):
    pass


ClientMessage = Subscribe | Unsubscribe | Ping


# --- WebSocket messages: server → client (tagged by "type") --------------------------


class BarMessage(msgspec.Struct, frozen=True, tag_field="type", tag="bar"):
    id: str
    bar: Bar
    closed: bool


class ResetMessage(msgspec.Struct, frozen=True, tag_field="type", tag="reset"):
    id: str


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str
    details: object | None = None


class ErrorMessage(msgspec.Struct, frozen=True, tag_field="type", tag="error", omit_defaults=True):
    error: ErrorBody
    id: str | None = None


class Pong(msgspec.Struct, frozen=True, tag_field="type", tag="pong"):
    pass


class IngestAck(msgspec.Struct, frozen=True, tag_field="type", tag="ack"):
    """Answer to one ``/ws/ingest`` frame; ``seq`` counts frames on the connection from 1."""

    seq: int
    accepted: int
    duplicates: int


ServerMessage = BarMessage | ResetMessage | ErrorMessage | Pong | IngestAck
Side = Literal["buy", "sell"]
