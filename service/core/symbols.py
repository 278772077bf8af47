"""Symbols and what each carries: its price scale (tick size), volume precision, description
and price band, as the registry keeps them (``service/runtime/symbols.py``) and the API
shows them.

A symbol is *listed* (history, live bars and ingest accept it; ``/api/symbols``,
``/udf/search`` and the chart list it) from the moment it is added — by ``TVFLUX_SYMBOLS``,
the admin API or CLI, a bulk import, or an exchange source — until it is removed. A
removal is remembered (``removedMs``), so a symbol whose trades were kept stays removed
across restarts instead of coming back because the store still holds its trades.

Pure: times are arguments, and every rule a request must satisfy is checked here, once.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

import msgspec

from service.core.errors import InvalidMessage
from service.core.models import SYMBOL_PATTERN
from service.core.timestamps import NS_PER_MS

DEFAULT_TICK_SIZE = 0.01
DEFAULT_VOLUME_PRECISION = 6
MAX_PRICE_DECIMALS = 12  # a tick of 1e-12: TradingView's pricescale 10^12
MAX_TICK_SIZE = 1e6
MAX_VOLUME_PRECISION = 12
MAX_PRICE_BAND_PCT = 1000.0
MAX_DESCRIPTION = 200
_symbol_ok = re.compile(SYMBOL_PATTERN).fullmatch  # not search: "$" would let a trailing newline through
_plain_text = re.compile(r"[^\x00-\x1f\x7f]*").fullmatch


class SymbolSpec(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One symbol of the registry, as stored (both stores) and as ``/api/symbols`` shows it.

    ``tickSize``: the smallest price step; charts show prices with as many decimals
    (TradingView's ``pricescale``/``minmov`` follow from it). ``priceBandPct``: how far a live
    trade may be from the symbol's reference price, in percent; ``None`` = the service's
    ``TVFLUX_PRICE_BAND_PCT``, ``0`` = no band (a listing whose first trades find the price).
    ``removedMs``: set on a removed symbol (a tombstone), ``None`` while it is listed."""

    symbol: str
    description: str = ""
    tick_size: float = DEFAULT_TICK_SIZE
    volume_precision: int = DEFAULT_VOLUME_PRECISION
    price_band_pct: float | None = None
    added_ms: int = 0
    removed_ms: int | None = None

    @property
    def listed(self) -> bool:
        return self.removed_ms is None

    @property
    def label(self) -> str:
        return self.description or self.symbol


class SymbolRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """``POST /api/admin/symbols``: add a symbol, or update one (fields left out keep their
    values; ``"priceBandPct": null`` goes back to the service's default band)."""

    symbol: str
    description: str | msgspec.UnsetType = msgspec.UNSET
    tick_size: float | msgspec.UnsetType = msgspec.UNSET
    volume_precision: int | msgspec.UnsetType = msgspec.UNSET
    price_band_pct: float | None | msgspec.UnsetType = msgspec.UNSET


class SymbolInfo(msgspec.Struct, frozen=True, rename="camel"):
    """A listed symbol as ``/api/symbols`` shows it (``pricescale``/``minmov``: TradingView's
    spelling of the tick size, ``tickSize = minmov / pricescale``)."""

    symbol: str
    description: str
    pricescale: int
    minmov: int
    tick_size: float
    volume_precision: int
    price_band_pct: float | None  # None: the service's default band
    last_trade_ms: int | None  # the newest trade the service knows of (None: none)
    exchange: str = "tvflux"
    type: str = "crypto"


class SymbolsResponse(msgspec.Struct, frozen=True):
    symbols: list[SymbolInfo]


class SymbolRecord(msgspec.Struct, frozen=True, rename="camel"):
    """``GET /api/admin/symbols`` and ``tvflux symbols list``: a registry record, listed or
    removed, and the span of its stored trades (``None``: none stored)."""

    spec: SymbolSpec
    configured: bool  # in TVFLUX_SYMBOLS: listed at every start, not removable
    pricescale: int
    minmov: int
    first_trade_ms: int | None
    last_trade_ms: int | None


def price_scale(tick_size: float) -> tuple[int, int]:
    """``(pricescale, minmov)`` with ``minmov / pricescale == tick_size`` exactly in decimal:
    0.01 → (100, 1), 0.25 → (100, 25), 0.00001 → (100000, 1), 5 → (1, 5)."""
    tick = Decimal(repr(float(tick_size))).normalize()
    decimals = max(0, -int(tick.as_tuple().exponent))
    scale = 10**decimals
    return scale, int(tick * scale)


