"""Pure pieces of the InfluxDB store: which stored rows answer a history request, how
they fold into bars of the requested resolution, and how InfluxDB's CSV reads back.

History follows :mod:`service.storage.base` exactly::

    tier T bars in [from, wm_T) ∪ source(T) bars in [wm_T, wm_source) ∪ … ∪ raw in [wm_first, to)

with raw trades aggregated to the first tier's size inside InfluxDB (or to the requested
size for second resolutions, which no tier can serve). Every segment boundary is a
watermark, aligned to its tier and so to every smaller tier in the chain: each trade is
counted exactly once.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping

import msgspec

from service.core.models import Bar
from service.core.plan import Plan
from service.core.resolution import Resolution


class Segment(msgspec.Struct, frozen=True):
    """Rows in ``[start_ms, stop_ms)`` from tier ``tier`` (stored bars), or from raw trades
    aggregated to ``every_ms`` when ``tier`` is ``None``."""

    start_ms: int
    stop_ms: int
    tier: str | None = None
    every_ms: int | None = None


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
) -> list[Segment]:
    """The segments answering ``bars(resolution, [from_ms, to_ms))``, oldest first."""
    start, stop = history_span(resolution, from_ms, to_ms)
    if stop <= start:
        return []
    tier = plan.serving_tier(resolution)
    if tier is None:
        assert resolution.size_ms is not None  # months are always served by a day divisor
        return [Segment(start, stop, None, resolution.size_ms)]
    segments: list[Segment] = []
    cursor = start
    chain = plan.chain(tier)
    for link in chain:
        wm = watermarks.get(link.name)
        if wm is None:
            continue
        end = min(wm, stop)
        if end > cursor:
            segments.append(Segment(cursor, end, link.name))
            cursor = end
    if stop > cursor:
        segments.append(Segment(cursor, stop, None, chain[-1].size_ms))
    return segments


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

    def sorted(self) -> list[tuple[int, list[float | None]]]:
        return sorted(self.rows.items())


_FIELD_INDEX = {"open": 0, "high": 1, "low": 2, "close": 3, "volume": 4}


def compose(
    segments_rows: Iterable[list[tuple[int, list[float | None]]]],
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
    for rows in segments_rows:
        for t_ms, (ro, rh, rl, rc, rv) in rows:
            if ro is None or rh is None or rl is None or rc is None:
                continue
            start = resolution.bucket_start_ms(t_ms)
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


# --- InfluxDB's CSV -------------------------------------------------------------------


class QueryFailed(Exception):
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
