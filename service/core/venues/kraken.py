"""Kraken spot, WebSocket v2: the ``trade`` channel, REST ``/0/public/Trades?since=``,
tick size and lot decimals from ``/0/public/AssetPairs``.

Protocol facts relied on (Kraken's WebSocket v2 and REST references): a subscribe is
``{"method": "subscribe", "params": {"channel": "trade", "symbol": [...], "snapshot": true}}``
and is answered with ``success`` true or false; trade messages are ``{"channel": "trade",
"type": "snapshot"|"update", "data": [...]}`` with numeric ``price``/``qty``, an integer
``trade_id`` consecutive per pair and an RFC 3339 ``timestamp``; a ``heartbeat`` comes
about once a second on a subscribed connection. v2 names pairs ``BTC/USD`` where REST and
``wsname`` say ``XBT``/``XDG``; REST ``Trades`` rows are ``[price, volume, time (s), side,
type, misc, trade_id]``, ascending, at most ``count`` (1000) per answer from ``since`` (a
time, ns or s) with ``last`` the ``since`` of the next page; errors come as HTTP 200 with an
``error`` list. Public REST calls are limited to about one a second.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import msgspec

from service.core.errors import VenueProtocolError
from service.core.timestamps import NS_PER_MS
from service.core.venues.common import (
    Event,
    Heartbeat,
    Instrument,
    RestRequest,
    Trades,
    VenueRefusal,
    VenueTrade,
    decode,
    make_trade,
    rfc3339_ms,
    seconds_ms,
)

PAGE = 1000
# v2 spells these assets as the world does; REST and v1 as Kraken always did
_V2_NAMES = {"XBT": "BTC", "XDG": "DOGE"}


class _Trade(msgspec.Struct, frozen=True):
    symbol: str
    price: Decimal
    qty: Decimal
    trade_id: int
    timestamp: str


class _Message(msgspec.Struct, frozen=True):
    channel: str = ""
    type: str = ""
    data: msgspec.Raw = msgspec.Raw(b"")  # a trade list, or a status list we do not read
    method: str = ""
    success: bool | None = None
    error: str | None = None


class _Trades(msgspec.Struct, frozen=True):
    result: dict[str, msgspec.Raw] = {}
    error: list[str] = []


class _Pair(msgspec.Struct, frozen=True):
    altname: str = ""
    wsname: str = ""
    tick_size: str | None = None
    pair_decimals: int = 8
    lot_decimals: int = 8


class _Pairs(msgspec.Struct, frozen=True):
    result: dict[str, _Pair] = {}
    error: list[str] = []


_message = msgspec.json.Decoder(_Message)
_data = msgspec.json.Decoder(list[_Trade])
_trades = msgspec.json.Decoder(_Trades)
_rows = msgspec.json.Decoder(list[tuple[Decimal, Decimal, Decimal, str, str, str, int]])
_last = msgspec.json.Decoder(str | int)
_pairs = msgspec.json.Decoder(_Pairs)


def v2_name(wsname: str) -> str:
    """``XBT/USD`` (REST's ``wsname``) as WebSocket v2 spells it: ``BTC/USD``."""
    return "/".join(_V2_NAMES.get(part, part) for part in wsname.upper().split("/"))


def _increment(decimals: int) -> str:
    return "1" if decimals <= 0 else "0." + "0" * (decimals - 1) + "1"


def _rest_errors(errors: list[str]) -> None:
    if errors:
        raise VenueProtocolError(f"Kraken REST error: {', '.join(errors)}")


class TradesBackfill:
    """``Trades`` pages from a time (a second before the last trade known: ids decide)."""

    def __init__(self, pair: str, *, from_time_ms: int) -> None:
        self.pair = pair
        self.since_ns = max(0, from_time_ms - 1000) * NS_PER_MS
        self.exhausted = False

    def request(self, now_ms: int) -> RestRequest:
        return RestRequest("/0/public/Trades", {"pair": self.pair, "since": str(self.since_ns), "count": str(PAGE)}, 1)

    def take(self, body: bytes, now_ms: int) -> list[VenueTrade]:
        answer = decode(_trades, body, "Kraken Trades")
        _rest_errors(answer.error)
        rows, last = [], None
        for key, raw in answer.result.items():
            if key == "last":
                last = decode(_last, raw, "Kraken Trades last")
            else:
                rows = decode(_rows, raw, "Kraken Trades rows")
        if last is not None and int(last) > self.since_ns:
            self.since_ns = int(last)
        self.exhausted = len(rows) < PAGE
        return [make_trade(r[6], seconds_ms(r[2]), r[0], r[1]) for r in rows]


class Kraken:
    name = "kraken"
    has_heartbeats = True
    client_messages_per_s = 2.0
    rest_weight_per_s = 1.0
    rest_weight_burst = 2

    def stream_url(self, base_url: str, venue_symbols: list[str]) -> str:
        return base_url

    def subscribe_messages(self, venue_symbols: list[str]) -> list[str]:
        params = {"channel": "trade", "symbol": venue_symbols, "snapshot": True}
        return [msgspec.json.encode({"method": "subscribe", "params": params, "req_id": 1}).decode()]

    def parse(self, message: str | bytes) -> list[Event]:
        msg = decode(_message, message, "Kraken message")
        if msg.channel == "trade" and len(msg.data):
            groups: dict[str, list[VenueTrade]] = {}
            for t in decode(_data, msg.data, "Kraken trade"):
                trade = make_trade(t.trade_id, rfc3339_ms(t.timestamp), t.price, t.qty)
                groups.setdefault(t.symbol.upper(), []).append(trade)
            return [Trades(symbol, trades) for symbol, trades in groups.items()]
        if msg.method == "subscribe" and msg.success is False:
            return [VenueRefusal(f"Kraken refused the subscription: {msg.error}")]
        if msg.channel in ("heartbeat", "status") or msg.method in ("subscribe", "pong"):
            return [Heartbeat()]
        return []

    def backfill(self, instrument: Instrument, *, from_id: int | None, from_time_ms: int) -> TradesBackfill:
        return TradesBackfill(instrument.rest_symbol, from_time_ms=from_time_ms)

    def latest_request(self, instrument: Instrument) -> RestRequest:
        return RestRequest("/0/public/Trades", {"pair": instrument.rest_symbol, "count": "1"}, 1)

    def parse_latest(self, body: bytes) -> int | None:
        trades = TradesBackfill("", from_time_ms=0).take(body, 0)
        return max((t.id for t in trades), default=None)

    def instruments_request(self, venue_symbols: list[str]) -> list[RestRequest]:
        return [RestRequest("/0/public/AssetPairs", {}, 1)]

    def parse_instruments(self, bodies: list[bytes], venue_symbols: list[str]) -> dict[str, Instrument]:
        out = {}
        for body in bodies:
            answer = decode(_pairs, body, "Kraken AssetPairs")
            _rest_errors(answer.error)
            for key, pair in answer.result.items():
                name = v2_name(pair.wsname) if pair.wsname else ""
                if name in venue_symbols and name not in out:
                    tick = pair.tick_size or _increment(pair.pair_decimals)
                    out[name] = Instrument(name, key, tick, _increment(pair.lot_decimals))
        return out

    def used_weight(self, headers: Mapping[str, str]) -> int | None:
        return None


def default_rest_pair(venue_symbol: str) -> str:
    """Before ``AssetPairs`` has answered: REST takes the pair without its slash."""
    return venue_symbol.replace("/", "")
