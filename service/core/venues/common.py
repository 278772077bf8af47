"""What every venue protocol produces and needs: trades, stream events, REST requests,
instrument data, and exact parsing of the venues' numbers and times.

Prices and sizes arrive as decimal strings (Binance, Coinbase) or JSON numbers (Kraken);
both are decoded as :class:`~decimal.Decimal` and converted once to the nearest float64, so
no value goes through binary arithmetic on the way (``"0.1"`` becomes exactly the float
``0.1``). Times become integer epoch milliseconds (floored), whatever unit the venue used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Protocol, TypeVar

import msgspec

from service.core.errors import VenueProtocolError
from service.core.timestamps import NS_PER_MS

T = TypeVar("T")


class VenueTrade(msgspec.Struct, frozen=True, gc=False):
    """One trade as a venue reported it. ``placeholder``: a row that holds an id in the
    venue's sequence but is not a trade (Binance's rows with price 0 / first id -1): the
    id counts for continuity, nothing is stored."""

    id: int
    time_ms: int
    price: float
    size: float
    placeholder: bool = False


class Trades(msgspec.Struct, frozen=True):
    venue_symbol: str
    trades: list[VenueTrade]


class Heartbeat(msgspec.Struct, frozen=True):
    """The connection is alive (a heartbeat, a subscription answer, a pong)."""


class PlannedClose(msgspec.Struct, frozen=True):
    """The venue will close this connection soon (Binance ``serverShutdown``): open a new
    one now and let the two overlap."""

    reason: str


class VenueRefusal(msgspec.Struct, frozen=True):
    """The venue refused a request of ours (an unknown symbol, a malformed subscribe)."""

    message: str


Event = Trades | Heartbeat | PlannedClose | VenueRefusal


class RestRequest(msgspec.Struct, frozen=True):
    """A GET of ``path`` (appended to the venue's REST URL) with ``params``; ``weight``
    is what it costs against the venue's budget."""

    path: str
    params: dict[str, str]
    weight: int = 1


class Instrument(msgspec.Struct, frozen=True):
    """A venue's trading rules for one symbol, as a chart needs them: prices move by
    ``tick_size``, sizes by ``step_size``; ``rest_symbol`` is the name its REST API wants
    (Kraken's differs from the stream's)."""

    venue_symbol: str
    rest_symbol: str
    tick_size: str
    step_size: str

    @property
    def pricescale(self) -> int:
        """TradingView's ``pricescale``: 10^(decimals of the tick)."""
        return int(10 ** decimals(self.tick_size))

    @property
    def minmov(self) -> int:
        """TradingView's ``minmov``: the tick in units of 1/pricescale (a tick of 0.5 → 5)."""
        return max(1, int(Decimal(self.tick_size) * self.pricescale))

    @property
    def volume_precision(self) -> int:
        return decimals(self.step_size)


class Backfill(Protocol):
    """A walk through a venue's REST trade history, one page per request, from a trade
    id (or a time) up to the present. Pure: the caller sends :meth:`request` and hands
    the answer to :meth:`take`."""

    exhausted: bool
    """The last page reached the venue's present: asking again now returns nothing new."""

    def request(self, now_ms: int) -> RestRequest: ...

    def take(self, body: bytes, now_ms: int) -> list[VenueTrade]:
        """The trades of one answer (ascending ids not guaranteed); advances the walk."""


class Venue(Protocol):
    name: str
    has_heartbeats: bool
    """The venue sends something at least every few seconds on a healthy connection
    (Coinbase's and Kraken's heartbeats), so silence means a stall. Binance sends only
    trades (and ping frames): silence may be a quiet market, which :meth:`latest_request`
    tells apart."""
    client_messages_per_s: float  # our budget of messages to the venue
    rest_weight_per_s: float  # our budget of REST weight (requests where weight is not counted)
    rest_weight_burst: int

    def stream_url(self, base_url: str, venue_symbols: list[str]) -> str: ...

    def subscribe_messages(self, venue_symbols: list[str]) -> list[str]: ...

    def parse(self, message: str | bytes) -> list[Event]: ...

    def backfill(self, instrument: Instrument, *, from_id: int | None, from_time_ms: int) -> Backfill:
        """From ``from_id`` (inclusive), or from ``from_time_ms`` when no id is known."""

    def latest_request(self, instrument: Instrument) -> RestRequest: ...

    def parse_latest(self, body: bytes) -> int | None:
        """The newest trade id of a :meth:`latest_request` answer (``None``: no trades)."""

    def instruments_request(self, venue_symbols: list[str]) -> list[RestRequest]: ...

    def parse_instruments(self, bodies: list[bytes], venue_symbols: list[str]) -> dict[str, Instrument]: ...

    def used_weight(self, headers: Mapping[str, str]) -> int | None:
        """The weight the venue says this IP used in its window, where it says so."""


# --- numbers ------------------------------------------------------------------------

_DECIMAL_TEXT = re.compile(r"^[0-9]+(\.[0-9]+)?$")


def decimal_value(value: str | Decimal, what: str) -> float:
    """A non-negative decimal (string or exact :class:`Decimal`) as the nearest float64."""
    if isinstance(value, str):
        if not _DECIMAL_TEXT.match(value):
            raise VenueProtocolError(f"{what} {value!r} is not a plain decimal number")
        value = Decimal(value)
    if not value.is_finite() or value < 0:
        raise VenueProtocolError(f"{what} {value} is not a finite number >= 0")
    return float(value)


def decimals(text: str) -> int:
    """Significant decimals of an increment: ``"0.01000000"`` → 2, ``"1.00"`` → 0."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise VenueProtocolError(f"increment {text!r} is not a number") from None
    if not value.is_finite() or value <= 0:
        raise VenueProtocolError(f"increment {text!r} must be > 0")
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


# --- times --------------------------------------------------------------------------

_US_FROM, _NS_FROM = 10**14, 10**17  # an epoch value this large is µs / ns (ms until year 5138)


def epoch_ms(value: int) -> int:
    """An epoch time in ms, µs or ns (told apart by magnitude) as epoch ms, floored."""
    if value < 0:
        raise VenueProtocolError(f"time {value} is negative")
    if value >= _NS_FROM:
        return value // NS_PER_MS
    if value >= _US_FROM:
        return value // 1000
    return value


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})$", re.IGNORECASE
)


def rfc3339_ms(text: str) -> int:
    """``2023-09-25T07:49:37.708706Z`` (any fraction up to ns, ``Z`` or an offset) as
    epoch ms, floored: integer arithmetic only."""
    m = _RFC3339.match(text.strip())
    if not m:
        raise VenueProtocolError(f"time {text!r} is not an RFC 3339 timestamp")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction, zone = m.group(7) or "", m.group(8)
    try:
        midnight = datetime(year, month, day, tzinfo=UTC)
    except ValueError:
        raise VenueProtocolError(f"time {text!r} is not a date") from None
    seconds = int(midnight.timestamp()) + hour * 3600 + minute * 60 + second
    if zone.upper() != "Z":
        sign = -1 if zone[0] == "+" else 1  # 12:00+02:00 is 10:00 UTC
        digits = zone[1:].replace(":", "")
        seconds += sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds * 1000 + int((fraction + "000")[:3])


def seconds_ms(value: Decimal) -> int:
    """Epoch seconds with a fraction (Kraken's REST ``1688669597.8277369``) as epoch ms."""
    return int((value * 1000).to_integral_value(rounding="ROUND_FLOOR"))


def make_trade(trade_id: int, time_ms: int, price: str | Decimal, size: str | Decimal) -> VenueTrade:
    """A trade from a venue's fields; a price or size of 0 is a placeholder row."""
    p, s = decimal_value(price, "price"), decimal_value(size, "size")
    return VenueTrade(trade_id, time_ms, p, s, placeholder=p == 0 or s == 0)


def decode(decoder: msgspec.json.Decoder[T], data: str | bytes, what: str) -> T:
    """``decoder.decode(data)``, a failure named as the venue's protocol error."""
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise VenueProtocolError(f"{what}: {exc}") from None
