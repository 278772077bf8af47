"""The one form of a time on the command line (``--from``, ``--to``, ``--end``): an ISO 8601
date or date-time (UTC unless it says otherwise), or an epoch number whose magnitude names
its unit — 10 digits seconds, 13 milliseconds, 16 microseconds, 19 nanoseconds (the years
2001 to 2286 in each). Any other number is refused rather than guessed: ``5000`` could be
seconds or milliseconds of 1970, and ``trades delete --from <seconds>`` once deleted nothing
without a word because it took milliseconds only.

Pure: the text is parsed, no clock is read.
"""

from __future__ import annotations

import datetime as dt

from service.core.errors import UsageError

# (the lowest value, the unit): each unit's numbers of 2001-09-09 to 2286-11-20 (one digit count)
_UNITS = (
    (10**9, "s"),
    (10**12, "ms"),
    (10**15, "µs"),
    (10**18, "ns"),
)
FORMS = (
    "an ISO date like 2024-01-31 or 2024-01-31T12:00:00Z, or epoch seconds (10 digits), "
    "milliseconds (13), microseconds (16) or nanoseconds (19)"
)


def parse_time_ms(text: str, name: str) -> int:
    """``text`` as epoch milliseconds; :class:`UsageError` naming ``--name`` and the forms
    it takes when it is none of them or its unit cannot be told."""
    value = text.strip()
    if value.lstrip("-").isdigit():
        return _epoch_ms(int(value), name)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--{name} {text!r} is not a time: give {FORMS}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    ms = (parsed - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)
    if ms < 0:
        raise UsageError(f"--{name} {text!r} is before 1970")
    return int(ms)


def _epoch_ms(n: int, name: str) -> int:
    for low, unit in _UNITS:
        if low <= n < low * 10:
            return n * 1000 if unit == "s" else n // (low // 10**12)
    raise UsageError(f"--{name} {n} is ambiguous: its unit cannot be told from its size; give {FORMS}")
