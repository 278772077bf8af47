"""Politeness towards a venue, as pure rules: budgets for what we send, what a 429 or 418
means, and how long to wait before reconnecting. Times are arguments (seconds)."""

from __future__ import annotations

import math


class TokenBucket:
    """At most ``rate_per_s`` on average, ``burst`` at once. :meth:`wait_s` says how long
    to wait before spending ``cost``; :meth:`spend` records it (the caller waits, then
    spends, so the bucket never goes below zero)."""

    def __init__(self, rate_per_s: float, burst: float) -> None:
        if rate_per_s <= 0 or burst <= 0:
            raise ValueError("rate and burst must be > 0")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._at_s: float | None = None

    def _refill(self, now_s: float) -> None:
        if self._at_s is not None and now_s > self._at_s:
            self._tokens = min(self.burst, self._tokens + (now_s - self._at_s) * self.rate_per_s)
        if self._at_s is None or now_s > self._at_s:
            self._at_s = now_s

    def wait_s(self, now_s: float, cost: float = 1.0) -> float:
        self._refill(now_s)
        cost = min(cost, self.burst)  # a request heavier than the burst waits for a full bucket
        return 0.0 if self._tokens >= cost else (cost - self._tokens) / self.rate_per_s

    def spend(self, now_s: float, cost: float = 1.0) -> None:
        self._refill(now_s)
        self._tokens -= min(cost, self.burst)


class RestGate:
    """When a venue's REST API may be asked again: our own weight budget, the weight the
    venue reports (pause when it is past ``pause_at`` of ``limit``), a 429 (wait its
    ``Retry-After``), a 418 (banned: nothing until the ban ends)."""

    def __init__(self, rate_per_s: float, burst: int, *, limit_per_min: int | None = None, pause_at: float = 0.8):
        self.bucket = TokenBucket(rate_per_s, burst)
        self.limit_per_min = limit_per_min
        self.pause_at = pause_at
        self.paused_until_s = 0.0
        self.banned = False  # the pause is a ban (418), not a back-off
        self.weight_spent = 0
        self.requests = 0
        self.reported_weight: int | None = None

    def wait_s(self, now_s: float, weight: int) -> float:
        return max(self.paused_until_s - now_s, self.bucket.wait_s(now_s, weight), 0.0)

    def spend(self, now_s: float, weight: int) -> None:
        self.bucket.spend(now_s, weight)
        self.weight_spent += weight
        self.requests += 1

    def answered(self, now_s: float, status: int, retry_after_s: float | None, used_weight: int | None) -> None:
        """Learn from an answer: its status, its ``Retry-After`` (seconds) and the used
        weight the venue reported."""
        if used_weight is not None:
            self.reported_weight = used_weight
            if self.limit_per_min and used_weight >= self.pause_at * self.limit_per_min:
                # the venue counts per minute: wait for the next one before asking more
                self._pause(now_s, 60.0 - math.fmod(now_s, 60.0), banned=False)
        if status == 429:
            self._pause(now_s, retry_after_s if retry_after_s is not None else 60.0, banned=False)
        elif status == 418:
            self._pause(now_s, retry_after_s if retry_after_s is not None else 120.0, banned=True)

    def _pause(self, now_s: float, for_s: float, *, banned: bool) -> None:
        until = now_s + max(for_s, 0.0)
        if until > self.paused_until_s:
            self.paused_until_s = until
            self.banned = banned
        elif banned:
            self.banned = True


def backoff_s(attempt: int, *, base_s: float, cap_s: float, jitter: float) -> float:
    """Exponential back-off with full jitter: a wait in ``[0, min(cap, base·2^attempt)]``
    picked by ``jitter`` in [0, 1) (so reconnecting clients spread out instead of
    arriving together). ``attempt`` counts failures since the last good connection."""
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt, 30))
    return max(0.0, min(1.0, jitter)) * ceiling
