"""Watches this process's file descriptors (see :mod:`service.core.descriptors`): sampled
once a second from ``/proc/self/fd``; a warning in the log when the use reaches 90 % of
``RLIMIT_NOFILE``, one line when it is back, and the judgement for ``/health/ready``."""

from __future__ import annotations

import asyncio
import logging
import os
import resource

from service.core.descriptors import DescriptorUse, describe, pressure

log = logging.getLogger(__name__)
FD_DIR = "/proc/self/fd"
SAMPLE_EVERY_S = 1.0


def sample() -> DescriptorUse | None:
    """Descriptors open and the soft limit, or ``None`` where ``/proc`` is not there."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft if soft != resource.RLIM_INFINITY else 0
    try:
        open_fds = len(os.listdir(FD_DIR))
    except FileNotFoundError:
        return None
    except OSError:  # EMFILE: listing /proc needs a descriptor of its own, and there is none left
        open_fds = limit
    return DescriptorUse(open_fds, limit)


class DescriptorWatch:
    def __init__(self) -> None:
        self.last: DescriptorUse | None = None
        self.short = False  # at or past the warning level (with hysteresis)

    def check(self) -> None:
        use = sample()
        if use is None:
            return
        self.last = use
        short = pressure(use, self.short)
        if short and not self.short:
            log.warning("%s", describe(use))
        elif self.short and not short:
            log.info("file descriptors: %d of %d in use, enough again", use.open_fds, use.limit_fds)
        self.short = short

    def reason(self) -> str | None:
        """For ``/health/ready``: why new connections are (about to be) refused, or ``None``."""
        return describe(self.last) if self.short and self.last is not None else None

    async def run(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(SAMPLE_EVERY_S)
