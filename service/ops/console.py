"""What the command-line tools show on the terminal: logging configured once per
process (with secrets redacted) and a progress bar.

Shared by ``tvflux`` (:mod:`service.ops.cli`), its operations (:mod:`service.ops.commands`)
and ``tvflux-bench``; it imports none of them, so none imports another for these."""

from __future__ import annotations

import logging
import re
import sys
import time
import warnings


class RedactSecrets(logging.Filter):
    """Blanks bearer tokens and ``token=`` query values in every record the handler emits
    (uvicorn logs WebSocket request lines, and headers at DEBUG)."""

    _pattern = re.compile(r"(?i)(bearer\s+|token=)[^\s&\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._pattern.sub(r"\1***", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(level: str) -> None:
    """Call once, at the entry point (``main``), before anything logs."""
    # uvicorn's legacy websockets implementation is deprecated, but it is the one that lets
    # the fan-out write frames straight into the transport (service/api/wsproto.py).
    warnings.filterwarnings("ignore", message=r".*`websockets` implementation is deprecated")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets())
    # an edge proxies every history request to the core: one INFO line each is noise
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def _amount(x: float) -> str:
    """Whole numbers with separators; small fractional ones with one decimal."""
    return f"{x:,.0f}" if abs(x) >= 100 or x == int(x) else f"{x:,.1f}"


class Progress:
    """One self-overwriting line on stderr (plain lines when stderr is not a terminal).
    Counts are in ``unit`` (pick one a person reads: days of range, not milliseconds).
    ``rate``: show ``unit``/s — not for a count that is a state, such as tiers caught up,
    where a rate reads as nonsense ("0 tiers at the edge/s")."""

    def __init__(self, label: str, total: float, unit: str, *, rate: bool = True) -> None:
        self.label, self.total, self.unit, self.show_rate = label, total, unit, rate
        self.started = time.perf_counter()
        self._last_print = 0.0
        self._last_done: float | None = None
        self._tty = sys.stderr.isatty()

    def update(self, done: float, *, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_print < (0.2 if self._tty else 5.0):
            return
        self._last_print = now
        self._last_done = done
        elapsed = now - self.started
        pct = 100.0 * done / self.total if self.total else 100.0
        rate = done / elapsed if elapsed > 0 else 0.0
        width = 30
        filled = int(width * min(pct, 100) / 100)
        speed = f" {_amount(rate)} {self.unit}/s" if self.show_rate else ""
        line = (
            f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {pct:5.1f}% "
            f"{_amount(done)}/{_amount(self.total)} {self.unit}{speed} {elapsed:6.1f}s"
        )
        sys.stderr.write(("\r" + line) if self._tty else (line + "\n"))
        sys.stderr.flush()

    def finish(self, done: float) -> None:
        if done != self._last_done:  # the last line shown already says this: don't print it twice
            self.update(done, force=True)
        if self._tty:
            sys.stderr.write("\n")
