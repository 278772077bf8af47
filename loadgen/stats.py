"""Numbers for reports: percentiles, latency summaries, and the terminal table.

Pure (no I/O, no clock): the runners collect raw samples and counters, these functions
turn them into the figures a report shows. Percentiles use linear interpolation between
closest ranks (numpy's default), so p50 of ``[1, 2, 3, 4]`` is 2.5 and p100 is the max.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

PERCENTILES = (50.0, 95.0, 99.0, 99.9)


def percentile(samples: Sequence[float] | np.ndarray, q: float) -> float | None:
    """The ``q``-th percentile (0..100) of ``samples``, ``None`` when there are none."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    data = np.asarray(samples, dtype=np.float64)
    if data.size == 0:
        return None
    return float(np.percentile(data, q))


def summarize(samples: Sequence[float] | np.ndarray | array[float], *, digits: int = 3) -> dict[str, Any]:
    """``{"n", "mean", "p50", "p95", "p99", "p999", "max", "min"}`` of ``samples`` (values rounded
    to ``digits``); the statistics are ``None`` when there are no samples."""
    data = np.asarray(samples, dtype=np.float64)
    n = int(data.size)
    if n == 0:
        return {"n": 0, "mean": None, "p50": None, "p95": None, "p99": None, "p999": None, "max": None, "min": None}
    qs = np.percentile(data, PERCENTILES)
    out: dict[str, Any] = {"n": n, "mean": _round(float(data.mean()), digits)}
    for q, value in zip(PERCENTILES, qs):
        out[f"p{q:g}".replace(".", "")] = _round(float(value), digits)  # p50 … p99, p999
    out["max"] = _round(float(data.max()), digits)
    out["min"] = _round(float(data.min()), digits)
    return out


def _round(value: float, digits: int) -> float:
    return round(value, digits) if math.isfinite(value) else value


def rate(count: float, seconds: float) -> float:
    """``count / seconds``, 0 for an empty interval."""
    return count / seconds if seconds > 0 else 0.0


class Meter:
    """A counter that also answers "how many since the last look" (for progress lines)."""

    __slots__ = ("total", "_seen")

    def __init__(self) -> None:
        self.total = 0
        self._seen = 0

    def add(self, n: int = 1) -> None:
        self.total += n

    def delta(self) -> int:
        d = self.total - self._seen
        self._seen = self.total
        return d


# --- formatting ---------------------------------------------------------------------------


def fmt_num(value: float | int | None, unit: str = "", digits: int = 0) -> str:
    """Thousands separators, a fixed number of decimals, ``-`` for missing values."""
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".rstrip() if unit else text


def fmt_latency(summary: dict[str, Any], unit: str = "ms") -> str:
    if not summary.get("n"):
        return "no samples"
    return (
        f"p50 {fmt_num(summary['p50'], digits=1)}  p95 {fmt_num(summary['p95'], digits=1)}  "
        f"p99 {fmt_num(summary['p99'], digits=1)}  p99.9 {fmt_num(summary.get('p999'), digits=1)}  "
        f"max {fmt_num(summary['max'], digits=1)} {unit}  "
        f"(n={summary['n']:,})"
    )


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str] | None = None, *, align: str | None = None) -> str:
    """A plain-text table; ``align`` is one character per column (``l`` or ``r``),
    default: first column left, the rest right."""
    body = [[("-" if c is None else str(c)) for c in row] for row in rows]
    all_rows = ([list(headers)] if headers else []) + body
    if not all_rows:
        return ""
    ncols = max(len(r) for r in all_rows)
    for r in all_rows:
        r.extend([""] * (ncols - len(r)))
    widths = [max(len(r[i]) for r in all_rows) for i in range(ncols)]
    align = align or ("l" + "r" * (ncols - 1))
    lines = []
    for idx, r in enumerate(all_rows):
        cells = [c.ljust(w) if align[i] == "l" else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if headers and idx == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: Iterable[Sequence[Any]], headers: Sequence[str], *, align: str | None = None) -> str:
    """The same rows as a GitHub-flavoured Markdown table."""
    align = align or ("l" + "r" * (len(headers) - 1))
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    for row in rows:
        out.append("| " + " | ".join("-" if c is None else str(c) for c in row) + " |")
    return "\n".join(out)
