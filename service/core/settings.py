"""Settings from ``TVFLUX_*`` environment variables, built by :func:`load_settings` only.

Pure: the environment is passed in as a mapping, nothing is read at import time, and every
bad variable is reported at once (one :class:`~service.core.errors.ConfigError` listing all).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import msgspec
from msgspec import Meta

from service.core.errors import ConfigError, UsageError
from service.core.plan import DEFAULT_RUN_ROWS, DEFAULT_TIERS, Plan, build_plan
from service.core.sources import SourceSpec, parse_sources
from service.core.symbols import check_symbol

_DEFAULT_SYMBOLS = ("BTCUSD", "ETHUSD", "LTCUSD")


class Secret(str):
    """A string whose repr never shows the value (tokens must not reach logs)."""

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"


# Field types shared by several settings (see _parser below for how each is read).
Names = Annotated[tuple[str, ...], Meta(min_length=1)]  # TVFLUX_X=a,b,c; when set, at least one
Size = Annotated[
    str,
    Meta(
        pattern=r"^[1-9][0-9]*(\.[0-9]+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", description="a size such as 512MB or 2GB"
    ),
]
WsUrl = Annotated[str, Meta(pattern=r"^wss?://[^\s]+$", description="a ws:// or wss:// URL")]
HttpUrl = Annotated[str, Meta(pattern=r"^https?://[^\s]+$", description="an http:// or https:// URL")]
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], Meta(extra={"upper": True})]  # any case


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting, declared once: its type and ``Meta`` constraints are what
    :func:`load_settings` checks ``TVFLUX_<NAME>`` against; the default is the default."""

    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8000
    data_dir: str = "./data"
    store: Literal["duckdb", "influx"] = "duckdb"
    # DuckDB's buffer pool caches the growing trades table up to this: the service's RSS
    # grows towards it over hours (measured in docs/performance.md, "Soak").
    duckdb_memory_limit: Size = "1GB"
    symbols: Names = _DEFAULT_SYMBOLS
    log_level: LogLevel = "INFO"

    # synthetic trades: total trades/s over all symbols; 0 turns the generator off
    synthetic_rate: Annotated[float, Meta(ge=0.0)] = 20.0
    synthetic_seed: Annotated[int, Meta(ge=0)] = 7
    # history written on first start into an empty store
    synthetic_backfill_s: Annotated[int, Meta(ge=0, le=366 * 86_400)] = 6 * 3600

    # ingest limits
    max_batch_trades: Annotated[int, Meta(ge=1)] = 10_000
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 4 * 1024 * 1024
    max_future_ms: Annotated[int, Meta(ge=0)] = 60_000  # a trade may be at most this far ahead of the clock
    # live ingest refuses trades older than this (epoch seconds sent as ms land in 1970);
    # 0 = no limit. Bulk history (tvflux import, POST /api/admin/trades) accepts any date.
    max_past_ms: Annotated[int, Meta(ge=0)] = 7 * 86_400_000
    max_frame_bytes: Annotated[int, Meta(ge=1024)] = 4 * 1024 * 1024
    # price band (a fat-finger guard, service/core/priceband.py): a live trade more than a
    # factor 1 + pct/100 away from its symbol's last trade price is refused; 0 = no band.
    # Per symbol: `tvflux symbols add S --price-band-pct N` (0 for a listing's first trades).
    price_band_pct: Annotated[float, Meta(ge=0.0, le=1000.0)] = 20.0
    # the band is relative to the *recent* market: a last trade older than this sets none
    price_band_window_ms: Annotated[int, Meta(ge=1)] = 900_000

    # trade writer
    flush_interval_ms: Annotated[int, Meta(ge=1)] = 200
    flush_rows: Annotated[int, Meta(ge=1)] = 50_000
    writer_max_pending_rows: Annotated[int, Meta(ge=1)] = 2_000_000

    # live push
    push_interval_ms: Annotated[int, Meta(ge=0)] = 50
    send_timeout_s: Annotated[float, Meta(ge=0.01)] = 5.0
    # closed bars waiting for one subscription before cut-off
    workers: Annotated[int, Meta(ge=0, le=64)] = 0  # edge processes of `tvflux serve` (0: one process)
    broker_url: str = ""  # nats://host:4222: publish live bars there for edges on other hosts
    client_buffer_max_bytes: Annotated[int, Meta(ge=4096)] = 256 * 1024  # unsent bytes per client before cut-off
    max_subscriptions_per_connection: Annotated[int, Meta(ge=1)] = 200

    # open WebSocket/SSE connections per client address
    max_connections_per_client: Annotated[int, Meta(ge=1)] = 64

    # durability: every accepted batch is in the on-disk spool before it is acknowledged
    spool_max_bytes: Annotated[int, Meta(ge=1024 * 1024)] = 1024 * 1024 * 1024  # past this: 429
    spool_fsync_interval_ms: Annotated[int, Meta(ge=0)] = 200  # 0 = fsync every batch before acknowledging it

    # access control (empty = open); tokens are Secret so they never reach logs or reprs
    ingest_token: Secret = Secret("")
    admin_token: Secret = Secret("")
    cors_origins: Names = ()

    # history
    max_bars: Annotated[int, Meta(ge=1)] = 10_000
    # countback may ask for more (TradingView's volume profile asks for up to 200,000 bars):
    # read from the store in pages of max_bars and streamed out page by page
    max_countback: Annotated[int, Meta(ge=1)] = 200_000
    # a store query taking longer answers 503 (Retry-After)
    history_timeout_s: Annotated[float, Meta(ge=0.1)] = 10.0
    # newest bars kept in memory per (symbol, tier) a chart asked for (service/runtime/hotwindow.py);
    # 0 = none, every history request reads the store
    hot_window_bars: Annotated[int, Meta(ge=0)] = 2_500

    # downsampling
    tiers: Names = DEFAULT_TIERS
    lookback_ms: Annotated[int, Meta(ge=0)] = 5 * 60_000
    grace_ms: Annotated[int, Meta(ge=0)] = 5_000
    downsample_interval_ms: Annotated[int, Meta(ge=0)] = 2_000
    # source rows one InfluxDB task run reads at most: runs are sized by work (service/core/plan.py)
    downsample_run_rows: Annotated[int, Meta(ge=1_000)] = DEFAULT_RUN_ROWS
    downsample_timeout_s: Annotated[float, Meta(ge=0.1)] = 120.0  # a run taking longer is abandoned and retried

    # readiness: /health/ready is false past these
    ready_writer_lag_s: Annotated[float, Meta(ge=0.0)] = 30.0  # oldest trade waiting for the store
    # tier lag allowed beyond its normal worst case
    ready_downsampling_slack_s: Annotated[float, Meta(ge=0.0)] = 300.0

    # fault injection for the fault tests and drills (never in production):
    fault_store_down_file: str = ""  # while this file exists, store writes fail
    fault_slow_query_file: str = ""  # embedded store: while this file exists, history reads take seconds

    # trade sources: exchanges' public trade streams, venue:VENUE_SYMBOL=SYMBOL each
    # (docs/sources.md); the synthetic market feeds the symbols no source feeds
    sources: Names = ()
    binance_ws_url: WsUrl = "wss://stream.binance.com:9443"
    binance_rest_url: HttpUrl = "https://api.binance.com"
    coinbase_ws_url: WsUrl = "wss://advanced-trade-ws.coinbase.com"
    coinbase_rest_url: HttpUrl = "https://api.coinbase.com"
    kraken_ws_url: WsUrl = "wss://ws.kraken.com/v2"
    kraken_rest_url: HttpUrl = "https://api.kraken.com"
    source_backfill_s: Annotated[int, Meta(ge=0)] = 3600  # a fresh symbol's history, fetched at first start
    source_max_backfill_s: Annotated[int, Meta(ge=1)] = 86_400  # an older gap's older part is left open
    source_reorder_ms: Annotated[int, Meta(ge=0)] = 1000  # out-of-order ids wait this long before a backfill
    source_gap_timeout_s: Annotated[float, Meta(ge=0.1)] = 60.0  # REST that cannot fill a gap for this long: open
    source_stall_s: Annotated[float, Meta(ge=0.5)] = 30.0  # a connection silent this long is replaced
    source_max_connection_s: Annotated[float, Meta(ge=0.0)] = (
        82_800.0  # reconnect before this (Binance: 24 h); 0 = never
    )
    source_backoff_max_s: Annotated[float, Meta(ge=0.1)] = 60.0  # reconnect back-off cap
    source_buffer_trades: Annotated[int, Meta(ge=10)] = 200_000  # trades held per symbol while a gap is fetched

    # InfluxDB 2
    influx_url: str = ""
    influx_token: Secret = Secret("")
    influx_org: str = "tvflux"
    influx_bucket: str = "trades"
    influx_bars_bucket: str = "bars"
    influx_status_bucket: str = "tvflux_status"
    influx_raw_retention_s: Annotated[int, Meta(ge=0)] = 0  # 0 keeps raw trades forever

    @property
    def plan(self) -> Plan:
        return build_plan(
            self.tiers, lookback_ms=self.lookback_ms, grace_ms=self.grace_ms, run_rows=self.downsample_run_rows
        )

    @property
    def feeds(self) -> list[SourceSpec]:
        """``TVFLUX_SOURCES`` as specs (validated by :func:`load_settings`)."""
        return parse_sources(self.sources)[0]

    def venue_urls(self, venue: str) -> tuple[str, str]:
        """The ``(WebSocket, REST)`` base URLs of one of :data:`~service.core.sources.VENUES`."""
        return {
            "binance": (self.binance_ws_url, self.binance_rest_url),
            "coinbase": (self.coinbase_ws_url, self.coinbase_rest_url),
            "kraken": (self.kraken_ws_url, self.kraken_rest_url),
        }[venue]


