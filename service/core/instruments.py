"""Cheap instruments for ``/metrics``: fixed-bucket histograms and a lag clock.

The service counts in plain attributes and :mod:`service.api.metrics` reads them at
scrape time; nothing here knows about Prometheus or the clock (times are passed in).
Observations happen once per batch, flush or request — never per trade. Not
thread-safe: every caller runs on the event loop.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterator, Sequence

# Bucket bounds, in the unit of the metric's name.
BATCH_ROWS_BOUNDS = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)
WRITE_SECONDS_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REQUEST_SECONDS_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts per bucket (``le`` semantics: a value equal to a bound falls in it), plus
    sum and count."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("bounds must be strictly increasing")
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count of values <= le), …, ("+Inf", count)]`` as Prometheus wants it."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


class LabeledHistograms:
    """One :class:`Histogram` per label value, created on first use. Label values must
    come from a small closed set (resolutions), or memory grows with them."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self._by_label: dict[str, Histogram] = {}

    def observe(self, label: str, value: float) -> None:
        hist = self._by_label.get(label)
        if hist is None:
            hist = self._by_label[label] = Histogram(self.bounds)
        hist.observe(value)

    def items(self) -> Iterator[tuple[str, Histogram]]:
        return iter(sorted(self._by_label.items()))


class LagClock:
    """How long the oldest unfinished submission has waited, to within ``resolution_s``.

    :meth:`mark` is called for every submission (sequence numbers increase) but keeps a
    mark only when the previous kept one is at least ``resolution_s`` old, so memory is
    bounded by elapsed time, not by the number of submissions (a store outage can leave
    millions spilled). Every submission has a kept mark at most ``resolution_s`` before
    it, so :meth:`oldest_age_s` over-states the true age by less than ``resolution_s`` and
    never under-states it.
    """

    def __init__(self, resolution_s: float = 1.0) -> None:
        self.resolution_s = resolution_s
        self._marks: deque[tuple[int, float]] = deque()  # (seq, when), seq increasing

    def mark(self, seq: int, now_s: float) -> None:
        if not self._marks or now_s - self._marks[-1][1] >= self.resolution_s:
            self._marks.append((seq, now_s))

    def done_through(self, seq: int) -> None:
        """Submissions up to ``seq`` are finished: the oldest unfinished is ``seq + 1``,
        covered by the last mark at or before it. (A lone finished mark stays: unmarked
        submissions after it may still be waiting; :meth:`clear` when nothing is.)"""
        marks = self._marks
        while len(marks) >= 2 and marks[1][0] <= seq + 1:
            marks.popleft()

    def clear(self) -> None:
        """Nothing is waiting."""
        self._marks.clear()

    def oldest_age_s(self, now_s: float) -> float:
        return max(0.0, now_s - self._marks[0][1]) if self._marks else 0.0
