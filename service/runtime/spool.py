"""The spool: an append-only, checksummed log of accepted trade batches on local disk.

Every batch is written here *before* it is acknowledged, so an acknowledged trade
survives ``kill -9`` (the bytes are in the OS page cache the moment ``write`` returns)
and, after the next fsync (every ``fsync_interval_ms``, or each batch when 0), a power
cut. The writer replays records after the store's committed sequence on start, and
reads spilled batches back when the store was down long enough to fill memory.

Layout: ``<dir>/<first seq>.seg`` segments of records::

    magic b"TVF1" | payload length u32 | crc32(payload) u32 | seq u64 | payload (msgpack)

A torn record at the tail (a crash mid-write) is cut off when the spool opens; a record
whose checksum fails elsewhere is skipped with an error in the log. Segments whose
records are all committed to the store are deleted.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass

import msgspec
import numpy as np

from service.core.errors import Overloaded
from service.core.models import TradeColumns

log = logging.getLogger(__name__)

_MAGIC = b"TVF1"
_HEADER = struct.Struct("<4sIIQ")
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[tuple[str, bytes, bytes, bytes, list[str | None] | None]]).decode


def encode_batches(batches: list[TradeColumns]) -> bytes:
    return _encode([(b.symbol, b.ts_ns.astype("<i8").tobytes(), b.price.astype("<f8").tobytes(),
                     b.size.astype("<f8").tobytes(), b.ids) for b in batches])


def decode_batches(payload: bytes) -> list[TradeColumns]:
    return [TradeColumns(symbol, np.frombuffer(ts, "<i8").astype(np.int64), np.frombuffer(p, "<f8").astype(np.float64),
                         np.frombuffer(s, "<f8").astype(np.float64), ids)
            for symbol, ts, p, s, ids in _decode(payload)]


@dataclass
class _Segment:
    path: str
    first_seq: int
    last_seq: int
    size: int


class Spool:
    def __init__(self, directory: str, *, max_bytes: int, fsync_interval_ms: int = 200,
                 segment_bytes: int = 64 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.fsync_interval_s = fsync_interval_ms / 1000
        self.segment_bytes = segment_bytes
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._dirty = False
        self._last_sync = time.monotonic()
        self.corrupt_records = 0
        self._cursor: tuple[str, int, int] | None = None  # (segment path, offset, seq) of the last read

    # --- opening and recovery ---------------------------------------------------------

    def open(self) -> int:
        """Index existing segments (cutting torn tails); returns the last sequence stored."""
        os.makedirs(self.directory, exist_ok=True)
        names = sorted((n for n in os.listdir(self.directory) if n.endswith(".seg")), key=lambda n: int(n[:-4]))
        for name in names:
            path = os.path.join(self.directory, name)
            last, good_size = None, 0
            for seq, _, end in self._scan(path):
                last, good_size = seq, end
            if last is None:
                os.remove(path)
                continue
            if good_size < os.path.getsize(path):
                log.warning("spool: cutting a torn record at the end of %s (a crash mid-write)", name)
                os.truncate(path, good_size)
            self._segments.append(_Segment(path, int(name[:-4]), last, good_size))
        return self._segments[-1].last_seq if self._segments else 0

    def _scan(self, path: str, start: int = 0):  # type: ignore[no-untyped-def]
        """(seq, payload, end offset) of every intact record from ``start``."""
        with open(path, "rb") as f:
            f.seek(start)
            offset = start
            while True:
                header = f.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    return
                magic, length, crc, seq = _HEADER.unpack(header)
                if magic != _MAGIC:
                    return  # torn or garbage tail: nothing after it is trustworthy
                payload = f.read(length)
                if len(payload) < length:
                    return
                offset += _HEADER.size + length
                if zlib.crc32(payload) != crc:
                    self.corrupt_records += 1
                    log.error("spool: record %d in %s fails its checksum; skipped", seq, os.path.basename(path))
                    continue
                yield seq, payload, offset

    # --- writing ------------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    def append(self, seq: int, batches: list[TradeColumns]) -> None:
        payload = encode_batches(batches)
        record = _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload), seq) + payload
        if self.size_bytes + len(record) > self.max_bytes:
            raise Overloaded(f"the spool is full ({self.size_bytes} bytes waiting for the store); retry later",
                             retry_after_s=5.0)
        if self._fd is None or self._segments[-1].size >= self.segment_bytes:
            self._rotate(seq)
        os.write(self._fd, record)  # type: ignore[arg-type]
        segment = self._segments[-1]
        segment.last_seq, segment.size = seq, segment.size + len(record)
        self._dirty = True
        if self.fsync_interval_s == 0:
            self.sync()

    def _rotate(self, first_seq: int) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
        path = os.path.join(self.directory, f"{first_seq:020d}.seg")
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segments.append(_Segment(path, first_seq, first_seq - 1, 0))
        _fsync_dir(self.directory)

    def sync(self) -> None:
        fd = self._fd
        if fd is not None and self._dirty:
            self._dirty = False  # cleared first: a write racing this fsync marks it dirty again
            try:
                os.fsync(fd)
            except OSError:  # closed by a rotation meanwhile; that rotation synced it
                pass
        self._last_sync = time.monotonic()

    def sync_due(self) -> bool:
        """Whether a periodic fsync is due (the caller runs :meth:`sync` off the event loop:
        an fsync can take seconds on a busy disk)."""
        return self._dirty and time.monotonic() - self._last_sync >= self.fsync_interval_s

    # --- reading back and releasing --------------------------------------------------------

    def read_after(self, seq: int, max_rows: int) -> list[tuple[int, list[TradeColumns]]]:
        """Records with a sequence above ``seq``, oldest first, about ``max_rows`` trades."""
        out: list[tuple[int, list[TradeColumns]]] = []
        rows = 0
        for segment in self._segments:
            if segment.last_seq <= seq:
                continue
            # Resume where the previous read stopped, so draining a big spool is linear.
            start = 0
            if self._cursor is not None and self._cursor[0] == segment.path and self._cursor[2] <= seq:
                start = self._cursor[1]
            for record_seq, payload, end in self._scan(segment.path, start):
                if record_seq <= seq:
                    continue
                batches = decode_batches(payload)
                out.append((record_seq, batches))
                rows += sum(len(b) for b in batches)
                self._cursor = (segment.path, end, record_seq)
                if rows >= max_rows:
                    return out
        return out

    def release(self, committed_seq: int) -> None:
        """Delete segments whose records are all in the store. The segment being written is
        kept unless it has grown past 1 MiB (then it is closed and the next append starts a
        new one), so a quiet spool neither churns files nor keeps old records forever."""
        keep = []
        for segment in self._segments:
            writing = self._fd is not None and segment is self._segments[-1]
            if segment.last_seq <= committed_seq and (not writing or segment.size >= 1024 * 1024):
                if writing:
                    os.close(self._fd)  # type: ignore[arg-type]
                    self._fd = None
                os.remove(segment.path)
            else:
                keep.append(segment)
        self._segments = keep

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
