"""``/metrics`` in the Prometheus text format, read from the services' own counters at
scrape time (nothing is counted per trade on behalf of Prometheus).

Histograms (:mod:`service.core.instruments`) are observed once per batch, flush or request.
Durations of histograms are in seconds, as Prometheus expects; the older gauges keep the
unit in their name (``_ms``). Every name here is listed in docs/monitoring.md, and the
Grafana dashboard and alert rules only use names a test finds in a live ``/metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from service.api.services import Services
from service.api.source_metrics import source_metrics
from service.core.instruments import Histogram
from service.core.models import TierStatus
from service.core.readiness import Verdict


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=hist.cumulative(), sum_value=hist.sum)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("tvflux")
    except Exception:  # running from a checkout that is not installed
        return "unknown"


class _Snapshot:
    def __init__(self, services: Services, tiers: list[TierStatus], verdict: Verdict | None = None) -> None:
        self.services = services
        self.tiers = tiers
        self.verdict = verdict

    def collect(self) -> Iterator[Metric]:
        s = self.services
        yield CounterMetricFamily("tvflux_trades_ingested", "Trades accepted", value=s.ingestor.accepted)
        yield CounterMetricFamily("tvflux_trades_rejected", "Trades refused as invalid", value=s.ingestor.rejected)
        yield CounterMetricFamily(
            "tvflux_trades_duplicate", "Trades dropped as duplicate ids", value=s.ingestor.duplicates
        )
        yield CounterMetricFamily("tvflux_trades_stored", "Trades appended to the store", value=s.writer.stored_rows)
        yield CounterMetricFamily(
            "tvflux_store_write_failures", "Failed store appends (retried)", value=s.writer.failures
        )
        yield GaugeMetricFamily(
            "tvflux_writer_pending_rows", "Trades waiting for the store", value=s.writer.pending_rows
        )
        yield GaugeMetricFamily("tvflux_ws_clients", "Open WebSocket/SSE clients", value=len(s.hub.clients))
        yield GaugeMetricFamily("tvflux_subscriptions", "Live bar subscriptions", value=s.hub.subscription_count)
        yield CounterMetricFamily("tvflux_frames_sent", "Bar/reset frames sent to clients", value=s.hub.frames_sent)
        yield CounterMetricFamily("tvflux_clients_cut", "Clients cut off for being too slow", value=s.hub.clients_cut)
        yield CounterMetricFamily("tvflux_series_pushes", "Series pushes (each encoded once)", value=s.hub.pushes)
        broker = s.broker  # all zero without TVFLUX_BROKER_URL
        yield GaugeMetricFamily(
            "tvflux_broker_connected",
            "1 while the core is connected to the broker",
            value=int(broker is not None and broker.connected),
        )
        yield GaugeMetricFamily(
            "tvflux_broker_topics", "Topics edges hold through the broker", value=len(broker.topics) if broker else 0
        )
        yield CounterMetricFamily(
            "tvflux_broker_published", "Frames published to the broker", value=broker.published if broker else 0
        )
        yield CounterMetricFamily(
            "tvflux_broker_publish_errors",
            "Frames not published (broker unreachable or queue full)",
            value=broker.publish_errors if broker else 0,
        )
        lag = GaugeMetricFamily("tvflux_downsampling_lag_ms", "Now minus the tier watermark", labels=["tier"])
        duration = GaugeMetricFamily(
            "tvflux_downsampling_last_run_ms", "Duration of the last tier run", labels=["tier"]
        )
        for t in self.tiers:
            if t.lag_ms is not None:
                lag.add_metric([t.tier], t.lag_ms)
            if t.last_duration_ms is not None:
                duration.add_metric([t.tier], t.last_duration_ms)
        yield lag
        yield duration
        yield from self._more()

    def _more(self) -> Iterator[Metric]:
        s = self.services
        writer = s.writer
        info = GaugeMetricFamily("tvflux_build_info", "Version and store kind", labels=["version", "store"])
        info.add_metric([_version(), s.store.kind], 1)
        yield info
        if self.verdict is not None:
            yield GaugeMetricFamily("tvflux_ready", "1 when /health/ready answers 200", value=int(self.verdict.ready))
            yield GaugeMetricFamily(
                "tvflux_store_up", "1 when the store answered its health check", value=int(self.verdict.store_ok)
            )
        # ingest and writer
        yield _histogram("tvflux_ingest_batch_rows", "Trades per accepted ingest batch", writer.batch_rows)
        yield _histogram(
            "tvflux_store_write_seconds", "Duration of successful store appends (one per flush)", writer.append_seconds
        )
        yield GaugeMetricFamily(
            "tvflux_writer_oldest_pending_age_seconds",
            "How long the oldest accepted trade not yet in the store has waited",
            value=writer.lag.oldest_age_s(time.monotonic()),
        )
        yield GaugeMetricFamily(
            "tvflux_writer_spilled_rows", "Trades waiting for the store in the spool only", value=writer.spilled_rows
        )
        yield GaugeMetricFamily(
            "tvflux_spool_bytes", "Size of the on-disk spool of accepted trades", value=s.spool.size_bytes
        )
        yield GaugeMetricFamily(
            "tvflux_spool_max_bytes", "Spool size past which ingest answers 429", value=s.settings.spool_max_bytes
        )
        # live push
        yield CounterMetricFamily(
            "tvflux_updates_coalesced",
            "Open-bar updates replaced by a newer one before sending",
            value=s.hub.updates_coalesced,
        )
        yield CounterMetricFamily(
            "tvflux_updates_dropped",
            "Bar updates never sent (stale, or to a cut-off client)",
            value=s.hub.updates_dropped,
        )
        # history
        history = HistogramMetricFamily(
            "tvflux_history_request_seconds",
            "Duration of history requests (/api/bars, /udf/history)",
            labels=["resolution"],
        )
        for resolution, hist in s.history.latency_s.items():
            history.add_metric([resolution], hist.cumulative(), hist.sum)
        yield history
        yield CounterMetricFamily(
            "tvflux_history_timeouts",
            "History queries given up on after TVFLUX_HISTORY_TIMEOUT_S (answered 503)",
            value=s.history.timeouts,
        )
        hot = s.history.hot
        if hot is not None:
            for name, doc, value in (
                ("hits", "History requests answered from the hot window", hot.hits),
                ("misses", "History requests the hot window could not answer (the store did)", hot.misses),
                ("loads", "(symbol, tier) rings read from the store into the hot window", hot.loads),
                (
                    "invalidations",
                    "Symbols dropped from the hot window (late trades, rebuilt windows, deletes)",
                    hot.invalidations,
                ),
            ):
                yield CounterMetricFamily(f"tvflux_hot_window_{name}", doc, value=value)
            yield GaugeMetricFamily("tvflux_hot_window_bars", "Bars held in the hot window", value=hot.size())
        # downsampling
        yield CounterMetricFamily(
            "tvflux_downsampler_runs", "Downsampling runs made by the service", value=s.downsampler.runs
        )
        yield GaugeMetricFamily(
            "tvflux_downsampler_failing",
            "1 when the last downsampling run failed",
            value=int(bool(s.downsampler.last_error)),
        )
        if s.downsampler.last_run_duration_s is not None:
            yield GaugeMetricFamily(
                "tvflux_downsampler_last_run_seconds",
                "Duration of the last run over all tiers",
                value=s.downsampler.last_run_duration_s,
            )
        limit = GaugeMetricFamily(
            "tvflux_downsampling_lag_limit_ms", "Lag past which /health/ready fails", labels=["tier"]
        )
        for lag in self.verdict.tiers if self.verdict is not None else []:
            if lag.max_lag_ms is not None:
                limit.add_metric([lag.tier], lag.max_lag_ms)
        yield limit
        dirty = GaugeMetricFamily(
            "tvflux_downsampling_dirty_windows", "Windows late trades made dirty, not yet rebuilt", labels=["tier"]
        )
        failing = GaugeMetricFamily(
            "tvflux_downsampling_tier_failing", "1 when the tier reports an error", labels=["tier"]
        )
        bars = CounterMetricFamily(
            "tvflux_downsampling_bars_written", "Bars written by the tier's runs", labels=["tier"]
        )
        for t in self.tiers:
            dirty.add_metric([t.tier], t.dirty_windows)
            failing.add_metric([t.tier], int(bool(t.error)))
            bars.add_metric([t.tier], self.services.downsampler.runlog.bars_written.get(t.tier, 0))
        yield dirty
        yield failing
        yield bars
        yield from source_metrics(s.sources.status().sources)


def render_metrics(services: Services, tiers: list[TierStatus], verdict: Verdict | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(services, tiers, verdict))
    ProcessCollector(registry=registry)  # CPU, memory, open files of this process (Linux)
    return generate_latest(registry)