# --- from TVFLUX_* text to values, derived from the declarations above ------------------
#
# Each field's type and ``Meta`` constraints say how its variable is read and checked:
# ``int``/``float`` with ``ge``/``le``, ``Literal`` choices, ``Names`` (comma-separated,
# at least one), ``str`` with a ``pattern`` (the ``description`` says what is expected),
# ``Secret``. Every failure is a ``ValueError`` whose text follows the variable's name in
# the ConfigError.


def _bounded_int(meta: Meta) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if meta.ge is not None and value < meta.ge:
            raise ValueError(f"must be >= {meta.ge}")
        if meta.le is not None and value > meta.le:
            raise ValueError(f"must be <= {meta.le}")
        return value

    return parse


def _bounded_float(meta: Meta) -> Callable[[str], float]:
    lo = float(meta.ge if meta.ge is not None else 0.0)

    def parse(text: str) -> float:
        value = float(text)
        if not value >= lo or value == float("inf"):  # NaN fails the first test
            raise ValueError(f"must be a finite number >= {lo}")
        return value

    return parse


def _choice(options: tuple[str, ...], upper: bool) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.upper() if upper else text
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


def _names(text: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if not items:
        raise ValueError("must list at least one item, comma-separated")
    return items


def _matching(meta: Meta) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not re.fullmatch(str(meta.pattern), text.strip()):
            raise ValueError(f"must be {meta.description}")
        return text.strip()

    return parse


def _parser(hint: Any) -> Callable[[str], Any]:
    metas = [m for m in get_args(hint)[1:] if isinstance(m, Meta)] if get_origin(hint) is Annotated else []
    meta = metas[0] if metas else Meta()
    base = get_args(hint)[0] if get_origin(hint) is Annotated else hint
    if base is Secret:
        return Secret
    if base is int:
        return _bounded_int(meta)
    if base is float:
        return _bounded_float(meta)
    if get_origin(base) is Literal:
        return _choice(get_args(base), upper=bool((meta.extra or {}).get("upper")))
    if get_origin(base) is tuple:
        return _names
    if base is str:
        return _matching(meta) if meta.pattern is not None else str
    raise TypeError(f"no TVFLUX_* reader for {hint!r}")  # a new field type: teach _parser


_PARSERS: dict[str, Callable[[str], Any]] = {
    name: _parser(hint)
    for name, hint in get_type_hints(Settings, include_extras=True).items()
    if name in Settings.__struct_fields__
}

PREFIX = "TVFLUX_"
# TVFLUX_* variables that are not the service's settings: where the tests, the benchmark
# and the screenshot script find the programs they start. The docs tell users to export
# them, so the service must accept them (and ignore them) rather than refuse to start.
TOOL_VARIABLES = frozenset({"TVFLUX_INFLUXD", "TVFLUX_NATS_SERVER", "TVFLUX_CHROMIUM"})


def env_name(field: str) -> str:
    return PREFIX + field.upper()


def load_settings(environ: Mapping[str, str], **overrides: Any) -> Settings:
    """Build :class:`Settings` from ``TVFLUX_*`` variables in ``environ``; ``overrides``
    (e.g. from command-line flags) win. Unknown ``TVFLUX_*`` names are errors too, since a
    typo that silently does nothing is worse than a refusal to start."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    known = {env_name(field) for field in _PARSERS}
    for name in sorted(environ):
        if name.startswith(PREFIX) and name not in known and name not in TOOL_VARIABLES:
            problems.append(f"{name}: unknown setting")
    for field, parse in _PARSERS.items():
        name = env_name(field)
        if name not in environ:
            continue
        raw = environ[name]
        try:
            values[field] = parse(raw)
        except ValueError as exc:
            shown = "***" if field.endswith("token") else repr(raw)  # never echo a secret
            problems.append(f"{name}={shown}: {exc}")
    flags = []  # command-line flags: the same checks, named as the flag the user typed
    for field, value in overrides.items():
        if value is None:
            continue
        try:
            values[field] = _PARSERS[field](str(value))
        except ValueError as exc:
            flags.append(f"--{field.replace('_', '-')} {value}: {exc}")
    if flags:
        raise UsageError("; ".join(flags))
    _, source_problems = parse_sources(values.get("sources", ()))
    problems.extend(f"{env_name('sources')}: {p}" for p in source_problems)
    # the rule ingest applies: a listed symbol that no trade may carry would be a dead one
    problems += [f"{env_name('symbols')}: {why}" for name in values.get("symbols", ()) if (why := check_symbol(name))]
    if values.get("store") == "influx" and not values.get("influx_url"):
        problems.append(f"{env_name('store')}=influx needs {env_name('influx_url')}")
    if not problems:
        try:
            settings = Settings(**values)
            _ = settings.plan  # validate tiers, lookback and grace together
        except ConfigError as exc:
            problems.extend(f"{env_name('tiers')}: {p}" for p in exc.problems)
    if problems:
        raise ConfigError(problems)
    return settings
