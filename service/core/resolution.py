"""TradingView resolution strings and bucket alignment, in epoch milliseconds.

Pure: no clock, no I/O. Every bucket is aligned to the UTC epoch grid:

* seconds and minutes: ``floor(t / size) * size`` (every accepted minute count divides a
  day, so minute buckets are also aligned to 00:00 UTC);
* ``1D``/``3D``: whole UTC days counted from 1970-01-01 (3D buckets start on days
  divisible by 3 since the epoch — a fixed grid, so pages never shift);
* ``1W``: Monday 00:00 UTC (1970-01-05 was the first Monday after the epoch);
* ``1M``: the first of the calendar month, 00:00 UTC.
"""

from __future__ import annotations

import enum

import msgspec

from service.core.errors import InvalidResolution

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
# 1970-01-01 was a Thursday; the first Monday is four days later.
_FIRST_MONDAY_MS = 4 * DAY_MS


class Unit(enum.Enum):
    SECOND = "S"
    MINUTE = ""
    DAY = "D"
    WEEK = "W"
    MONTH = "M"


_UNIT_MS = {Unit.SECOND: SECOND_MS, Unit.MINUTE: MINUTE_MS, Unit.DAY: DAY_MS, Unit.WEEK: WEEK_MS}


class Resolution(msgspec.Struct, frozen=True):
    """A bar size. ``text`` is the canonical TradingView spelling (``"1"``, ``"1D"``)."""

    unit: Unit
    count: int

    @property
    def text(self) -> str:
        return f"{self.count}{self.unit.value}"

    @property
    def size_ms(self) -> int | None:
        """Fixed bucket length, or ``None`` for calendar months."""
        if self.unit is Unit.MONTH:
            return None
        return self.count * _UNIT_MS[self.unit]

    @property
    def nominal_ms(self) -> int:
        """Length used to size requests; a month counts as 31 days so ranges never fall short."""
        return self.size_ms if self.size_ms is not None else self.count * 31 * DAY_MS

    @property
    def grid_ms(self) -> tuple[int, int] | None:
        """``(size, origin)``: buckets start at ``origin + k * size`` (weeks on Mondays), or
        ``None`` for calendar months. For loops over many bars, where a method call per
        bar costs more than the arithmetic."""
        if self.unit is Unit.MONTH:
            return None
        return self.count * _UNIT_MS[self.unit], _FIRST_MONDAY_MS if self.unit is Unit.WEEK else 0

    def bucket_start_ms(self, t_ms: int) -> int:
        """Start of the bucket that contains ``t_ms``."""
        grid = self.grid_ms
        if grid is None:
            index = _month_index(t_ms)
            return _month_start_ms(index - index % self.count)
        size, origin = grid
        return (t_ms - origin) // size * size + origin

    def next_start_ms(self, start_ms: int) -> int:
        """Start of the bucket after the one starting at ``start_ms`` (which must be aligned)."""
        if self.unit is Unit.MONTH:
            return _month_start_ms(_month_index(start_ms) + self.count)
        return start_ms + self.count * _UNIT_MS[self.unit]

    def bucket_count(self, from_ms: int, to_ms: int) -> int:
        """How many buckets intersect ``[from_ms, to_ms)``."""
        if to_ms <= from_ms:
            return 0
        first = self.bucket_start_ms(from_ms)
        last = self.bucket_start_ms(to_ms - 1)
        if self.unit is Unit.MONTH:
            return (_month_index(last) - _month_index(first)) // self.count + 1
        size = self.size_ms
        assert size is not None  # only calendar months lack a fixed size, handled above
        return (last - first) // size + 1

    def is_multiple_of(self, size_ms: int) -> bool:
        """Whether buckets of ``size_ms`` (aligned to the epoch) tile every bucket exactly."""
        if self.unit is Unit.MONTH:
            return DAY_MS % size_ms == 0
        if self.unit is Unit.WEEK:
            # Weeks start on a day boundary four days past the epoch.
            return DAY_MS % size_ms == 0
        own = self.size_ms
        assert own is not None  # only calendar months lack a fixed size, handled above
        return own % size_ms == 0


SECOND_COUNTS = (1, 5, 15, 30)
MINUTE_COUNTS = (1, 3, 5, 15, 30, 45, 60, 120, 180, 240, 360, 480, 720)
DAY_COUNTS = (1, 3)

_BY_TEXT: dict[str, Resolution] = {}
for _n in SECOND_COUNTS:
    _BY_TEXT[f"{_n}S"] = Resolution(Unit.SECOND, _n)
for _n in MINUTE_COUNTS:
    _BY_TEXT[str(_n)] = Resolution(Unit.MINUTE, _n)
for _n in DAY_COUNTS:
    _BY_TEXT[f"{_n}D"] = Resolution(Unit.DAY, _n)
_BY_TEXT["1W"] = Resolution(Unit.WEEK, 1)
_BY_TEXT["1M"] = Resolution(Unit.MONTH, 1)

#: Canonical spellings, shortest bars first — what ``/udf/config`` advertises.
SUPPORTED: tuple[str, ...] = tuple(_BY_TEXT)

# TradingView's legacy one-letter forms.
_ALIASES = {"D": "1D", "W": "1W", "M": "1M"}


def parse_resolution(text: str) -> Resolution:
    """Parse a TradingView resolution string, or raise :class:`InvalidResolution`."""
    key = _ALIASES.get(text, text)
    try:
        return _BY_TEXT[key]
    except (KeyError, TypeError):
        raise InvalidResolution(
            f"unsupported resolution {text!r}",
            details={"supported": list(SUPPORTED)},
        ) from None


# --- calendar months without datetime: Howard Hinnant's civil-from-days algorithm ---


def _civil_from_days(days: int) -> tuple[int, int]:
    """(year, month) of the proleptic Gregorian date ``days`` after 1970-01-01."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return year, month


def _days_from_civil(year: int, month: int) -> int:
    """Days from 1970-01-01 to the first of ``month`` in ``year``."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    mp = month + 9 if month <= 2 else month - 3
    doy = (153 * mp + 2) // 5
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _month_index(t_ms: int) -> int:
    year, month = _civil_from_days(t_ms // DAY_MS)
    return year * 12 + (month - 1)


def _month_start_ms(index: int) -> int:
    return _days_from_civil(index // 12, index % 12 + 1) * DAY_MS
