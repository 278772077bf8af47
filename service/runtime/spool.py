"""The spool: an append-only, checksummed log of accepted trade batches on local disk.

Every batch is written here *before* it is acknowledged, so an acknowledged trade
survives ``kill -9`` (the bytes are in the OS page cache the moment ``write`` returns)
and, after the next fsync (every ``fsync_interval_ms``, or each batch when 0), a power
cut. The writer replays records after the store's committed sequence on start, and
reads spilled batches back when the store was down long enough to fill memory.

Layout: ``<dir>/<first seq>.seg`` segments of records::

    magic b"TVF1" | payload length u32 | crc32(payload) u32 | seq u64 | payload (msgpack)

A torn record at the tail (a crash or power loss mid-write) is cut off when the spool
opens, and the log says how many bytes were dropped, where, and why; the records before
it are intact. A record whose checksum fails elsewhere is skipped with an error in the
log. Segments whose records are all committed to the store are deleted.

A write that fails (a full disk: ``ENOSPC``; out of file descriptors; an I/O error) or
comes back short never leaves a partial record behind: the segment is cut back to its
last whole record before :meth:`Spool.append` raises
:class:`~service.core.errors.DiskFull` (507) or
:class:`~service.core.errors.SpoolUnavailable` (503), both with a Retry-After, and the
batch is not acknowledged. Without the cut, a half record in the middle of a segment
would hide every record after it at the next start (the scan cannot trust anything past
a bad header). If even the cut fails, the segment is closed and never appended to again
(its torn tail is cut at the next start) and the next append starts a new segment.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec
import numpy as np

from service.core.errors import DiskFull, Overloaded, SpoolUnavailable
from service.core.models import TradeColumns

log = logging.getLogger(__name__)

_MAGIC = b"TVF1"
_HEADER = struct.Struct("<4sIIQ")
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[tuple[str, bytes, bytes, bytes, list[str | None] | None]]).decode


def encode_batches(batches: list[TradeColumns]) -> bytes:
    return _encode(
        [
            (
                b.symbol,
                b.ts_ns.astype("<i8").tobytes(),
                b.price.astype("<f8").tobytes(),
                b.size.astype("<f8").tobytes(),
                b.ids,
            )
            for b in batches
        ]
    )


def decode_batches(payload: bytes) -> list[TradeColumns]:
    return [
        TradeColumns(
            symbol,
            np.frombuffer(ts, "<i8").astype(np.int64),
            np.frombuffer(p, "<f8").astype(np.float64),
            np.frombuffer(s, "<f8").astype(np.float64),
            ids,
        )
        for symbol, ts, p, s, ids in _decode(payload)
    ]


@dataclass
class _Segment:
    path: str
    first_seq: int
    last_seq: int
    size: int


class Spool:
    def __init__(
        self, directory: str, *, max_bytes: int, fsync_interval_ms: int = 200, segment_bytes: int = 64 * 1024 * 1024
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.fsync_interval_s = fsync_interval_ms / 1000
        self.segment_bytes = segment_bytes
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._dirty = False
        self._last_sync = time.monotonic()
        self.corrupt_records = 0
        self.torn_bytes_cut = 0  # bytes of torn records cut off at the last open
        self.write_failures = 0  # appends refused because the disk would not take the record
        self._disk_full_need = 0  # size of the last record refused for want of space (0: none)
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
            size = os.path.getsize(path)
            if good_size < size:
                self.torn_bytes_cut += size - good_size
                log.warning(
                    "spool: cut %d bytes of a torn record at the end of %s after record %d (a crash or "
                    "power loss mid-write; that batch was never acknowledged). The %d bytes of whole "
                    "records before it are intact and will be stored.",
                    size - good_size,
                    path,
                    last,
                    good_size,
                )
                os.truncate(path, good_size)
            self._segments.append(_Segment(path, int(name[:-4]), last, good_size))
        last = self._segments[-1].last_seq if self._segments else 0
        # Hold the segment to append to from the start: an append then needs no new file
        # descriptor until a segment fills, so ingest keeps working when the process runs
        # out of descriptors (new connections are what fails then).
        try:
            if self._segments and self._segments[-1].size < self.segment_bytes:
                self._fd = os.open(self._segments[-1].path, os.O_WRONLY | os.O_APPEND)
            else:
                self._rotate(last + 1)
        except OSError as exc:
            log.warning("spool: cannot open a segment for writing yet (%s); the first append retries", exc)
        return last

    def _scan(self, path: str, start: int = 0) -> Iterator[tuple[int, bytes, int]]:
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
            raise Overloaded(
                f"the spool is full ({self.size_bytes} bytes waiting for the store); retry later", retry_after_s=5.0
            )
        try:
            if self._fd is None or self._segments[-1].size >= self.segment_bytes:
                self._rotate(seq)
            segment = self._segments[-1]
            self._write_record(segment, record)
            if self.fsync_interval_s == 0:
                os.fsync(self._open_fd())
        except OSError as exc:
            self.write_failures += 1
            if self._fd is not None:
                self._cut_back(self._segments[-1])
            raise self._refusal(exc, len(record)) from exc
        segment.last_seq, segment.size = seq, segment.size + len(record)
        self._disk_full_need = 0
        if self.fsync_interval_s == 0:
            self._last_sync = time.monotonic()
        else:
            self._dirty = True

    def _open_fd(self) -> int:
        """The segment being written; callers run only after :meth:`_rotate` opened one."""
        assert self._fd is not None
        return self._fd

    def _write_record(self, segment: _Segment, record: bytes) -> None:
        """The whole record or an OSError (``os.write`` may write less than asked: on a
        nearly full disk it does, and the rest then fails with ENOSPC)."""
        view = memoryview(record)
        while view:
            written = os.write(self._open_fd(), view)
            if written <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), segment.path)
            view = view[written:]

    def _cut_back(self, segment: _Segment) -> None:
        """Drop whatever part of the failed record reached the segment."""
        try:
            os.ftruncate(self._open_fd(), segment.size)
        except OSError as exc:
            log.error(
                "spool: cannot cut the failed write off %s (%s); closing it: the torn tail is cut at the "
                "next start and new records go to a new segment",
                segment.path,
                exc,
            )
            try:
                os.close(self._open_fd())
            except OSError:
                pass
            self._fd = None

    def _refusal(self, exc: OSError, record_bytes: int) -> Exception:
        """The typed, retryable error for a write the disk refused."""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            self._disk_full_need = record_bytes
            return DiskFull(
                f"disk full at {self.directory}: the spool cannot keep this batch ({record_bytes} "
                "bytes), so it was not accepted; retry once space is freed",
                path=self.directory,
                details={"path": self.directory, "recordBytes": record_bytes},
            )
        return SpoolUnavailable(
            f"cannot write the spool at {self.directory}: {exc.strerror or exc}; the batch "
            "was not accepted, retry later"
        )

    def disk_full(self) -> str | None:
        """A plain-words reason while the last append was refused for want of space and the
        disk still lacks room for it; ``None`` otherwise (also once space came back)."""
        need = self._disk_full_need
        if not need:
            return None
        try:
            stat = os.statvfs(self.directory)
            free = stat.f_bavail * stat.f_frsize
        except OSError:
            free = 0
        if free >= need + 1024 * 1024:  # room again: the next append will very likely fit
            self._disk_full_need = 0
            return None
        return (
            f"disk full at {self.directory}: {free} bytes free; ingest answers 507 until space is freed "
            "(acknowledged trades are safe)"
        )

    def _rotate(self, first_seq: int) -> None:
        path = os.path.join(self.directory, f"{first_seq:020d}.seg")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # first: a failure changes nothing
        try:
            os.ftruncate(fd, 0)  # a segment closed after a failed cut may have left this name behind
            _fsync_dir(self.directory)
        except OSError:
            os.close(fd)
            raise
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
        self._fd = fd
        if self._segments and self._segments[-1].path == path:
            self._segments[-1].size = 0  # the same name again: the failed record's segment, now empty
        else:
            self._segments.append(_Segment(path, first_seq, first_seq - 1, 0))

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
        """Records with a sequence above ``seq``, oldest first, about ``max_rows`` trades.
        Raises :class:`SpoolUnavailable` when a segment cannot be read (e.g. no file
        descriptor is left); nothing is lost, the caller retries."""
        try:
            return self._read_after(seq, max_rows)
        except OSError as exc:
            raise SpoolUnavailable(f"cannot read the spool at {self.directory}: {exc.strerror or exc}") from exc

    def _read_after(self, seq: int, max_rows: int) -> list[tuple[int, list[TradeColumns]]]:
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
        kept unless it has grown past 1 MiB (then the next segment is opened first, so the
        spool always holds a segment to append to), so a quiet spool neither churns files
        nor keeps old records forever."""
        keep = []
        for segment in self._segments:  # a rotation below appends the new segment: visited too
            writing = self._fd is not None and segment is self._segments[-1]
            if segment.last_seq <= committed_seq and (not writing or segment.size >= 1024 * 1024):
                if writing:
                    try:
                        self._rotate(segment.last_seq + 1)
                    except OSError:  # no descriptor or no room: keep appending here, retried next time
                        keep.append(segment)
                        continue
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
