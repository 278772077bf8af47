"""The wall clock, for adapters only: the pure core takes time as an argument.

Steady against steps: :func:`now_ms` is the wall clock read once, then carried forward by
the monotonic clock, and pulled towards the wall clock by at most ``max_slew`` (1 ms per
second) — the way NTP slews. So an operator's ``date -s``, a VM resumed with a stale
clock, or NTP stepping by an hour does not move the service's notion of now at once:
live bars neither close early (a step forward) nor stay open for an hour (a step back),
ingest does not refuse trades stamped at the true time as "in the future", and the
downsampler's ``now − grace`` neither races ahead of the data nor stalls. A small
correction (a few hundred ms) is absorbed within minutes; a large one is logged and
absorbed slowly, and a restart adopts the wall clock as it then is. Trade time always
comes from the trades themselves, so bars stay aligned to it whatever the clock says.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from service.core.timestamps import NS_PER_MS

log = logging.getLogger(__name__)

_STEP_WARN_NS = 1_000_000_000  # a wall-clock step above this is logged


class SteadyClock:
    def __init__(
        self,
        wall_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = time.monotonic_ns,
        *,
        max_slew: float = 0.001,
    ) -> None:
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        self.max_slew = max_slew
        self._lock = threading.Lock()
        self._last_mono = mono_ns()
        self._offset = wall_ns() - self._last_mono  # now = monotonic + offset
        self._warned_offset: int | None = None

    def now_ns(self) -> int:
        with self._lock:
            mono, wall = self._mono_ns(), self._wall_ns()
            elapsed = max(0, mono - self._last_mono)
            self._last_mono = max(mono, self._last_mono)
            gap = (wall - mono) - self._offset  # how far the wall clock is from ours
            allowed = int(elapsed * self.max_slew)
            self._offset += max(-allowed, min(allowed, gap))
            if abs(gap) > _STEP_WARN_NS and (
                self._warned_offset is None or abs((wall - mono) - self._warned_offset) > _STEP_WARN_NS
            ):
                self._warned_offset = wall - mono
                log.warning(
                    "the wall clock stepped %+.1fs away from the service's clock; the service keeps its "
                    "steady time and slews towards the wall clock by at most %.1f ms/s (a restart adopts "
                    "it at once)",
                    gap / 1e9,
                    self.max_slew * 1000,
                )
            elif abs(gap) <= _STEP_WARN_NS:
                self._warned_offset = None
            return self._last_mono + self._offset


_clock = SteadyClock()


def now_ms() -> int:
    return _clock.now_ns() // NS_PER_MS
