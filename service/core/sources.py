"""Trade sources as values: what ``TVFLUX_SOURCES`` asks for, the gap records a source
keeps, and the status ``/api/sources``, ``/admin`` and ``/metrics`` show.

A source feeds trades into ingest: the synthetic market, or an exchange's public trade
stream (:mod:`service.core.venues`). Every tvflux symbol has at most one source, so an
exchange's trade ids can be the symbol's trade ids.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from service.core.models import SYMBOL_PATTERN

VENUES = ("binance", "coinbase", "kraken")
# what the venues' symbols look like: BTCUSDT, BTC-USD, BTC/USD
_VENUE_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9/_.-]{0,31}$")
_SYMBOL = re.compile(SYMBOL_PATTERN)


class SourceSpec(msgspec.Struct, frozen=True):
    """One ``venue:VENUE_SYMBOL=SYMBOL`` entry of ``TVFLUX_SOURCES``."""

    venue: str
    venue_symbol: str
    symbol: str


def parse_sources(entries: tuple[str, ...]) -> tuple[list[SourceSpec], list[str]]:
    """The entries of ``TVFLUX_SOURCES`` as specs, and every problem found (all at once,
    as settings report them). Venue symbols are upper-cased (the venues' own spelling)."""
    specs: list[SourceSpec] = []
    problems: list[str] = []
    fed: dict[str, str] = {}
    for entry in entries:
        venue, colon, rest = entry.partition(":")
        venue_symbol, equals, symbol = rest.rpartition("=")
        venue, venue_symbol, symbol = venue.strip().lower(), venue_symbol.strip().upper(), symbol.strip()
        if not colon or not equals:
            problems.append(f"{entry!r}: expected venue:VENUE_SYMBOL=SYMBOL, e.g. binance:BTCUSDT=BTCUSD")
            continue
        if venue not in VENUES:
            problems.append(f"{entry!r}: unknown venue {venue!r}; one of {', '.join(VENUES)}")
            continue
        if not _VENUE_SYMBOL.match(venue_symbol):
            problems.append(f"{entry!r}: {venue_symbol!r} is not a {venue} symbol (letters, digits, / - _ .)")
            continue
        if not _SYMBOL.search(symbol):
            problems.append(f"{entry!r}: {symbol!r} is not a valid tvflux symbol (pattern {SYMBOL_PATTERN})")
            continue
        key = f"{venue}:{venue_symbol}"
        if symbol in fed:
            problems.append(f"{entry!r}: {symbol} is already fed by {fed[symbol]}; a symbol has one source")
            continue
        if key in fed.values():
            problems.append(f"{entry!r}: {key} is listed twice")
            continue
        fed[symbol] = key
        specs.append(SourceSpec(venue, venue_symbol, symbol))
    return specs, problems


GapState = Literal["backfilling", "backfilled", "open"]


class GapRecord(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    """Trades a source missed on its stream, and what became of them.

    ``from_id``..``to_id`` (inclusive) are the exchange ids that were missing (``to_id`` is
    ``None`` while the end is not known yet); ``from_time`` is the time of the last trade
    before them, ``to_time`` of the first after (epoch ms). ``state``: ``backfilled`` (REST
    filled them; ``trades`` is how many), ``open`` (they are not in the store: ``reason``
    says why, and the bars of that span lack them), or ``backfilling``. ``cause``: what
    revealed the gap (``connect``, ``restart``, ``id jump``, ``stall``, ...). In JSON (the
    API and ``gaps.jsonl``) the keys are camelCase: ``fromId``, ``toTime``, ..."""

    source: str
    symbol: str
    venue_symbol: str
    from_id: int
    state: GapState
    cause: str
    detected_at: int
    to_id: int | None = None
    from_time: int | None = None
    to_time: int | None = None
    trades: int = 0
    reason: str | None = None
    resolved_at: int | None = None


class SymbolFeed(msgspec.Struct, frozen=True, rename="camel"):
    """One fed symbol of a source, as ``/api/sources`` shows it."""

    symbol: str
    venue_symbol: str | None
    state: str  # live, backfilling, waiting (no trade yet), stopped
    last_trade_id: int | None
    last_trade_time: int | None  # epoch ms (exchange time)
    last_trade_age_s: float | None  # since this process received it
    trades_per_s: float
    trades: int  # accepted since start (live and backfilled)
    trades_backfilled: int
    gaps_found: int
    gaps_open: int
    pricescale: int | None = None
    volume_precision: int | None = None


class SourceStatus(msgspec.Struct, frozen=True, rename="camel"):
    name: str  # "synthetic", "binance", "coinbase", "kraken"
    kind: Literal["synthetic", "exchange"]
    connected: bool
    symbols: list[SymbolFeed]
    connected_since: int | None = None  # epoch ms
    reconnects: int = 0
    rest_requests: int = 0
    rest_weight_used: int = 0  # weight this process spent (Binance counts weight, the others requests)
    rest_weight_reported: int | None = None  # what the venue last reported used (Binance's header)
    rest_paused_until: int | None = None  # epoch ms: 429 back-off or a 418 ban
    last_error: str | None = None
    ws_url: str | None = None
    rest_url: str | None = None


class SourcesResponse(msgspec.Struct, frozen=True):
    sources: list[SourceStatus]
    gaps: list[GapRecord]  # most recent first, bounded
