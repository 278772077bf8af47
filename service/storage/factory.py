"""The one place that knows which store class backs ``TVFLUX_STORE``.

Everything else talks to :class:`~service.storage.base.Store` and its declared
capabilities; a new backend is added here and nowhere else. Adapters are imported only
when chosen, so a DuckDB deployment never loads the InfluxDB client and vice versa.
"""

from __future__ import annotations

import logging
import os

from service.core.settings import Settings
from service.storage.base import Store

log = logging.getLogger(__name__)

EMBEDDED_FILE = "tvflux.duckdb"  # inside TVFLUX_DATA_DIR


def store_file(settings: Settings) -> str | None:
    """Absolute path of the local file the configured store keeps everything in, or
    ``None`` when the store is remote. File-level operations (offline backup, restore,
    the single-writer lock checks before bulk writes) apply only when there is one."""
    if settings.store == "influx":
        return None
    return os.path.abspath(os.path.join(settings.data_dir, EMBEDDED_FILE))


def build_store(settings: Settings) -> Store:
    """The configured store, not started (call ``await store.start()``). With
    ``TVFLUX_FAULT_STORE_DOWN_FILE`` set it is wrapped for fault injection; with
    ``TVFLUX_FAULT_SLOW_QUERY_FILE`` (embedded store) its history reads can be made slow."""
    store: Store
    path = store_file(settings)
    if path is None:
        from service.storage.influx.store import InfluxStore

        store = InfluxStore(settings, settings.plan)
    else:
        from service.storage.embedded.store import EmbeddedStore

        before_read = None
        if settings.fault_slow_query_file:
            from service.storage.faults import slow_reads

            log.warning(
                "fault injection on: history reads take seconds while %s exists", settings.fault_slow_query_file
            )
            before_read = slow_reads(settings.fault_slow_query_file)
        store = EmbeddedStore(path, settings.plan, memory_limit=settings.duckdb_memory_limit, before_read=before_read)
    if settings.fault_store_down_file:
        from service.storage.faults import FaultInjectingStore

        log.warning("fault injection on: store writes fail while %s exists", settings.fault_store_down_file)
        store = FaultInjectingStore(store, settings.fault_store_down_file)
    return store
