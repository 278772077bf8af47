"""Pure pieces of the InfluxDB store: which stored rows answer a history request, how
they fold into bars of the requested resolution, and how InfluxDB's CSV reads back.

History follows :mod:`service.storage.base` exactly, with the segments composed by
:func:`service.core.segments.history_segments` and raw trades aggregated to each raw
segment's ``every_ms`` inside InfluxDB (the first tier's size, or the requested size for
second resolutions, which no tier can serve).
"""

from __future__ import annotations

import calendar
import csv
from collections.abc import Iterable, Iterator, Mapping, Sequence

from service.core.errors import StoreUnavailable
from service.core.models import Bar
from service.core.plan import Plan
from service.core.resolution import Resolution
from service.core.segments import Segment, history_segments

__all__ = [
    "BarRows",
    "CsvReader",
    "QueryFailed",
    "Segment",
    "compose",
    "history_span",
    "plan_segments",
    "rfc3339_ms",
    "roll_up",
    "Row",
    "Rows",
]


def history_span(resolution: Resolution, from_ms: int, to_ms: int) -> tuple[int, int]:
    """Rows needed for bars starting in ``[from_ms, to_ms)``: up to the end of the last
    such bar, so the last bar is whole rather than cut at ``to_ms``."""
    if to_ms <= from_ms:
        return from_ms, from_ms
    last = resolution.bucket_start_ms(to_ms - 1)
    return from_ms, resolution.next_start_ms(last)


def plan_segments(
    plan: Plan,
    resolution: Resolution,
    from_ms: int,
    to_ms: int,
    watermarks: Mapping[str, int | None],
    dirty_span: tuple[int, int] | None = None,
) -> list[Segment]:
    """The segments answering ``bars(resolution, [from_ms, to_ms))``, oldest first: the
    core composition over :func:`history_span`. ``dirty_span``: the envelope of the dirty
    markers the serving chain has not consumed yet (late trades), read from raw trades
    until the tasks have rebuilt it."""
    start, stop = history_span(resolution, from_ms, to_ms)
    return history_segments(plan, resolution, start, stop, watermarks, dirty_span)


class BarRows:
    """Collects ``(t, field, value)`` rows of one segment into whole bars by time."""

    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: dict[int, list[float | None]] = {}

    def add(self, t_ms: int, field: str, value: float) -> None:
        index = _FIELD_INDEX.get(field)
        if index is None:
            return
        row = self.rows.get(t_ms)
        if row is None:
            row = self.rows[t_ms] = [None, None, None, None, 0.0]
        row[index] = value

    def sorted(self) -> Rows:
        return [(t, *values) for t, values in sorted(self.rows.items())]  # type: ignore[misc]


_FIELD_INDEX = {"open": 0, "high": 1, "low": 2, "close": 3, "volume": 4}

_DAY_MS: dict[str, int] = {}


def rfc3339_ms(text: str) -> int:
    """Epoch ms (floored) of a UTC time as InfluxDB writes ``_time`` in CSV:
    ``2024-12-31T19:00:00Z`` or with up to nine fraction digits. The bar queries return
    ``_time`` as it is rather than converting it in a Flux ``map()``, which costs Flux far
    more per row than this costs Python."""
    day = text[:10]
    base = _DAY_MS.get(day)
    if base is None:
        if len(_DAY_MS) > 100_000:
            _DAY_MS.clear()
        base = _DAY_MS[day] = calendar.timegm((int(text[:4]), int(text[5:7]), int(text[8:10]), 0, 0, 0)) * 1000
    if len(text) < 20 or text[10] != "T" or text[-1] != "Z":
        raise ValueError(f"not an RFC 3339 UTC time: {text!r}")
    ms = base + int(text[11:13]) * 3_600_000 + int(text[14:16]) * 60_000 + int(text[17:19]) * 1000
    if text[19] == ".":
        ms += int((text[20:-1] + "00")[:3])
    return ms


# A stored or aggregated bar as the reads return it: (start ms, open, high, low, close, volume)
Row = tuple[int, float | None, float | None, float | None, float | None, float | None]
Rows = list[Row]


