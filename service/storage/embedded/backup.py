"""Backup and restore of the embedded (DuckDB) store.

A backup is a directory::

    manifest.json     format, versions, when, from where, and per file: bytes + sha256
    schema.sql        CREATE statements          ┐ written by DuckDB's
    load.sql          COPY … FROM statements      │ EXPORT DATABASE
    <table>.parquet   one per table (zstd)        ┘

EXPORT DATABASE is one statement, so it reads every table in one transaction: the
snapshot is consistent (trades, bars, watermarks and dirty windows agree) while the
service keeps ingesting and downsampling on other cursors. Parquet keeps backups
readable by any later DuckDB (the native file format is not guaranteed to be) and by
anything else that reads Parquet.

DuckDB lets one process open a file read-write (and then nobody else may open it), so:
a running service takes the snapshot itself (``POST /api/admin/backup`` streams it as a
tar), while ``tvflux backup`` on a stopped service reads the file directly. Restore
never runs against a live service: it checks the file lock, loads the backup into a new
file next to the store, checks row counts, and only then swaps the files — the previous
store is kept, renamed, never deleted.

Backups are trusted input: restoring runs the CREATE statements of ``schema.sql``, as
restoring a database dump always does, then loads each table from its Parquet file (the
paths in ``load.sql`` name the directory the snapshot was made in, so they are not used).
The checksums catch corruption, not tampering.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import tarfile
from collections.abc import Callable, Generator
from typing import IO

import duckdb
import msgspec
import pyarrow.parquet as pq

from service.core.errors import TvfluxError
from service.storage.base import MANIFEST_FILE, FileEntry, Manifest, TableEntry

FORMAT = "tvflux-duckdb-export/1"
DB_FILE = "tvflux.duckdb"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}$")
_COPY_LINE = re.compile(r"^COPY\s+\"?([A-Za-z0-9_]+)\"?\s+FROM\s+'([^']+)'", re.IGNORECASE)
_CHUNK = 1 << 20


class BackupError(TvfluxError):
    """A backup or restore that cannot proceed; the message says why and what to do."""


def db_path(data_dir: str) -> str:
    return os.path.abspath(os.path.join(data_dir, DB_FILE))


# --- snapshot -------------------------------------------------------------------------


def snapshot(cursor: duckdb.DuckDBPyConnection, directory: str, source: str) -> Manifest:
    """Export the database behind ``cursor`` into ``directory`` (created; must not exist
    or be empty) and write its manifest. Blocking: call it in a worker thread."""
    require_empty(directory)
    os.makedirs(directory, exist_ok=True)
    target = directory.replace("'", "''")
    cursor.execute(f"EXPORT DATABASE '{target}' (FORMAT parquet, COMPRESSION zstd)")
    _name_files_after_tables(directory)
    names = sorted(n for n in os.listdir(directory) if n != MANIFEST_FILE)
    files = [
        FileEntry(n, os.path.getsize(os.path.join(directory, n)), sha256_file(os.path.join(directory, n)))
        for n in names
    ]
    manifest = Manifest(
        format=FORMAT,
        created_utc=dt.datetime.now(tz=dt.UTC).isoformat(timespec="seconds"),
        source=source,
        duckdb_version=duckdb.__version__,
        tvflux_version=_tvflux_version(),
        files=files,
        tables=_tables(directory),
    )
    with open(os.path.join(directory, MANIFEST_FILE), "wb") as f:
        f.write(msgspec.json.format(msgspec.json.encode(manifest)) + b"\n")
    return manifest


def _name_files_after_tables(directory: str) -> None:
    """DuckDB names each table's file after the table with digits replaced
    (``bars_1m`` → ``bars__m.parquet``, ``bars_15m`` → ``bars___m.parquet``): rename each to
    ``<table>.parquet`` and rewrite ``load.sql`` to match, so a backup reads plainly."""
    load = os.path.join(directory, "load.sql")
    if not os.path.exists(load):
        return
    with open(load, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    out = []
    for line in lines:
        match = _COPY_LINE.match(line.strip())
        if match and _SAFE_NAME.match(match.group(1) + ".parquet"):
            old = match.group(2)
            new = os.path.join(os.path.dirname(old), match.group(1) + ".parquet")
            if old != new and os.path.exists(old) and not os.path.exists(new):
                os.rename(old, new)
                line = line.replace(f"'{old}'", f"'{new}'", 1)
        out.append(line)
    with open(load, "w", encoding="utf-8") as f:
        f.write("".join(out))


def snapshot_file(path: str, directory: str) -> Manifest:
    """Snapshot a DuckDB file no process has open (``tvflux backup`` on a stopped
    service). Read-only: the store is never modified, not even created."""
    if not os.path.exists(path):
        raise BackupError(f"no store at {path}; check TVFLUX_DATA_DIR")
    try:
        con = duckdb.connect(path, read_only=True)
    except duckdb.Error as exc:
        raise BackupError(f"cannot open {path}: {exc}") from exc
    try:
        return snapshot(con, directory, path)
    finally:
        con.close()


def _tables(directory: str) -> list[TableEntry]:
    """Tables and their row counts, from load.sql and the Parquet footers (which is what
    restore compares the loaded tables with)."""
    out: list[TableEntry] = []
    load = os.path.join(directory, "load.sql")
    if not os.path.exists(load):
        return out
    with open(load, encoding="utf-8") as f:
        for line in f:
            match = _COPY_LINE.match(line.strip())
            if match:
                name = os.path.basename(match.group(2))
                out.append(TableEntry(match.group(1), name, pq.read_metadata(os.path.join(directory, name)).num_rows))
    return out


def _tvflux_version() -> str:
    try:
        from importlib.metadata import version

        return version("tvflux")
    except Exception:  # not installed as a package (running from a checkout)
        return "unknown"


# --- verification -------------------------------------------------------------------


def read_manifest(directory: str) -> Manifest:
    path = os.path.join(directory, MANIFEST_FILE)
    try:
        with open(path, "rb") as f:
            manifest = msgspec.json.decode(f.read(), type=Manifest)
    except FileNotFoundError:
        raise BackupError(f"{directory} has no {MANIFEST_FILE}: not a tvflux backup") from None
    except msgspec.DecodeError as exc:
        raise BackupError(f"{path} is unreadable: {exc}") from None
    if manifest.format != FORMAT:
        raise BackupError(f"{path}: format {manifest.format!r}, this tvflux reads {FORMAT!r}")
    return manifest


def verify(directory: str) -> Manifest:
    """Check every file of the manifest is there, whole and unchanged. Raises
    :class:`BackupError` listing every problem."""
    manifest = read_manifest(directory)
    problems = []
    for entry in manifest.files:
        if not _SAFE_NAME.match(entry.name):
            problems.append(f"{entry.name!r}: not a plain file name")
            continue
        path = os.path.join(directory, entry.name)
        if not os.path.isfile(path):
            problems.append(f"{entry.name}: missing")
        elif os.path.getsize(path) != entry.bytes:
            problems.append(f"{entry.name}: {os.path.getsize(path)} bytes, the manifest says {entry.bytes}")
        elif sha256_file(path) != entry.sha256:
            problems.append(f"{entry.name}: checksum mismatch (corrupted or changed)")
    listed = {e.name for e in manifest.files}
    if "schema.sql" not in listed:
        problems.append("schema.sql is not in the manifest")
    for table in manifest.tables:
        if table.file not in listed or not _SAFE_NAME.match(table.name):
            problems.append(f"table {table.name!r}: its file {table.file!r} is not in the manifest")
    if problems:
        raise BackupError(f"backup {directory} failed verification:\n  " + "\n  ".join(problems))
    return manifest


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- the store's lock -----------------------------------------------------------------


def lock_holder(path: str) -> str | None:
    """Why ``path`` cannot be opened for writing (another process — a running service —
    holds DuckDB's lock), or ``None`` when it is free or does not exist."""
    if not os.path.exists(path):
        return None
    try:
        duckdb.connect(path, read_only=True).close()
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            return str(exc)
    except duckdb.Error:
        pass  # unreadable (e.g. corrupt) but not in use: restoring over it is the point
    return None


# --- tar transport (POST /api/admin/backup) -----------------------------------------------


def tar_chunks(directory: str, names: list[str]) -> Generator[bytes, None, None]:
    """A tar archive of ``names`` (files in ``directory``), produced piece by piece so a
    large backup streams in bounded memory."""
    for name in names:
        path = os.path.join(directory, name)
        info = tarfile.TarInfo(name)
        info.size = os.path.getsize(path)
        info.mtime = int(os.path.getmtime(path))
        info.mode = 0o644
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk
        if info.size % tarfile.BLOCKSIZE:
            yield tarfile.NUL * (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE)
    yield tarfile.NUL * (2 * tarfile.BLOCKSIZE)  # end of archive


def extract_tar(
    stream: IO[bytes],
    directory: str,
    *,
    on_manifest: Callable[[Manifest], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> None:
    """Unpack a backup tar from ``stream`` into ``directory``: plain files with plain
    names only (no paths, links or devices). ``on_manifest`` sees the manifest (the
    first member) before anything else is written and may raise to stop."""
    require_empty(directory)
    os.makedirs(directory, exist_ok=True)
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            if not member.isfile() or not _SAFE_NAME.match(member.name):
                raise BackupError(f"refusing archive member {member.name!r}: not a plain file")
            source = archive.extractfile(member)
            assert source is not None
            if member.name == MANIFEST_FILE and on_manifest is not None:
                data = source.read()
                on_manifest(msgspec.json.decode(data, type=Manifest))
                with open(os.path.join(directory, MANIFEST_FILE), "wb") as out:
                    out.write(data)
                continue
            with open(os.path.join(directory, member.name), "wb") as out:
                while chunk := source.read(_CHUNK):
                    out.write(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))


def require_empty(directory: str) -> None:
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise BackupError(f"{directory} exists and is not an empty directory; pick a new one")


# --- restore --------------------------------------------------------------------------


class RestoreResult(msgspec.Struct, frozen=True):
    tables: dict[str, int]  # table -> rows loaded
    previous: list[str]  # what the old store was renamed to


def restore(directory: str, data_dir: str, *, now: dt.datetime) -> RestoreResult:
    """Replace the store in ``data_dir`` with the backup in ``directory``.

    Refuses while a process holds the store. The backup is loaded into
    ``tvflux.duckdb.restoring`` first and its row counts checked against the manifest;
    only then is the old store (and its WAL and the writer's spool, whose trades belong
    to the old store's timeline) renamed aside with a ``.pre-restore-<UTC time>`` suffix
    and the new file moved into place."""
    manifest = verify(directory)
    target = db_path(data_dir)
    holder = lock_holder(target)
    if holder is not None:
        raise BackupError(f"the store {target} is in use (is tvflux serving on this data dir? stop it first): {holder}")
    staging = target + ".restoring"
    for stale in (staging, staging + ".wal"):
        if os.path.exists(stale):
            os.remove(stale)
    os.makedirs(data_dir, exist_ok=True)
    con = duckdb.connect(staging)
    try:
        # schema.sql, then each table from its file: what IMPORT DATABASE does, but with
        # the paths of *this* directory (load.sql names the one the snapshot was made in).
        with open(os.path.join(directory, "schema.sql"), encoding="utf-8") as f:
            con.execute(f.read())
        for table in manifest.tables:
            path = os.path.abspath(os.path.join(directory, table.file)).replace("'", "''")
            con.execute(f"COPY \"{table.name}\" FROM '{path}' (FORMAT parquet)")
        loaded = {}
        problems = []
        for table in manifest.tables:
            (rows,) = con.execute(f'SELECT count(*) FROM "{table.name}"').fetchall()[0]
            loaded[table.name] = int(rows)
            if rows != table.rows:
                problems.append(f"{table.name}: loaded {rows} rows, the manifest says {table.rows}")
        if problems:
            raise BackupError("restore check failed:\n  " + "\n  ".join(problems))
        con.execute("CHECKPOINT")
    except duckdb.Error as exc:
        raise BackupError(f"loading the backup failed: {exc}") from exc
    finally:
        con.close()
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    previous = []
    # Checked again right before the swap: a service started meanwhile would hold it.
    holder = lock_holder(target)
    if holder is not None:
        os.remove(staging)
        raise BackupError(f"the store {target} was opened while restoring; stop the service and retry: {holder}")
    for path in (target, target + ".wal", os.path.join(data_dir, "spool")):
        if os.path.exists(path):
            aside = f"{path}.pre-restore-{stamp}"
            os.rename(path, aside)
            previous.append(aside)
    os.rename(staging, target)
    return RestoreResult(loaded, previous)


def remove_tree(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)
