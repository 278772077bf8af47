"""The audit log of corrections and symbol changes: who changed stored data or the
symbol list, what, when.

Append-only JSON lines in ``TVFLUX_DATA_DIR/audit.jsonl``, one record per change, flushed
and fsync'd before the change is answered, so an acknowledged change is always on record. Read back newest first for ``GET /api/admin/audit`` and ``/admin``.
Small by nature (corrections are rare), so it is read whole; it is never rewritten.
"""

from __future__ import annotations

import os
import threading

import msgspec


class AuditEntry(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    time: int  # epoch ms when the change was made
    who: str  # the credential used ("admin token", or "no admin token set") and the client address
    action: str  # "delete_trades", "add_symbol", "update_symbol", "remove_symbol"
    symbol: str
    deleted: int  # trades deleted (a symbol removed with its data; 0 for additions)
    ids: list[str] | None = None
    from_ms: int | None = None  # the deleted range [fromMs, toMs), epoch ms
    to_ms: int | None = None
    actor: str | None = None  # what the client said it is (X-Tvflux-Actor, e.g. "tvflux trades delete")
    spec: dict[str, object] | None = None  # add/update_symbol: the symbol's metadata after the change
    purge: bool | None = None  # remove_symbol: its stored trades and bars were deleted too


class AuditPage(msgspec.Struct, frozen=True):
    """``GET /api/admin/audit``: the newest entries first."""

    entries: list[AuditEntry]


_decode = msgspec.json.Decoder(AuditEntry)

AUDIT_FILE = "audit.jsonl"  # in TVFLUX_DATA_DIR


def audit_log(data_dir: str) -> AuditLog:
    """The audit log of the store kept in ``data_dir``: the service's and the CLI's alike."""
    return AuditLog(os.path.join(data_dir, AUDIT_FILE))


class AuditLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, entry: AuditEntry) -> None:
        """Blocking (write + fsync): call it from a worker thread."""
        line = msgspec.json.encode(entry) + b"\n"
        with self._lock:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())

    def recent(self, limit: int) -> list[AuditEntry]:
        """Newest first; a line that cannot be read (a torn last write) is skipped."""
        try:
            with open(self.path, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in reversed(lines):
            try:
                out.append(_decode.decode(line))
            except msgspec.DecodeError:
                continue
            if len(out) >= limit:
                break
        return out