def compose(
    segments_rows: Iterable[Rows],
    resolution: Resolution,
    from_ms: int,
    to_ms: int,
) -> list[Bar]:
    """Fold rows (each segment's sorted by time, segments oldest first) into bars of
    ``resolution`` starting in ``[from_ms, to_ms)``: open of the first row, max high, min
    low, close of the last, sum of volumes. Rows missing a price field are skipped (a bar
    half-written by an interrupted task; the next run rewrites it whole)."""
    bars: list[Bar] = []
    key = None
    o = h = low = c = v = 0.0
    grid = resolution.grid_ms  # inlined below: a year of minutes is 525,600 rows
    size, origin = grid if grid is not None else (0, 0)
    for rows in segments_rows:
        for t_ms, ro, rh, rl, rc, rv in rows:
            if ro is None or rh is None or rl is None or rc is None:
                continue
            start = (t_ms - origin) // size * size + origin if size else resolution.bucket_start_ms(t_ms)
            if start < from_ms or start >= to_ms:
                continue
            if start != key:
                if key is not None:
                    bars.append(Bar(key, o, h, low, c, v))
                key, o, h, low, c, v = start, ro, rh, rl, rc, rv or 0.0
            else:
                h = rh if rh > h else h
                low = rl if rl < low else low
                c = rc
                v += rv or 0.0
    if key is not None:
        bars.append(Bar(key, o, h, low, c, v))
    return bars


def roll_up(segments_rows: Iterable[Rows], row_sizes_ms: Sequence[int], chain_sizes_ms: Sequence[int]) -> Rows:
    """Fold rows finer than the serving tier into bars of each tier of its chain, smallest
    first, exactly the way the Flux tasks build those tiers: volumes summed one by one in
    time order from 0 (what InfluxDB's ``sum()`` does). So a bar composed from lower tiers
    is bit-identical to the stored bar the tasks write for it later; summing the same rows
    in another grouping would differ in the last bits of the volume.

    ``row_sizes_ms[i]`` is the bar size of segment ``i`` (tier size, or ``every_ms`` of a
    raw segment); ``chain_sizes_ms`` the sizes of the serving tier and those below it. Each
    tier's bucket is either wholly one stored row or wholly finer rows: segment boundaries
    are watermarks, aligned to their tier."""
    segments_rows = list(segments_rows)
    levels = [level for level in sorted(chain_sizes_ms) if any(size < level for size in row_sizes_ms)]
    if not levels:  # every row is a whole bar of the serving tier already (the common case)
        return [row for segment in segments_rows for row in segment]
    rows: list[tuple[int, int, Sequence[float | None]]] = [
        (row[0], size, row[1:]) for segment, size in zip(segments_rows, row_sizes_ms) for row in segment
    ]
    for level in levels:
        out: list[tuple[int, int, Sequence[float | None]]] = []
        key = None
        acc: list[float | None] = []
        for t, size, values in rows:
            if size >= level:
                if key is not None:
                    out.append((key, level, acc))
                    key = None
                out.append((t, size, values))
                continue
            start = t // level * level
            if start != key:
                if key is not None:
                    out.append((key, level, acc))
                key, acc = start, list(values)
                continue
            o, h, low, c, v = values
            if acc[0] is None:
                acc[0] = o
            if h is not None:
                acc[1] = h if acc[1] is None or h > acc[1] else acc[1]
            if low is not None:
                acc[2] = low if acc[2] is None or low < acc[2] else acc[2]
            if c is not None:
                acc[3] = c
            if v is not None:
                acc[4] = v if acc[4] is None else acc[4] + v
        if key is not None:
            out.append((key, level, acc))
        rows = out
    return [(t, *values) for t, _, values in rows]  # type: ignore[misc]


# --- InfluxDB's CSV -------------------------------------------------------------------


class QueryFailed(StoreUnavailable):
    """InfluxDB reported an error inside a query response."""


class CsvReader:
    """Incremental reader of the CSV InfluxDB returns for ``annotations: []``: each table
    block starts with a header row and blocks are separated by a blank line. Pulls the
    named columns out of every data row; an ``error`` table raises :class:`QueryFailed`."""

    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns = columns
        self._index: list[int] | None = None
        self._error = False

    def feed(self, line: str) -> tuple[str, ...] | None:
        line = line.rstrip("\r\n")
        if not line:
            self._index = None
            return None
        if line.startswith("#"):
            return None
        row = next(csv.reader([line])) if '"' in line else line.split(",")
        if self._index is None:
            if "error" in row and "result" not in row:
                self._error = True
                self._index = [row.index("error")]
                return None
            self._error = False
            missing = [c for c in self.columns if c not in row]
            if missing:
                raise QueryFailed(f"query result lacks columns {missing} (header {row})")
            self._index = [row.index(c) for c in self.columns]
            return None
        if self._error:
            raise QueryFailed(row[self._index[0]] if self._index[0] < len(row) else line)
        return tuple(row[i] for i in self._index)

    def rows(self, lines: Iterable[str]) -> Iterator[tuple[str, ...]]:
        for line in lines:
            row = self.feed(line)
            if row is not None:
                yield row
