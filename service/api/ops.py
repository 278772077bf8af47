"""Operations endpoints: readiness (gathered here, judged by :mod:`service.core.readiness`)
and ``POST /api/admin/backup``.

The backup endpoint exists because DuckDB lets only one process open the store file:
while the service runs, ``tvflux backup`` cannot read the file itself, so it asks the
service, which snapshots it on its own connection (see :mod:`service.storage.embedded.backup`) and
streams the snapshot back as a tar archive. It writes nothing outside
``TVFLUX_DATA_DIR`` (a temporary directory there, removed after the transfer), and it
hands out the whole database: without ``TVFLUX_ADMIN_TOKEN`` only loopback clients
may call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread
from litestar import Request, post
from litestar.response import Stream

from service.api.auth import admin_guard, is_local
from service.api.services import Services
from service.core.answers import BrokerState, Readiness, WriterReadiness
from service.core.errors import Overloaded, TvfluxError, Unauthorized
from service.core.models import TierStatus
from service.core.readiness import Thresholds, Verdict, WriterState, assess, scheduler_period_ms
from service.runtime.clock import now_ms
from service.storage.base import MANIFEST_FILE, Health
from service.storage.embedded.backup import remove_tree, tar_chunks
from service.storage.factory import store_file

log = logging.getLogger(__name__)
HEALTH_TIMEOUT_S = 3.0  # /health/ready answers within about this, even with a hung store
BACKUP_TMP_PREFIX = ".backup-"
STALE_BACKUP_TMP_S = 86_400  # an abandoned transfer's snapshot is removed after a day
_snapshot_lock = asyncio.Lock()  # one snapshot at a time: each is a full copy on disk


# --- readiness ----------------------------------------------------------------------------


async def readiness(services: Services) -> tuple[Verdict, list[TierStatus]]:
    """Everything ``/health/ready`` and ``/metrics`` judge, read once."""
    try:  # a hung store must not hang the probe
        health = await asyncio.wait_for(services.store.health(), HEALTH_TIMEOUT_S)
    except TimeoutError:
        health = Health(False, f"the store did not answer a health check within {HEALTH_TIMEOUT_S:g}s")
    tiers: list[TierStatus] = []
    store_ok, store_error = health.ok, health.error
    if health.ok:
        try:
            tiers = await services.store.downsampling_status(now_ms())
        except TvfluxError as exc:
            store_ok, store_error = False, exc.message
    settings = services.settings
    writer = services.writer
    spilled = writer.spilled_rows
    state = WriterState(
        pending_rows=writer.pending_rows + spilled,
        oldest_pending_age_s=writer.lag.oldest_age_s(time.monotonic()),
        flush_interval_s=writer.flush_interval_s,
        last_error=writer.last_error,
        spilling=writer.spilling,
        spilled_rows=spilled,
        disk_full=_disk_full(services),
    )
    thresholds = Thresholds(
        writer_lag_s=settings.ready_writer_lag_s, downsampling_slack_s=settings.ready_downsampling_slack_s
    )
    verdict = assess(
        running=services.ready,
        store_ok=store_ok,
        store_error=store_error,
        writer=state,
        tiers=tiers,
        downsampler_error=services.downsampler.last_error,
        plan=settings.plan,
        period_ms=scheduler_period_ms(services.store.downsampling_in_database, settings.downsample_interval_ms),
        thresholds=thresholds,
        descriptors=services.descriptors.reason(),
    )
    return verdict, tiers


def _disk_full(services: Services) -> str | None:
    """``disk full at PATH: …`` when the spool or the embedded store could not write for want
    of space (the spool re-checks the free space, so this clears once space is back)."""
    reason = services.spool.disk_full()
    error = services.writer.last_error or ""
    local_file = store_file(services.settings)  # a remote store's disk is not ours to report
    if reason is None and local_file is not None and "No space left on device" in error:
        reason = (
            f"disk full at {os.path.dirname(local_file)}: the store cannot write "
            "(acknowledged trades wait in memory and the spool)"
        )
    return reason


def ready_body(services: Services, verdict: Verdict) -> Readiness:
    writer = services.writer
    broker = services.broker
    return Readiness(
        ready=verdict.ready,
        reasons=verdict.reasons,
        store=services.store.kind,
        writer_pending_rows=writer.pending_rows,
        writer=WriterReadiness(
            writer.pending_rows,
            writer.spilled_rows,
            round(writer.lag.oldest_age_s(time.monotonic()), 3),
            verdict.writer_max_age_s,
        ),
        downsampling=verdict.tiers,
        broker=None if broker is None else BrokerState(broker.connected, broker.error),
    )


# --- backup -------------------------------------------------------------------------------


@post("/api/admin/backup", guards=[admin_guard], status_code=200, media_type="application/x-tar")
async def admin_backup(request: Request) -> Stream:
    """A consistent snapshot of the embedded store, as a tar stream: ``manifest.json``
    first, then DuckDB's EXPORT DATABASE files (Parquet). ``tvflux backup DIR`` calls this
    when the service is running."""
    services = request.app.state.services
    settings = services.settings
    if not settings.admin_token and not is_local(request):
        raise Unauthorized("backups from other machines need TVFLUX_ADMIN_TOKEN set on the server")
    if _snapshot_lock.locked():
        raise Overloaded("a backup snapshot is being taken; retry when it is done", retry_after_s=30)
    async with _snapshot_lock:
        # Include what was accepted up to now (bounded: a store outage must not hang us).
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(services.writer.flush()), timeout=10)
        data_dir = os.path.abspath(settings.data_dir)  # noqa: ASYNC240 - string work, no disk access
        await anyio.to_thread.run_sync(_sweep_stale, data_dir)
        stamp = dt.datetime.now(tz=dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        tmp = os.path.join(data_dir, f"{BACKUP_TMP_PREFIX}{stamp}-{secrets.token_hex(4)}")
        store = services.store
        started = time.perf_counter()
        try:
            manifest = await store.snapshot(tmp)  # NotSupported (501) from a store backed up otherwise
        except BaseException:
            await anyio.to_thread.run_sync(remove_tree, tmp)
            raise
        log.info(
            "backup snapshot: %d files, %d bytes in %.1fs",
            len(manifest.files),
            manifest.total_bytes,
            time.perf_counter() - started,
        )
    names = [MANIFEST_FILE] + [f.name for f in manifest.files]
    return Stream(
        _stream_and_remove(tmp, names),
        media_type="application/x-tar",
        headers={
            "Content-Disposition": f'attachment; filename="tvflux-backup-{stamp}.tar"',
            "X-Tvflux-Backup-Bytes": str(manifest.total_bytes),
        },
    )


async def _stream_and_remove(directory: str, names: list[str]) -> AsyncIterator[bytes]:
    chunks = tar_chunks(directory, names)
    try:
        while True:
            chunk = await anyio.to_thread.run_sync(next, chunks, None)  # file reads off the loop
            if chunk is None:
                return
            yield chunk
    finally:
        chunks.close()
        # Shielded: when the client hangs up, the stream is cancelled, and an unshielded
        # await here would be cancelled too, leaving the full-size snapshot behind.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(remove_tree, directory)


def _sweep_stale(data_dir: str) -> None:
    """Remove snapshots left by transfers that never finished (a killed process)."""
    try:
        entries = os.listdir(data_dir)
    except FileNotFoundError:
        return
    for name in entries:
        path = os.path.join(data_dir, name)
        if name.startswith(BACKUP_TMP_PREFIX) and time.time() - os.path.getmtime(path) > STALE_BACKUP_TMP_S:
            remove_tree(path)


OPS_ROUTES = [admin_backup]
