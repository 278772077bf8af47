"""Coinbase Advanced Trade: ``market_trades`` and ``heartbeats`` on the market-data
WebSocket, REST ``/api/v3/brokerage/market/products/{id}/ticker`` by time window, increments
from ``/api/v3/brokerage/market/products/{id}``.

Protocol facts relied on (Coinbase's Advanced Trade WebSocket and REST references):
messages are ``{"channel", "client_id", "timestamp", "sequence_num", "events"}``; a
subscribe names one channel; a connection that has not subscribed within 5 s is closed,
and channels fall silent after 60-90 s without updates unless ``heartbeats`` is
subscribed (a heartbeat a second); ``market_trades`` events are a ``snapshot`` of recent
trades, then ``update``\\ s collected over 250 ms, trades newest first, ``trade_id`` a
string of the product's consecutive integer ids, times RFC 3339 (µs or ns); the public
ticker endpoint returns at most ``limit`` trades of ``[start, end]`` (UNIX seconds),
newest first, so a full page means the window was too wide. Public REST endpoints allow
10 requests a second per IP.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from service.core.errors import VenueProtocolError
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
)

PAGE = 1000  # trades per ticker request
FIRST_WINDOW_S = 60
MAX_WINDOW_S = 3600


class _Trade(msgspec.Struct, frozen=True):
    trade_id: str
    product_id: str
    price: str
    size: str
    time: str


class _Event(msgspec.Struct, frozen=True):
    type: str = ""
    trades: list[_Trade] = []


class _Message(msgspec.Struct, frozen=True):
    channel: str = ""
    type: str = ""  # "error" for a refused request
    message: str = ""
    events: list[msgspec.Raw] = []


class _Ticker(msgspec.Struct, frozen=True):
    trades: list[_Trade]


class _Product(msgspec.Struct, frozen=True):
    product_id: str
    base_increment: str
    quote_increment: str
    price_increment: str | None = None


_message = msgspec.json.Decoder(_Message)
_event = msgspec.json.Decoder(_Event)
_ticker = msgspec.json.Decoder(_Ticker)
_product = msgspec.json.Decoder(_Product)


def _trade(t: _Trade) -> VenueTrade:
    if not t.trade_id.isdigit():
        raise VenueProtocolError(f"Coinbase trade_id {t.trade_id!r} is not an integer")
    return make_trade(int(t.trade_id), rfc3339_ms(t.time), t.price, t.size)


def _by_product(trades: list[_Trade]) -> list[Event]:
    groups: dict[str, list[VenueTrade]] = {}
    for t in trades:
        groups.setdefault(t.product_id.upper(), []).append(_trade(t))
    return [Trades(product, sorted(group, key=lambda v: v.id)) for product, group in groups.items()]


class TickerBackfill:
    """Time windows of the public ticker endpoint, oldest first: a full page halves the
    window (the page is dropped: it is the window's newest trades only), a sparse one
    doubles it. Ids below the one wanted come back too and are dropped by the tracker."""

    def __init__(self, product_id: str, *, from_time_ms: int) -> None:
        self.product_id = product_id
        self.start_s = from_time_ms // 1000 - 1  # a second early: ids, not times, decide
        self.window_s = FIRST_WINDOW_S
        self.exhausted = False

    def _end_s(self, now_ms: int) -> int:
        return min(self.start_s + self.window_s, now_ms // 1000 + 1)

    def request(self, now_ms: int) -> RestRequest:
        params = {"limit": str(PAGE), "start": str(self.start_s), "end": str(self._end_s(now_ms))}
        return RestRequest(f"/api/v3/brokerage/market/products/{self.product_id}/ticker", params, 1)

    def take(self, body: bytes, now_ms: int) -> list[VenueTrade]:
        trades = decode(_ticker, body, "Coinbase ticker").trades
        end_s = self._end_s(now_ms)
        if len(trades) >= PAGE and end_s - self.start_s > 1:
            self.window_s = max(1, (end_s - self.start_s) // 2)
            return []
        self.start_s = end_s  # the boundary second is asked again: its trades come twice, ids dedupe
        if len(trades) < PAGE // 4:
            self.window_s = min(MAX_WINDOW_S, self.window_s * 2)
        self.exhausted = end_s > now_ms // 1000
        return sorted((_trade(t) for t in trades if t.product_id.upper() == self.product_id), key=lambda v: v.id)


class Coinbase:
    name = "coinbase"
    has_heartbeats = True
    client_messages_per_s = 4.0
    rest_weight_per_s = 3.0  # requests: of the 10 a second public endpoints allow
    rest_weight_burst = 5

    def stream_url(self, base_url: str, venue_symbols: list[str]) -> str:
        return base_url

    def subscribe_messages(self, venue_symbols: list[str]) -> list[str]:
        trades = {"type": "subscribe", "product_ids": venue_symbols, "channel": "market_trades"}
        heartbeats = {"type": "subscribe", "channel": "heartbeats"}
        return [msgspec.json.encode(m).decode() for m in (heartbeats, trades)]

    def parse(self, message: str | bytes) -> list[Event]:
        msg = decode(_message, message, "Coinbase message")
        if msg.type == "error":
            return [VenueRefusal(f"Coinbase error: {msg.message}")]
        if msg.channel == "market_trades":
            trades = [t for raw in msg.events for t in decode(_event, raw, "Coinbase market_trades").trades]
            return _by_product(trades)
        if msg.channel in ("heartbeats", "subscriptions"):
            return [Heartbeat()]
        return []

    def backfill(self, instrument: Instrument, *, from_id: int | None, from_time_ms: int) -> TickerBackfill:
        return TickerBackfill(instrument.rest_symbol, from_time_ms=from_time_ms)

    def latest_request(self, instrument: Instrument) -> RestRequest:
        return RestRequest(f"/api/v3/brokerage/market/products/{instrument.rest_symbol}/ticker", {"limit": "1"}, 1)

    def parse_latest(self, body: bytes) -> int | None:
        return max((_trade(t).id for t in decode(_ticker, body, "Coinbase ticker").trades), default=None)

    def instruments_request(self, venue_symbols: list[str]) -> list[RestRequest]:
        return [RestRequest(f"/api/v3/brokerage/market/products/{s}", {}, 1) for s in venue_symbols]

    def parse_instruments(self, bodies: list[bytes], venue_symbols: list[str]) -> dict[str, Instrument]:
        out = {}
        for body in bodies:
            p = decode(_product, body, "Coinbase product")
            symbol = p.product_id.upper()
            if symbol in venue_symbols:
                out[symbol] = Instrument(symbol, symbol, p.price_increment or p.quote_increment, p.base_increment)
        return out

    def used_weight(self, headers: Mapping[str, str]) -> int | None:
        return None
