"""Binance spot: aggregate trades (``<symbol>@aggTrade``) on the combined stream, REST
``/api/v3/aggTrades`` from an id, tick and step sizes from ``/api/v3/exchangeInfo``.

Protocol facts relied on (binance-spot-api-docs, ``web-socket-streams.md`` and
``rest-api.md``): combined-stream messages are ``{"stream", "data"}``; the server pings every
20 s and drops a connection that has not answered within a minute (the WebSocket library
answers pings); a client may send at most 5 messages a second (pings and pongs count); a
connection lives at most 24 h, and ``serverShutdown`` announces an early close; aggregate
trade ids are consecutive per symbol; ``aggTrades`` costs weight 4 and returns at most 1000
rows from ``fromId`` (inclusive); ``X-MBX-USED-WEIGHT-1M`` reports the IP's used weight of
6000 per minute; 429 asks to back off (``Retry-After``), 418 is an IP ban. Rows with price
0 or first trade id -1 are placeholders, not trades. Times are ms, or µs with
``timeUnit=MICROSECOND`` (told apart by magnitude).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import msgspec

from service.core.errors import VenueProtocolError
from service.core.venues.common import (
    Event,
    Heartbeat,
    Instrument,
    PlannedClose,
    RestRequest,
    Trades,
    VenueRefusal,
    VenueTrade,
    decode,
    epoch_ms,
    make_trade,
)

PAGE = 1000  # rows per aggTrades request (the maximum)
AGG_TRADES_WEIGHT = 4
EXCHANGE_INFO_WEIGHT = 20
WEIGHT_LIMIT_PER_MIN = 6000


class _AggTrade(msgspec.Struct, frozen=True):
    a: int
    p: str
    q: str
    f: int
    T: int


class _Data(msgspec.Struct, frozen=True):
    e: str = ""
    s: str = ""
    a: int | None = None
    p: str | None = None
    q: str | None = None
    f: int | None = None
    T: int | None = None


class _Error(msgspec.Struct, frozen=True):
    code: int | None = None
    msg: str = ""


class _Message(msgspec.Struct, frozen=True):
    stream: str | None = None
    data: _Data | None = None
    error: _Error | None = None
    id: int | str | None = None  # the answer to a request of ours (``result``)


class _Filter(msgspec.Struct, frozen=True, rename="camel"):
    filter_type: str
    tick_size: str | None = None
    step_size: str | None = None


class _Symbol(msgspec.Struct, frozen=True):
    symbol: str
    filters: list[_Filter]


class _ExchangeInfo(msgspec.Struct, frozen=True):
    symbols: list[_Symbol]


_message = msgspec.json.Decoder(_Message)
_rows = msgspec.json.Decoder(list[_AggTrade])
_info = msgspec.json.Decoder(_ExchangeInfo)


def _trade(a: int, p: str, q: str, f: int, t: int) -> VenueTrade:
    trade = make_trade(a, epoch_ms(t), p, q)
    return msgspec.structs.replace(trade, placeholder=True) if f == -1 else trade


class AggTradesBackfill:
    """``aggTrades`` pages from an id (or, with none known, from a time), ascending."""

    def __init__(self, symbol: str, *, from_id: int | None, from_time_ms: int) -> None:
        self.symbol = symbol
        self.from_id = from_id
        self.from_time_ms = from_time_ms
        self.exhausted = False

    def request(self, now_ms: int) -> RestRequest:
        params = {"symbol": self.symbol, "limit": str(PAGE)}
        if self.from_id is not None:
            params["fromId"] = str(self.from_id)
        else:
            params["startTime"] = str(self.from_time_ms)
        return RestRequest("/api/v3/aggTrades", params, AGG_TRADES_WEIGHT)

    def take(self, body: bytes, now_ms: int) -> list[VenueTrade]:
        rows = decode(_rows, body, "Binance aggTrades")
        trades = [_trade(r.a, r.p, r.q, r.f, r.T) for r in rows]
        if trades:
            self.from_id = max(t.id for t in trades) + 1
        self.exhausted = len(rows) < PAGE
        return trades


class Binance:
    name = "binance"
    has_heartbeats = False
    client_messages_per_s = 4.0  # of the 5 a second Binance allows
    rest_weight_per_s = 20.0  # 1200 a minute: a fifth of the IP's 6000
    rest_weight_burst = 200

    def stream_url(self, base_url: str, venue_symbols: list[str]) -> str:
        streams = "/".join(f"{s.lower()}@aggTrade" for s in venue_symbols)
        return f"{base_url.rstrip('/')}/stream?streams={streams}"

    def subscribe_messages(self, venue_symbols: list[str]) -> list[str]:
        return []  # the combined stream's URL names the streams

    def parse(self, message: str | bytes) -> list[Event]:
        msg = decode(_message, message, "Binance stream message")
        if msg.error is not None:
            return [VenueRefusal(f"Binance error {msg.error.code}: {msg.error.msg}")]
        data = msg.data
        if data is None:
            return [Heartbeat()] if msg.id is not None else []  # {"result": null, "id": 1}
        if data.e == "aggTrade":
            if data.a is None or data.p is None or data.q is None or data.T is None:
                raise VenueProtocolError(f"Binance aggTrade without its fields: {data!r}")
            trade = _trade(data.a, data.p, data.q, -1 if data.f is None else data.f, data.T)
            return [Trades(data.s.upper(), [trade])]
        if data.e == "serverShutdown":
            return [PlannedClose("Binance serverShutdown")]
        return []

    def backfill(self, instrument: Instrument, *, from_id: int | None, from_time_ms: int) -> AggTradesBackfill:
        return AggTradesBackfill(instrument.rest_symbol, from_id=from_id, from_time_ms=from_time_ms)

    def latest_request(self, instrument: Instrument) -> RestRequest:
        return RestRequest("/api/v3/aggTrades", {"symbol": instrument.rest_symbol, "limit": "1"}, AGG_TRADES_WEIGHT)

    def parse_latest(self, body: bytes) -> int | None:
        rows = decode(_rows, body, "Binance aggTrades")
        return max((r.a for r in rows), default=None)

    def instruments_request(self, venue_symbols: list[str]) -> list[RestRequest]:
        symbols = json.dumps(sorted(venue_symbols), separators=(",", ":"))
        return [RestRequest("/api/v3/exchangeInfo", {"symbols": symbols}, EXCHANGE_INFO_WEIGHT)]

    def parse_instruments(self, bodies: list[bytes], venue_symbols: list[str]) -> dict[str, Instrument]:
        out = {}
        for body in bodies:
            for entry in decode(_info, body, "Binance exchangeInfo").symbols:
                ticks = {f.filter_type: f for f in entry.filters}
                price, lot = ticks.get("PRICE_FILTER"), ticks.get("LOT_SIZE")
                if entry.symbol in venue_symbols and price and price.tick_size and lot and lot.step_size:
                    out[entry.symbol] = Instrument(entry.symbol, entry.symbol, price.tick_size, lot.step_size)
        return out

    def used_weight(self, headers: Mapping[str, str]) -> int | None:
        value = headers.get("x-mbx-used-weight-1m")
        return int(value) if value is not None and value.isdigit() else None