def check_symbol(symbol: str) -> str | None:
    """Why ``symbol`` is not a valid symbol name, or ``None`` (the rule ingest applies)."""
    if not _symbol_ok(symbol):
        return (
            f"{symbol!r} is not a valid symbol: 1-32 characters, letters, digits and . _ : / -, "
            "starting with a letter or digit"
        )
    return None


def _problems(spec: SymbolSpec) -> list[str]:
    problems = []
    why = check_symbol(spec.symbol)
    if why:
        problems.append(why)
    tick = spec.tick_size
    if not (math.isfinite(tick) and 0 < tick <= MAX_TICK_SIZE):
        problems.append(f"tickSize must be a number > 0 and <= {MAX_TICK_SIZE:g}, got {tick!r}")
    else:
        exponent = int(Decimal(repr(float(tick))).normalize().as_tuple().exponent)
        if -exponent > MAX_PRICE_DECIMALS:
            problems.append(f"tickSize {tick!r} has more than {MAX_PRICE_DECIMALS} decimals")
    if not 0 <= spec.volume_precision <= MAX_VOLUME_PRECISION:
        problems.append(f"volumePrecision must be 0-{MAX_VOLUME_PRECISION}, got {spec.volume_precision}")
    band = spec.price_band_pct
    if band is not None and not (math.isfinite(band) and 0 <= band <= MAX_PRICE_BAND_PCT):
        problems.append(f"priceBandPct must be 0 (no band) to {MAX_PRICE_BAND_PCT:g}, or null, got {band!r}")
    if len(spec.description) > MAX_DESCRIPTION or not _plain_text(spec.description):
        problems.append(f"description must be at most {MAX_DESCRIPTION} characters, without control characters")
    return problems


def apply_request(request: SymbolRequest, existing: SymbolSpec | None, now_ms: int) -> SymbolSpec:
    """The spec after ``request``: an update of ``existing`` (a removed one is listed again,
    keeping its metadata unless given), or a new symbol with defaults for what it leaves
    out. Every problem is reported at once (:class:`InvalidMessage`, 400)."""
    base = existing if existing is not None else SymbolSpec(symbol=request.symbol, added_ms=now_ms)
    unset = msgspec.UnsetType
    spec = msgspec.structs.replace(
        base,
        description=base.description if isinstance(request.description, unset) else request.description,
        tick_size=base.tick_size if isinstance(request.tick_size, unset) else float(request.tick_size),
        volume_precision=(
            base.volume_precision if isinstance(request.volume_precision, unset) else request.volume_precision
        ),
        price_band_pct=base.price_band_pct if isinstance(request.price_band_pct, unset) else request.price_band_pct,
        added_ms=base.added_ms if base.listed else now_ms,
        removed_ms=None,  # listed again, if it was removed
    )
    problems = _problems(spec)
    if problems:
        raise InvalidMessage("; ".join(problems), details={"problems": problems})
    return spec


class SymbolRemoved(msgspec.Struct, frozen=True, rename="camel"):
    """``DELETE /api/admin/symbols``: the symbol unlisted, and whether (and how many of) its
    stored trades were deleted with their bars."""

    removed: str
    data_deleted: bool
    deleted_trades: int


def record(spec: SymbolSpec, *, configured: bool, trade_span_ns: tuple[int, int] | None) -> SymbolRecord:
    scale, minmov = price_scale(spec.tick_size)
    return SymbolRecord(
        spec=spec,
        configured=configured,
        pricescale=scale,
        minmov=minmov,
        first_trade_ms=None if trade_span_ns is None else trade_span_ns[0] // NS_PER_MS,
        last_trade_ms=None if trade_span_ns is None else trade_span_ns[1] // NS_PER_MS,
    )


def info(spec: SymbolSpec, last_trade_ms: int | None) -> SymbolInfo:
    scale, minmov = price_scale(spec.tick_size)
    return SymbolInfo(
        symbol=spec.symbol,
        description=spec.label,
        pricescale=scale,
        minmov=minmov,
        tick_size=spec.tick_size,
        volume_precision=spec.volume_precision,
        price_band_pct=spec.price_band_pct,
        last_trade_ms=last_trade_ms,
    )
