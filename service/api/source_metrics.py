"""The trade sources' part of ``/metrics``: per source (``source``: ``synthetic``,
``binance``, ``coinbase``, ``kraken``) and per fed symbol. Read from the sources' own
counters at scrape time (docs/monitoring.md lists every name)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from service.core.sources import SourceStatus, SymbolFeed

_Family = type[CounterMetricFamily] | type[GaugeMetricFamily]


def source_metrics(statuses: list[SourceStatus]) -> Iterator[Metric]:
    per_source: list[tuple[_Family, str, str, Callable[[SourceStatus], float]]] = [
        (
            GaugeMetricFamily,
            "tvflux_source_connected",
            "1 while the source's stream is connected",
            lambda st: st.connected,
        ),
        (
            CounterMetricFamily,
            "tvflux_source_reconnects",
            "Connections the source had to reopen",
            lambda st: st.reconnects,
        ),
        (
            CounterMetricFamily,
            "tvflux_source_rest_requests",
            "REST requests sent to the venue",
            lambda st: st.rest_requests,
        ),
        (
            CounterMetricFamily,
            "tvflux_source_rest_weight_used",
            "REST weight spent (Binance's request weight; one per request elsewhere)",
            lambda st: st.rest_weight_used,
        ),
    ]
    for cls, name, doc, of_source in per_source:
        family = cls(name, doc, labels=["source"])
        for st in statuses:
            family.add_metric([st.name], float(of_source(st)))
        yield family
    paused = GaugeMetricFamily(
        "tvflux_source_rest_paused",
        "1 while the venue's REST API asked us to wait (429) or banned us (418)",
        labels=["source"],
    )
    for st in statuses:
        paused.add_metric([st.name], int(st.rest_paused_until is not None))
    yield paused
    per_symbol: list[tuple[_Family, str, str, Callable[[SymbolFeed], float]]] = [
        (
            CounterMetricFamily,
            "tvflux_source_trades",
            "Trades the source fed into ingest",
            lambda feed: feed.trades,
        ),
        (
            GaugeMetricFamily,
            "tvflux_source_trades_per_second",
            "Trades a second, last 5 s",
            lambda feed: feed.trades_per_s,
        ),
        (
            CounterMetricFamily,
            "tvflux_source_trades_backfilled",
            "Trades fetched over REST",
            lambda feed: feed.trades_backfilled,
        ),
        (
            CounterMetricFamily,
            "tvflux_source_gaps_found",
            "Gaps in the stream found (filled or not)",
            lambda feed: feed.gaps_found,
        ),
        (
            CounterMetricFamily,
            "tvflux_source_gaps_left_open",
            "Gaps REST could not fill: their trades are missing from the bars",
            lambda feed: feed.gaps_open,
        ),
    ]
    for cls, name, doc, of_feed in per_symbol:
        family = cls(name, doc, labels=["source", "symbol"])
        for st in statuses:
            for feed in st.symbols:
                family.add_metric([st.name, feed.symbol], float(of_feed(feed)))
        yield family
    age = GaugeMetricFamily(
        "tvflux_source_last_trade_age_seconds",
        "Since the symbol's newest trade was accepted",
        labels=["source", "symbol"],
    )
    backfilling = GaugeMetricFamily(
        "tvflux_source_backfilling", "1 while a gap of the symbol is being fetched", labels=["source", "symbol"]
    )
    for st in statuses:
        for feed in st.symbols:
            if feed.last_trade_age_s is not None:
                age.add_metric([st.name, feed.symbol], feed.last_trade_age_s)
            backfilling.add_metric([st.name, feed.symbol], int(feed.state == "backfilling"))
    yield age
    yield backfilling
