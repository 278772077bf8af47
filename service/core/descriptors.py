"""Is the process running out of file descriptors? A pure judgement over two numbers.

Every connection, the DuckDB file, the spool segments and the log take a descriptor. At the
limit (``RLIMIT_NOFILE``) the event loop cannot accept: libuv (uvloop) then accepts and at
once closes each new connection to keep the listen queue from hanging, so clients see a
reset and nothing reaches the application or its log. Watching the count is the only way
the operator hears of it, and hears it *before* the limit.
"""

from __future__ import annotations

import msgspec

WARN_AT = 0.9  # of the limit in use: warn (new connections are refused soon)
CLEAR_BELOW = 0.8  # back under this: the warning clears (a gap, so a count hovering near 90 % logs once)


class DescriptorUse(msgspec.Struct, frozen=True):
    open_fds: int
    limit_fds: int  # the soft RLIMIT_NOFILE; 0 when unknown (unlimited)

    @property
    def fraction(self) -> float:
        return self.open_fds / self.limit_fds if self.limit_fds > 0 else 0.0


def pressure(use: DescriptorUse, warned: bool) -> bool:
    """Whether the process is (still) short of descriptors, with hysteresis: once warned, it
    stays so until the use drops below :data:`CLEAR_BELOW`."""
    return use.fraction >= (CLEAR_BELOW if warned else WARN_AT)


def describe(use: DescriptorUse) -> str:
    """What the operator reads (``/health/ready`` and the log)."""
    return (
        f"file descriptors: {use.open_fds} of {use.limit_fds} in use (RLIMIT_NOFILE); new connections are "
        "refused at the limit: raise it (ulimit -n, systemd LimitNOFILE) or shed clients"
    )
