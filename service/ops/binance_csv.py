"""Binance public ``aggTrades`` CSV files, parsed column-wise (no I/O beyond reading the
stream it is given; opening files and zips is :mod:`service.ops.importer`'s job).

Layout (https://data.binance.vision, spot and futures)::

    agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker[,is_best_match]

with or without that header row (spot files have none; futures files have one and no
``is_best_match``). ``transact_time`` is epoch **milliseconds** in older files and
**microseconds** in spot files from 2025 on: decided per row by magnitude, which is
unambiguous (milliseconds stay below 10^14 until the year 5138; microseconds are above
it after 1973). Times are kept to the millisecond, like every trade in tvflux.

Every row is accepted or rejected with one reason, the first that applies, in this
order: ``malformed row`` (wrong number of fields), ``bad id`` (``agg_trade_id`` not a
non-negative integer), ``bad time`` (not an integer, or outside
[2009-01-03, ``max_time_ms``]), ``bad price``, ``bad quantity`` (not a finite number
> 0), ``duplicate id`` (the same ``agg_trade_id`` earlier in the same chunk; see
:func:`drop_duplicate_ids`).

Parsing is vectorised with Arrow: every field is read as text and checked with one
regular expression per column, so one bad value rejects one row instead of failing the
whole file. Memory is bounded by the block size (a chunk of rows at a time).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import IO

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from service.core.errors import BadRequest
from service.core.models import SYMBOL_PATTERN

COLUMNS = (
    "agg_trade_id",
    "price",
    "quantity",
    "first_trade_id",
    "last_trade_id",
    "transact_time",
    "is_buyer_maker",
    "is_best_match",
)
USED = ("agg_trade_id", "price", "quantity", "transact_time")
MIN_TIME_MS = 1_230_940_800_000  # 2009-01-03, the first bitcoin block: nothing real is older
US_THRESHOLD = 10**14  # transact_time at or above this is in microseconds
DEFAULT_BLOCK_BYTES = 16 << 20  # ~200k rows per chunk
MAX_EXAMPLES = 3

_INT = r"^[0-9]{1,18}$"  # 18 digits: no int64 overflow, and microsecond times have 16
_POSITIVE_NUMBER = r"^(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"
_FILE_NAME = re.compile(r"^(?P<symbol>[A-Za-z0-9]+)-aggTrades-\d{4}-\d{2}(?:-\d{2})?\.(?:csv|zip)$", re.IGNORECASE)

MALFORMED, BAD_ID, BAD_TIME, BAD_PRICE, BAD_QUANTITY, DUPLICATE_ID = (
    "malformed row",
    "bad id",
    "bad time",
    "bad price",
    "bad quantity",
    "duplicate id",
)


class ImportFormatError(BadRequest, ValueError):
    """The file is not in the aggTrades layout at all (nothing row-by-row about it).
    Still a ``ValueError`` for callers that treat it as a bad value."""

    code = "import_format"


class Layout(msgspec.Struct, frozen=True):
    has_header: bool
    columns: int  # 7 (futures) or 8 (spot)


class Rejects(msgspec.Struct):
    """Rejected rows by reason, with a few examples of each."""

    counts: dict[str, int] = {}
    examples: dict[str, list[str]] = {}

    def add(self, reason: str, count: int, examples: list[str]) -> None:
        if count <= 0:
            return
        self.counts[reason] = self.counts.get(reason, 0) + count
        kept = self.examples.setdefault(reason, [])
        kept.extend(examples[: MAX_EXAMPLES - len(kept)])

    def merge(self, other: Rejects) -> None:
        for reason, count in other.counts.items():
            self.add(reason, count, other.examples.get(reason, []))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Chunk(msgspec.Struct, frozen=True):
    """The accepted rows of one block, in file order."""

    agg_ids: np.ndarray  # int64
    ts_ms: np.ndarray  # int64, epoch ms
    price: np.ndarray  # float64
    quantity: np.ndarray  # float64
    rejects: Rejects
    rows_read: int  # accepted + rejected in this block (malformed rows included)
    microsecond_rows: int  # accepted rows whose file time was in microseconds

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])


def symbol_from_name(name: str) -> str | None:
    """``BTCUSDT-aggTrades-2024-01.zip`` (or ``…-2024-01-15.csv``) → ``BTCUSDT``."""
    match = _FILE_NAME.match(name.rsplit("/", 1)[-1])
    if match is None:
        return None
    symbol = match.group("symbol").upper()
    return symbol if re.match(SYMBOL_PATTERN, symbol) else None


def sniff(head: bytes) -> Layout:
    """The layout from the first bytes of a file (a few lines are enough)."""
    lines = [line.strip() for line in head.splitlines() if line.strip()]
    if not lines:
        raise ImportFormatError("the file is empty")
    first = [f.strip().strip(b'"').lower() for f in lines[0].split(b",")]
    # A header starts with the first column's name; anything else is a data row (maybe a
    # bad one, which the parser then rejects on its own).
    has_header = first[0] == COLUMNS[0].encode()
    if has_header and tuple(f.decode(errors="replace") for f in first) not in (COLUMNS[:7], COLUMNS):
        raise ImportFormatError(f"unknown header {lines[0][:200]!r}; expected {','.join(COLUMNS)}")
    # The field count of the data lines that parse (one bad line must not decide it).
    counts = [len(line.split(b",")) for line in lines[1 if has_header else 0 :][:20]]
    usable = [n for n in counts if n in (7, 8)]
    if has_header:
        return Layout(True, len(first))
    if not usable:
        raise ImportFormatError(
            f"the first lines have {sorted(set(counts))} fields; aggTrades rows have 7 or 8 "
            "(is this an aggTrades file?)"
        )
    return Layout(False, max(set(usable), key=usable.count))


def read_chunks(
    stream: IO[bytes], layout: Layout, *, max_time_ms: int, block_bytes: int = DEFAULT_BLOCK_BYTES
) -> Iterator[Chunk]:
    """Parse ``stream`` (positioned at the start of the file) block by block."""
    malformed: list[str] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        malformed.append(row.text)
        return "skip"

    names = list(COLUMNS[: layout.columns])
    reader = pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(
            column_names=names, skip_rows=1 if layout.has_header else 0, block_size=block_bytes
        ),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            include_columns=list(USED),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    for batch in reader:
        bad, malformed[:] = list(malformed), []
        yield parse_batch(batch, max_time_ms=max_time_ms, malformed=bad)
    if malformed:  # rows skipped after the last block
        yield parse_batch(None, max_time_ms=max_time_ms, malformed=malformed)


def parse_batch(batch: pa.RecordBatch | None, *, max_time_ms: int, malformed: Sequence[str] = ()) -> Chunk:
    """Validate and convert one block of text columns (``agg_trade_id``, ``price``,
    ``quantity``, ``transact_time``)."""
    rejects = Rejects()
    rejects.add(MALFORMED, len(malformed), [t[:120] for t in malformed[:MAX_EXAMPLES]])
    if batch is None or batch.num_rows == 0:
        empty_i, empty_f = np.empty(0, np.int64), np.empty(0, np.float64)
        return Chunk(empty_i, empty_i, empty_f, empty_f, rejects, len(malformed), 0)
    ids_text, price_text = batch.column("agg_trade_id"), batch.column("price")
    qty_text, time_text = batch.column("quantity"), batch.column("transact_time")

    id_ok = _mask(pc.match_substring_regex(ids_text, _INT))
    ids = _to_numpy(ids_text, id_ok, pa.int64(), "0")
    raw_time = _to_numpy(time_text, _mask(pc.match_substring_regex(time_text, _INT)), pa.int64(), "0")
    micro = raw_time >= US_THRESHOLD
    ts_ms = np.where(micro, raw_time // 1000, raw_time)
    time_ok = (ts_ms >= MIN_TIME_MS) & (ts_ms <= max_time_ms)  # unparsable times became 0
    price = _to_numpy(price_text, _mask(pc.match_substring_regex(price_text, _POSITIVE_NUMBER)), pa.float64(), "nan")
    qty = _to_numpy(qty_text, _mask(pc.match_substring_regex(qty_text, _POSITIVE_NUMBER)), pa.float64(), "nan")
    price_ok = np.isfinite(price) & (price > 0)
    qty_ok = np.isfinite(qty) & (qty > 0)

    # First failing reason wins.
    remaining = np.ones(batch.num_rows, dtype=bool)
    for reason, ok, text in (
        (BAD_ID, id_ok, ids_text),
        (BAD_TIME, time_ok, time_text),
        (BAD_PRICE, price_ok, price_text),
        (BAD_QUANTITY, qty_ok, qty_text),
    ):
        failing = remaining & ~ok
        if failing.any():
            rejects.add(reason, int(failing.sum()), _examples(text, failing))
        remaining &= ok
    keep = np.flatnonzero(remaining)
    return Chunk(
        ids[keep], ts_ms[keep], price[keep], qty[keep], rejects, batch.num_rows + len(malformed), int(micro[keep].sum())
    )


def _mask(matches: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(matches.to_numpy(zero_copy_only=False), dtype=bool)


def _to_numpy(text: pa.Array, ok: np.ndarray, kind: pa.DataType, filler: str) -> np.ndarray:
    """Cast the text column, with rows failing ``ok`` replaced by ``filler`` first."""
    cleaned = pc.if_else(pa.array(ok), text, pa.scalar(filler))
    return np.asarray(pc.cast(cleaned, kind).to_numpy(zero_copy_only=False))


def _examples(text: pa.Array, failing: np.ndarray) -> list[str]:
    rows = np.flatnonzero(failing)[:MAX_EXAMPLES]
    return [repr(text[int(i)].as_py())[:60] for i in rows]


def drop_duplicate_ids(chunk: Chunk) -> Chunk:
    """Keep the first row of each ``agg_trade_id`` in the chunk; the others are rejected
    as ``duplicate id``."""
    _, first = np.unique(chunk.agg_ids, return_index=True)
    if first.shape[0] == len(chunk):
        return chunk
    duplicate = np.ones(len(chunk), dtype=bool)
    duplicate[first] = False
    rejects = Rejects()
    rejects.merge(chunk.rejects)
    rejects.add(DUPLICATE_ID, int(duplicate.sum()), [str(i) for i in chunk.agg_ids[duplicate][:MAX_EXAMPLES]])
    keep = np.sort(first)
    return Chunk(
        chunk.agg_ids[keep],
        chunk.ts_ms[keep],
        chunk.price[keep],
        chunk.quantity[keep],
        rejects,
        chunk.rows_read,
        chunk.microsecond_rows,
    )


def split_last_millisecond(chunk: Chunk) -> tuple[Chunk, Chunk | None]:
    """Cut off the trades of the chunk's newest millisecond (to be parsed with the next
    chunk), so consecutive chunks never share a millisecond. Rows keep their order."""
    if len(chunk) == 0:
        return chunk, None
    last = chunk.ts_ms.max()
    tail = chunk.ts_ms == last
    if tail.all():
        return chunk, None
    head = ~tail
    empty = Rejects()
    keep = Chunk(
        chunk.agg_ids[head],
        chunk.ts_ms[head],
        chunk.price[head],
        chunk.quantity[head],
        chunk.rejects,
        chunk.rows_read,
        chunk.microsecond_rows,
    )
    carry = Chunk(chunk.agg_ids[tail], chunk.ts_ms[tail], chunk.price[tail], chunk.quantity[tail], empty, 0, 0)
    return keep, carry


def concat(first: Chunk | None, second: Chunk) -> Chunk:
    """``first`` (a carried tail) followed by ``second``."""
    if first is None:
        return second
    return Chunk(
        np.concatenate([first.agg_ids, second.agg_ids]),
        np.concatenate([first.ts_ms, second.ts_ms]),
        np.concatenate([first.price, second.price]),
        np.concatenate([first.quantity, second.quantity]),
        second.rejects,
        second.rows_read,
        second.microsecond_rows,
    )
