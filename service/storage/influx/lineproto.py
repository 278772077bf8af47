"""InfluxDB line protocol for trades (and bars), built fast and escaped properly.

Pure: arrays in, ``bytes`` out, no I/O. One trade is one line::

    trades,symbol=BTCUSD price=30000.5,size=0.25 1700000000000000000
    trades,symbol=BTCUSD price=30000.5,size=0.25,id="a\\"b" 1700000000000000001

Why not the client's ``Point``: building one object per trade costs microseconds; a tick
stream needs ~1M trades/s on one core. So numbers are formatted column-wise with numpy:

* a float is written as the shortest *fixed-point* decimal ``m / 10**d`` (``d <= 12``) that
  parses back to exactly the same float64 — checked, not assumed: ``m / 10**d`` is one
  correctly rounded IEEE division, the same value a correctly rounding parser (Go's
  ``strconv.ParseFloat`` in InfluxDB) produces for the decimal text. Floats with no such
  short form (huge, tiny, negative) fall back to ``repr``, which is also exact;
* digits come four at a time from a lookup table, every line is laid out in a fixed-width
  byte matrix, and the padding is squeezed out with one boolean mask.

Lines of a batch may come out in any order (InfluxDB keys points by series and time, so
order inside a request does not matter). Escaping follows the line protocol reference:
measurement — comma, space; tag keys and values — comma, equals sign, space; string field
values — double quote, backslash. Newlines and carriage returns cannot be escaped anywhere
(a newline ends the line), so they are rejected, as are other control characters and
backslashes in names and tag values
(the parser keeps a lone backslash but one before a special character changes meaning, so
no spelling of it round-trips everywhere), empty names, and non-finite floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np

from service.core.timestamps import NS_PER_MS

TRADES_MEASUREMENT = "trades"
SYMBOL_TAG = "symbol"

_MAX_DECIMALS = 12  # fixed-point form up to 1e-12; smaller sizes fall back to repr
_MANTISSA_LIMIT = float(2**53)  # m must be an exact float64 integer
_CHUNK_ROWS = 32_768  # rows per vectorised pass: keeps the byte matrix in cache

_POW10_F = np.array([10.0**k for k in range(_MAX_DECIMALS + 1)])
_POW10_I = np.array([10**k for k in range(19)], dtype=np.int64)
# "0000".."9999" as little packets of four ASCII bytes (read back through a byte view, so
# the machine's endianness does not matter).
_LUT4 = np.frombuffer(b"".join(b"%04d" % i for i in range(10_000)), dtype=np.uint32)


# --- escaping -----------------------------------------------------------------------


def _check_plain(text: str, what: str) -> None:
    if not text:
        raise ValueError(f"{what} must not be empty")
    if "\n" in text or "\r" in text:
        raise ValueError(f"{what} {text!r} contains a line break, which line protocol cannot carry")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        # tabs and other controls: parsers disagree on them (the Python client even writes
        # "\t"), so refuse rather than store something else than was asked
        raise ValueError(f"{what} {text!r} contains a control character")
    if "\\" in text:
        raise ValueError(f"{what} {text!r} contains a backslash, which does not round-trip in line protocol")


def escape_measurement(name: str) -> str:
    _check_plain(name, "measurement")
    if name.startswith("#"):
        raise ValueError(f"measurement {name!r} would turn the line into a comment")
    return name.replace(",", "\\,").replace(" ", "\\ ")


def escape_tag(text: str, what: str = "tag") -> str:
    """Escape a tag key or value (comma, equals sign, space)."""
    _check_plain(text, what)
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def escape_string_field(value: str) -> str:
    """A string field value, quotes included (backslash and double quote escaped)."""
    if "\n" in value or "\r" in value or "\x00" in value:
        raise ValueError(f"string field {value!r} contains a line break or NUL, which line protocol cannot carry")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def series_prefix(measurement: str, tags: Sequence[tuple[str, str]]) -> str:
    """``measurement,tag=value,...`` — computed once per symbol, not per line."""
    parts = [escape_measurement(measurement)]
    for key, value in sorted(tags):  # sorted tags are what InfluxDB stores anyway
        parts.append(f"{escape_tag(key, 'tag key')}={escape_tag(value, 'tag value')}")
    return ",".join(parts)


# --- timestamps ---------------------------------------------------------------------


def unique_ns(ts_ns: np.ndarray) -> np.ndarray:
    """``ts_ns`` with equal stamps pushed apart by whole nanoseconds (order of arrival kept).

    InfluxDB overwrites a point with the same series and time, so two trades of one symbol
    in one instant would silently become one. The service already makes stamps unique per
    symbol; this is the last line of defence inside one batch. Already strictly increasing
    input (the usual case) costs one pass and is returned as is.
    """
    ts = np.asarray(ts_ns, dtype=np.int64)
    if ts.size < 2 or bool(np.all(ts[1:] > ts[:-1])):
        return ts
    order = np.argsort(ts, kind="stable")
    ranked = ts[order]
    index = np.arange(ranked.size, dtype=np.int64)
    # after sorting, s[i] = max(s[i], s[i-1] + 1): a running max of s - i, plus i
    bumped = np.maximum.accumulate(ranked - index) + index
    out = np.empty_like(ts)
    out[order] = bumped
    return out


# --- numbers ------------------------------------------------------------------------


def _fixed_point(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split floats into ``m`` and ``d`` with ``m / 10**d == x`` exactly and ``d`` minimal.
    Returns (m, d, ok); rows with ``ok`` false need the ``repr`` fallback."""
    m = np.zeros(x.shape, dtype=np.int64)
    d = np.full(x.shape, -1, dtype=np.int64)
    todo = (x >= 0.0) & (x < _MANTISSA_LIMIT)
    for k in range(_MAX_DECIMALS + 1):
        if not todo.any():
            break
        with np.errstate(over="ignore"):  # huge values overflow to inf and simply miss
            scaled = np.rint(x * _POW10_F[k])
        hit = todo & (scaled < _MANTISSA_LIMIT) & (scaled / _POW10_F[k] == x)
        m[hit] = scaled[hit].astype(np.int64)
        d[hit] = k
        todo &= ~hit
    return m, d, d >= 0


