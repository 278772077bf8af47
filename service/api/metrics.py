"""``/metrics`` in the Prometheus text format, read from the services' own counters at
scrape time (nothing is counted per trade on behalf of Prometheus)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from service.models import TierStatus


class _Snapshot:
    def __init__(self, services: Any, tiers: list[TierStatus]) -> None:
        self.services = services
        self.tiers = tiers

    def collect(self):  # type: ignore[no-untyped-def]
        s = self.services
        yield CounterMetricFamily("tvflux_trades_ingested", "Trades accepted", value=s.ingestor.accepted)
        yield CounterMetricFamily("tvflux_trades_rejected", "Trades refused as invalid", value=s.ingestor.rejected)
        yield CounterMetricFamily("tvflux_trades_duplicate", "Trades dropped as duplicate ids",
                                  value=s.ingestor.duplicates)
        yield CounterMetricFamily("tvflux_trades_stored", "Trades appended to the store", value=s.writer.stored_rows)
        yield CounterMetricFamily("tvflux_store_write_failures", "Failed store appends (retried)",
                                  value=s.writer.failures)
        yield GaugeMetricFamily("tvflux_writer_pending_rows", "Trades waiting for the store",
                                value=s.writer.pending_rows)
        yield GaugeMetricFamily("tvflux_ws_clients", "Open WebSocket/SSE clients", value=len(s.hub.clients))
        yield GaugeMetricFamily("tvflux_subscriptions", "Live bar subscriptions", value=s.hub.subscription_count)
        yield CounterMetricFamily("tvflux_frames_sent", "Bar/reset frames sent to clients", value=s.hub.frames_sent)
        yield CounterMetricFamily("tvflux_clients_cut", "Clients cut off for being too slow", value=s.hub.clients_cut)
        lag = GaugeMetricFamily("tvflux_downsampling_lag_ms", "Now minus the tier watermark", labels=["tier"])
        duration = GaugeMetricFamily("tvflux_downsampling_last_run_ms", "Duration of the last tier run",
                                     labels=["tier"])
        for t in self.tiers:
            if t.lagMs is not None:
                lag.add_metric([t.tier], t.lagMs)
            if t.lastDurationMs is not None:
                duration.add_metric([t.tier], t.lastDurationMs)
        yield lag
        yield duration


def render_metrics(services: Any, tiers: list[TierStatus]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(services, tiers))
    return generate_latest(registry)
