"""Trade frames for ``/ws/ingest`` and ``POST /api/trades``, encoded without per-trade
Python work.

Every trade of a symbol has the same layout, so a frame is a numpy array of fixed-size
records: the constant bytes (map headers, keys, the symbol) are copied from a template
built once, and only the numbers are written, vectorised:

* msgpack: each trade is a 4-entry map whose ``price``/``size`` are float64 (``0xcb``)
  and ``time`` a uint64 (``0xcf``), big-endian — fixed width by construction;
* JSON: numbers are printed into fixed-width fields padded on the left with spaces
  (whitespace is legal between JSON tokens), prices with 2 decimals, sizes with 6.

So building a 10,000-trade frame costs a few numpy operations, whatever the rate; the
generator's CPU goes to the sockets, not to encoding.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

MSGPACK = "msgpack"
JSON = "json"
FORMATS = (MSGPACK, JSON)

_PRICE_INT_DIGITS = 14  # marker prices are epoch-ms sized (13 digits)
_SIZE_INT_DIGITS = 6
_TIME_DIGITS = 13  # epoch ms has 13 digits from 2001 to 2286


def _fixstr(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 31:
        raise ValueError(f"symbol {text!r} is longer than 31 bytes")
    return bytes([0xA0 | len(raw)]) + raw


def msgpack_array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


class _MsgpackLayout:
    def __init__(self, symbol: str) -> None:
        head = b"\x84" + _fixstr("symbol") + _fixstr(symbol) + _fixstr("price") + b"\xcb"
        mid = _fixstr("size") + b"\xcb"
        tail = _fixstr("time") + b"\xcf"
        self.dtype = np.dtype(
            [
                ("head", f"V{len(head)}"),
                ("price", ">f8"),
                ("mid", f"V{len(mid)}"),
                ("size", ">f8"),
                ("tail", f"V{len(tail)}"),
                ("time", ">u8"),
            ]
        )
        template = np.zeros(1, dtype=self.dtype)
        template["head"] = np.void(head)
        template["mid"] = np.void(mid)
        template["tail"] = np.void(tail)
        self._template = template
        self._cache = np.repeat(template, 1)

    def records(self, price: np.ndarray, size: np.ndarray, time_ms: np.ndarray | int) -> bytes:
        n = int(price.shape[0])
        if self._cache.shape[0] < n:
            self._cache = np.repeat(self._template, max(n, 2 * self._cache.shape[0]))
        rec = self._cache[:n]
        rec["price"] = price
        rec["size"] = size
        rec["time"] = time_ms
        return rec.tobytes()


def fixed_width_decimal(values: np.ndarray, int_digits: int, decimals: int) -> np.ndarray:
    """``values`` (non-negative floats) as right-aligned ASCII, one row of
    ``int_digits + 1 + decimals`` bytes per value (no point when ``decimals`` is 0),
    rounded to ``decimals``; leading zeros become spaces. Values too large for the field
    raise ``ValueError``."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * 10**decimals).astype(np.int64)
    total = int_digits + decimals
    if scaled.size and (scaled.min() < 0 or scaled.max() >= 10**total):
        raise ValueError(f"value out of range for {int_digits}.{decimals} digits")
    powers = 10 ** np.arange(total - 1, -1, -1, dtype=np.int64)
    digits = (scaled[:, None] // powers[None, :]) % 10
    leading = np.cumsum(digits != 0, axis=1) == 0
    leading[:, int_digits - 1 :] = False  # keep "0" before the point and every decimal
    chars = np.where(leading, 32, digits + 48).astype(np.uint8)
    if decimals == 0:
        return chars
    point = np.full((scaled.shape[0], 1), ord("."), dtype=np.uint8)
    return np.concatenate([chars[:, :int_digits], point, chars[:, int_digits:]], axis=1)


class _JsonLayout:
    def __init__(self, symbol: str) -> None:
        if any(c in symbol for c in '"\\') or not symbol.isprintable():
            raise ValueError(f"symbol {symbol!r} needs JSON escaping")
        self._head = np.frombuffer(f'{{"symbol":"{symbol}","price":'.encode(), dtype=np.uint8)
        self._mid1 = np.frombuffer(b',"size":', dtype=np.uint8)
        self._mid2 = np.frombuffer(b',"time":', dtype=np.uint8)
        self._tail = np.frombuffer(b"},", dtype=np.uint8)

    def records(self, price: np.ndarray, size: np.ndarray, time_ms: np.ndarray | int) -> bytes:
        n = int(price.shape[0])
        times = np.broadcast_to(np.asarray(time_ms, dtype=np.int64), (n,))
        parts = [
            np.broadcast_to(self._head, (n, self._head.size)),
            fixed_width_decimal(price, _PRICE_INT_DIGITS, 2),
            np.broadcast_to(self._mid1, (n, self._mid1.size)),
            fixed_width_decimal(size, _SIZE_INT_DIGITS, 6),
            np.broadcast_to(self._mid2, (n, self._mid2.size)),
            fixed_width_decimal(times, _TIME_DIGITS, 0),
            np.broadcast_to(self._tail, (n, self._tail.size)),
        ]
        return np.concatenate(parts, axis=1).tobytes()  # each record ends with ","


class FrameEncoder:
    """Encodes frames of trades of several symbols (one block of records per symbol)."""

    def __init__(self, symbols: tuple[str, ...] | list[str], fmt: str = MSGPACK) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        self.fmt = fmt
        layout = _MsgpackLayout if fmt == MSGPACK else _JsonLayout
        self._layouts = {s: layout(s) for s in symbols}

    @property
    def binary(self) -> bool:
        return self.fmt == MSGPACK

    def encode(self, blocks: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray | int]]) -> bytes:
        """``blocks``: ``(symbol, price, size, time_ms)`` with ``time_ms`` an array or one
        value for the whole block. Returns the frame (msgpack array or JSON text bytes)."""
        n = sum(int(b[1].shape[0]) for b in blocks)
        body = b"".join(self._layouts[sym].records(price, size, t) for sym, price, size, t in blocks)
        if self.fmt == MSGPACK:
            return msgpack_array_header(n) + body
        return b"[" + body[:-1] + b"]" if n else b"[]"


class TradePool:
    """Pre-generated plausible prices and sizes per symbol (a random walk around the
    symbol's level), handed out cyclically so a frame never calls the RNG."""

    def __init__(self, symbols: tuple[str, ...] | list[str], *, size: int = 1 << 18, seed: int = 11) -> None:
        from service.core.synthetic import start_price

        rng = np.random.default_rng(seed)
        self.size = size
        self._prices: dict[str, np.ndarray] = {}
        self._sizes: dict[str, np.ndarray] = {}
        self._pos = dict.fromkeys(symbols, 0)
        for s in symbols:
            walk = np.exp(np.cumsum(rng.standard_normal(size) * 2e-5))
            walk /= walk[-1] ** (np.arange(size) / size)  # ends where it starts: no jump at wrap-around
            self._prices[s] = np.maximum(np.round(start_price(s) * walk, 2), 0.01)
            notional = rng.lognormal(mean=np.log(500.0), sigma=1.2, size=size)
            self._sizes[s] = np.clip(np.round(notional / self._prices[s], 6), 1e-6, 999_999.0)

    def take(self, symbol: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        pos = self._pos[symbol]
        if n > self.size:
            raise ValueError(f"at most {self.size} trades per block")
        if pos + n > self.size:
            pos = 0
        self._pos[symbol] = pos + n
        return self._prices[symbol][pos : pos + n], self._sizes[symbol][pos : pos + n]