def _digits(v: np.ndarray, groups: int) -> np.ndarray:
    """ASCII digits of non-negative int64 ``v``, zero-padded to ``4 * groups``: (n, 4*groups) uint8."""
    out = np.empty((v.shape[0], groups), dtype=np.uint32)
    rest = v.copy()
    for g in range(groups - 1, -1, -1):
        out[:, g] = _LUT4[rest % 10_000]
        rest //= 10_000
    return out.view(np.uint8).reshape(v.shape[0], 4 * groups)


def _digit_count(v: np.ndarray) -> np.ndarray:
    return np.maximum(np.searchsorted(_POW10_I, v, side="right"), 1)


def _groups_for(v: np.ndarray) -> int:
    """Four-digit groups needed for the largest value of ``v`` (at least one)."""
    top = int(v.max()) if v.size else 0
    return max(1, (len(str(top)) + 3) // 4)


class _Layout:
    """A fixed-width line matrix for one chunk: parts are appended left to right as byte
    blocks plus a keep-mask; :meth:`tobytes` squeezes out what is not kept. Block widths
    adapt to the chunk (a price block is as wide as the chunk's largest price needs), so
    the matrix carries little padding."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.parts: list[tuple[np.ndarray | bytes, np.ndarray | None, int]] = []

    def const(self, text: bytes) -> None:
        self.parts.append((text, None, len(text)))

    def integer(self, v: np.ndarray) -> None:
        groups = _groups_for(v)
        width = 4 * groups
        keep = np.arange(width) >= (width - _digit_count(v))[:, None]
        self.parts.append((_digits(v, groups), keep, width))

    def fixed(self, m: np.ndarray, d: np.ndarray) -> None:
        scale = _POW10_I[d]
        whole = m // scale
        self.integer(whole)
        top = int(d.max()) if d.size else 0
        if top == 0:
            return
        groups = (top + 3) // 4
        width = 4 * groups
        # the fraction, left-aligned in ``width`` digits; digits past ``d`` are dropped
        frac = (m - whole * scale) * _POW10_I[width - d]
        self.parts.append((np.full((self.rows, 1), ord("."), dtype=np.uint8), (d > 0)[:, None], 1))
        self.parts.append((_digits(frac, groups), np.arange(width) < d[:, None], width))

    def strings(self, values: np.ndarray) -> None:
        """A column of byte strings (numpy ``S`` dtype, NUL-padded; values hold no NUL)."""
        width = values.dtype.itemsize
        block = values.view(np.uint8).reshape(self.rows, width)
        self.parts.append((block, block != 0, width))

    def tobytes(self) -> bytes:
        total = sum(width for _, _, width in self.parts)
        matrix = np.empty((self.rows, total), dtype=np.uint8)
        keep = np.ones((self.rows, total), dtype=bool)
        col = 0
        for block, mask, width in self.parts:
            if isinstance(block, bytes):
                matrix[:, col : col + width] = np.frombuffer(block, dtype=np.uint8)
            else:
                matrix[:, col : col + width] = block
                keep[:, col : col + width] = mask
            col += width
        return matrix[keep].tobytes()


def _check_finite(name: str, values: np.ndarray) -> None:
    if not bool(np.all(np.isfinite(values))):
        raise ValueError(f"{name} contains NaN or infinity, which line protocol cannot carry")


def _encode_numeric(
    prefix: bytes,
    names: Sequence[bytes],
    columns: Sequence[np.ndarray],
    ts_ns: np.ndarray,
    strings: tuple[bytes, np.ndarray] | None = None,
) -> bytes:
    """Lines ``prefix name0=v0,name1=v1[,key="s"] ts`` for float columns (and one optional
    column of escaped, quoted string values), vectorised with a ``repr`` fallback."""
    out: list[bytes] = []
    n = ts_ns.shape[0]
    for lo in range(0, n, _CHUNK_ROWS):
        hi = min(n, lo + _CHUNK_ROWS)
        split = [_fixed_point(col[lo:hi]) for col in columns]
        fast = np.logical_and.reduce([ok for _, _, ok in split])
        ts = ts_ns[lo:hi]
        all_fast = bool(fast.all())
        rows: slice | np.ndarray
        if all_fast:
            rows = slice(None)
        else:
            rows = fast
            slow = np.flatnonzero(~fast)
            extra = None if strings is None else (strings[0], strings[1][lo:hi][slow])
            out.append(_encode_rows_slow(prefix, names, [c[lo:hi][slow] for c in columns], ts[slow], extra))
        layout = _Layout(hi - lo if all_fast else int(np.count_nonzero(fast)))
        for i, ((m, d, _), name) in enumerate(zip(split, names)):
            layout.const((prefix + b" " if i == 0 else b",") + name + b"=")
            layout.fixed(m[rows], d[rows])
        if strings is not None:
            layout.const(b"," + strings[0] + b"=")
            layout.strings(strings[1][lo:hi][rows])
        layout.const(b" ")
        layout.integer(ts[rows])
        layout.const(b"\n")
        if layout.rows:
            out.append(layout.tobytes())
    return b"".join(out)


def _encode_rows_slow(
    prefix: bytes,
    names: Sequence[bytes],
    columns: Sequence[np.ndarray],
    ts_ns: np.ndarray,
    strings: tuple[bytes, np.ndarray] | None = None,
) -> bytes:
    lines = []
    for i, t in enumerate(ts_ns.tolist()):
        fields = b",".join(b"%s=%s" % (k, repr(float(col[i])).encode()) for k, col in zip(names, columns))
        if strings is not None:
            fields += b",%s=%s" % (strings[0], strings[1][i])
        lines.append(b"%s %s %d\n" % (prefix, fields, t))
    return b"".join(lines)


# --- public encoders ----------------------------------------------------------------


def encode_trades(
    symbol: str,
    ts_ns: np.ndarray,
    price: np.ndarray,
    size: np.ndarray,
    ids: Sequence[str | None] | None = None,
    *,
    measurement: str = TRADES_MEASUREMENT,
) -> bytes:
    """Line protocol for one symbol's trades; ``ts_ns`` are epoch nanoseconds.

    Raises :class:`ValueError` for non-finite numbers, negative timestamps, or names, tags
    and ids that line protocol cannot carry (see the module docstring).
    """
    ts = np.ascontiguousarray(ts_ns, dtype=np.int64)
    price = np.ascontiguousarray(price, dtype=np.float64)
    size = np.ascontiguousarray(size, dtype=np.float64)
    if not (ts.shape == price.shape == size.shape) or ts.ndim != 1:
        raise ValueError("ts_ns, price and size must be 1-d arrays of one length")
    if ids is not None and len(ids) != ts.shape[0]:
        raise ValueError("ids must be as long as ts_ns")
    if ts.size == 0:
        return b""
    _check_finite("price", price)
    _check_finite("size", size)
    if int(ts.min()) < 0:
        raise ValueError("timestamps before 1970 are not supported")
    prefix = series_prefix(measurement, [(SYMBOL_TAG, symbol)]).encode()
    names = (b"price", b"size")
    with_id = [] if ids is None else [i for i, v in enumerate(ids) if v is not None]
    if not with_id:
        return _encode_numeric(prefix, names, (price, size), ts)
    plain = np.ones(ts.shape[0], dtype=bool)
    plain[with_id] = False
    head = _encode_numeric(prefix, names, (price[plain], size[plain]), ts[plain])
    present = cast("list[str]", ids)  # the entries at ``with_id`` are the ones that are not None
    quoted = [escape_string_field(present[i]) for i in with_id]
    # one join + split turns the Python strings into a NUL-padded bytes column at C speed
    column = np.array("\n".join(quoted).encode().split(b"\n"), dtype=np.bytes_)
    picked = np.asarray(with_id)
    tail = _encode_numeric(prefix, names, (price[picked], size[picked]), ts[picked], (b"id", column))
    return head + tail


BAR_FIELDS = ("open", "high", "low", "close", "volume")


def encode_bars(
    measurement: str,
    symbol: str,
    time_ms: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    trades: np.ndarray | None = None,
) -> bytes:
    """Bars as the Flux tasks write them (measurement ``bars_<tier>``, time = bar start).
    Used by tests and tools to seed a tier; ``trades`` is written as an integer field."""
    time_ns = np.asarray(time_ms, dtype=np.int64) * NS_PER_MS
    columns = [np.ascontiguousarray(c, dtype=np.float64) for c in (open_, high, low, close, volume)]
    for name, col in zip(BAR_FIELDS, columns):
        _check_finite(name, col)
    prefix = series_prefix(measurement, [(SYMBOL_TAG, symbol)]).encode()
    body = _encode_numeric(prefix, [n.encode() for n in BAR_FIELDS], columns, time_ns)
    if trades is None:
        return body
    counts = np.asarray(trades, dtype=np.int64).tolist()
    extra = "".join(f"{prefix.decode()} trades={c}i {t}\n" for c, t in zip(counts, time_ns.tolist()))
    return body + extra.encode()


def split_lines(payload: bytes, lines_per_chunk: int) -> list[bytes]:
    """Cut a line-protocol payload into requests of at most ``lines_per_chunk`` lines
    (InfluxDB recommends ~5,000 per write), always at line ends."""
    if lines_per_chunk < 1:
        raise ValueError("lines_per_chunk must be >= 1")
    if not payload:
        return []
    ends = np.flatnonzero(np.frombuffer(payload, dtype=np.uint8) == 0x0A) + 1
    cuts = ends[lines_per_chunk - 1 :: lines_per_chunk].tolist()
    if not cuts or cuts[-1] != len(payload):
        cuts.append(len(payload))
    chunks = []
    start = 0
    for cut in cuts:
        chunks.append(payload[start:cut])
        start = cut
    return chunks
