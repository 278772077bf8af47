"""The HTTP answers besides bars, trades and downsampling (those are in
:mod:`service.core.models`): the UDF protocol's, ``/api/stats``, the audit page and the
health checks of the core and of an edge.

Field names are Python's; the JSON keys are what they always were: the UDF protocol's own
snake_case, tvflux's camelCase through ``rename="camel"``.
"""

from __future__ import annotations

import msgspec

from service.core.readiness import TierLag
from service.core.resolution import DAY_COUNTS, MINUTE_COUNTS, SECOND_COUNTS, SUPPORTED

# --- UDF (TradingView's protocol: its keys are snake_case) -----------------------------------


class UdfExchange(msgspec.Struct, frozen=True):
    value: str
    name: str
    desc: str


class UdfSymbolType(msgspec.Struct, frozen=True):
    name: str
    value: str


class UdfConfig(msgspec.Struct, frozen=True):
    supported_resolutions: list[str] = msgspec.field(default_factory=lambda: list(SUPPORTED))
    supports_group_request: bool = False
    supports_marks: bool = False
    supports_search: bool = True
    supports_timescale_marks: bool = False
    supports_time: bool = True
    exchanges: list[UdfExchange] = msgspec.field(
        default_factory=lambda: [UdfExchange("", "All", ""), UdfExchange("tvflux", "tvflux", "tvflux")]
    )
    symbols_types: list[UdfSymbolType] = msgspec.field(default_factory=lambda: [UdfSymbolType("crypto", "crypto")])


class UdfSymbol(msgspec.Struct, frozen=True, kw_only=True):
    """``/udf/symbols``: one symbol as the charting library resolves it."""

    name: str
    ticker: str
    full_name: str
    description: str
    type: str
    session: str = "24x7"
    timezone: str = "Etc/UTC"
    exchange: str
    listed_exchange: str
    format: str = "price"
    minmov: int = 1
    pricescale: int
    has_intraday: bool = True
    has_seconds: bool = True
    seconds_multipliers: list[str] = msgspec.field(default_factory=lambda: [str(n) for n in SECOND_COUNTS])
    intraday_multipliers: list[str] = msgspec.field(default_factory=lambda: [str(n) for n in MINUTE_COUNTS])
    has_daily: bool = True
    daily_multipliers: list[str] = msgspec.field(default_factory=lambda: [str(n) for n in DAY_COUNTS])
    has_weekly_and_monthly: bool = True
    weekly_multipliers: list[str] = msgspec.field(default_factory=lambda: ["1"])
    monthly_multipliers: list[str] = msgspec.field(default_factory=lambda: ["1"])
    supported_resolutions: list[str] = msgspec.field(default_factory=lambda: list(SUPPORTED))
    volume_precision: int = 6
    data_status: str = "streaming"


class UdfSearchItem(msgspec.Struct, frozen=True):
    symbol: str
    full_name: str
    description: str
    exchange: str
    ticker: str
    type: str


class UdfBars(msgspec.Struct, frozen=True, tag_field="s", tag="ok"):
    """``/udf/history`` with bars: columns, times in epoch **seconds**."""

    t: list[int]
    o: list[float]
    h: list[float]
    l: list[float]  # noqa: E741 (the protocol's name)
    c: list[float]
    v: list[float]


class UdfNoData(msgspec.Struct, frozen=True, tag_field="s", tag="no_data", omit_defaults=True, rename="camel"):
    """``/udf/history`` without bars; ``nextTime`` (epoch seconds): the newest bar before
    the range, if any."""

    next_time: int | None = None


# --- tvflux's own API -----------------------------------------------------------------------


class Deleted(msgspec.Struct, frozen=True):
    deleted: int


class StoreStats(msgspec.Struct, frozen=True):
    kind: str
    healthy: bool
    error: str | None


class WriterStats(msgspec.Struct, frozen=True, rename="camel"):
    pending_rows: int
    stored_rows: int
    spilled_rows: int
    spool_bytes: int
    last_error: str | None


class DownsamplerStats(msgspec.Struct, frozen=True, rename="camel"):
    runs: int
    last_error: str | None


class Stats(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``/api/stats``."""

    ingest_rate_per_s: float
    trades_accepted: int  # since this process started
    store_trades: int | None  # all the store holds (None: not counted)
    duplicates: int
    ws_clients: int  # this process's own, plus those its edges report (an edge itself is not one)
    subscriptions: int
    edges: int  # edge processes connected (serve --workers, tvflux edge)
    store: StoreStats
    writer: WriterStats
    downsampler: DownsamplerStats
    uptime_s: float
    admin_token_required: bool  # /admin asks for it before admin reads


# --- health -----------------------------------------------------------------------------------


class Liveness(msgspec.Struct, frozen=True, omit_defaults=True):
    """``/health/live``: the process answers (``role``: ``"edge"`` on an edge)."""

    status: str
    role: str | None = None


class WriterReadiness(msgspec.Struct, frozen=True, rename="camel"):
    pending_rows: int
    spilled_rows: int
    oldest_pending_age_s: float
    max_age_s: float


class BrokerState(msgspec.Struct, frozen=True):
    connected: bool
    error: str | None


class Readiness(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """The core's ``/health/ready`` (200 when ``ready``, else 503)."""

    ready: bool
    reasons: list[str]
    store: str
    writer_pending_rows: int
    writer: WriterReadiness
    downsampling: list[TierLag]
    # fan-out to other hosts: not a readiness condition of the core (ingest and history go
    # on without it); the edges report unready while it is gone. Absent without a broker.
    broker: BrokerState | None = None


class UpstreamState(msgspec.Struct, frozen=True):
    live: bool
    reason: str | None


class SymbolsState(msgspec.Struct, frozen=True):
    error: str | None


class EdgeReadiness(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """An edge's ``/health/ready`` (200 when ``ready``, else 503)."""

    ready: bool
    role: str = "edge"
    descriptors: str | None
    upstream: UpstreamState
    symbols: SymbolsState
    clients: int
    subscriptions: int
    frames_sent: int
    clients_cut: int
