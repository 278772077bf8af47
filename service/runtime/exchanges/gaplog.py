"""Gap records of every source: the newest kept in memory (bounded), every finished one
appended to ``TVFLUX_DATA_DIR/gaps.jsonl`` so the history of what was missed (and
whether it was filled) survives restarts. Writes happen off the event loop."""

from __future__ import annotations

import logging
import os
from collections import deque

import anyio.to_thread
import msgspec

from service.core.sources import GapRecord

log = logging.getLogger(__name__)
KEEP = 500  # records in memory (and read back at start)
READ_BACK_BYTES = 1024 * 1024  # the tail of the file that holds them


class GapLog:
    def __init__(self, path: str, keep: int = KEEP) -> None:
        self.path = path
        self._records: deque[GapRecord] = deque(maxlen=keep)
        self._unwritten: list[GapRecord] = []
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(GapRecord)

    def load(self) -> None:
        """Read back the newest records of earlier runs (a torn last line is skipped)."""
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - READ_BACK_BYTES))
                lines = f.read().splitlines()
        except FileNotFoundError:
            return
        if len(lines) > 1 and size > READ_BACK_BYTES:
            lines = lines[1:]  # the first may be a partial line
        for line in lines:
            try:
                self._records.append(self._decoder.decode(line))
            except msgspec.DecodeError:
                continue

    def add(self, records: list[GapRecord]) -> None:
        for record in records:
            self._records.append(record)
            self._unwritten.append(record)
            level = logging.WARNING if record.state == "open" else logging.INFO
            log.log(
                level,
                "%s %s: ids %s..%s %s (%s)%s",
                record.source,
                record.symbol,
                record.from_id,
                record.to_id if record.to_id is not None else "?",
                "left OPEN" if record.state == "open" else f"backfilled, {record.trades} trades",
                record.cause,
                f": {record.reason}" if record.reason else "",
            )

    async def flush(self) -> None:
        if not self._unwritten:
            return
        lines, self._unwritten = self._unwritten, []
        data = b"".join(self._encoder.encode(r) + b"\n" for r in lines)
        try:
            await anyio.to_thread.run_sync(self._append, data)
        except OSError as exc:  # the records stay in memory and in the log lines above
            log.error("cannot write %s: %s", self.path, exc)

    def _append(self, data: bytes) -> None:
        with open(self.path, "ab") as f:
            f.write(data)

    def recent(self) -> list[GapRecord]:
        """Newest first."""
        return list(reversed(self._records))
