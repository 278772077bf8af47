"""Settings from ``TVFLUX_*`` environment variables, built by :func:`load_settings` only.

Pure: the environment is passed in as a mapping, nothing is read at import time, and every
bad variable is reported at once (one :class:`~service.core.errors.ConfigError` listing all).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import re

import msgspec

from service.core.errors import ConfigError
from service.core.plan import DEFAULT_TIERS, Plan, build_plan

_DEFAULT_SYMBOLS = ("BTCUSD", "ETHUSD", "LTCUSD")


class Secret(str):
    """A string whose repr never shows the value (tokens must not reach logs)."""

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "./data"
    store: str = "duckdb"  # or "influx"
    # DuckDB's buffer pool caches the growing trades table up to this: the service's RSS
    # grows towards it over hours (measured in docs/performance.md, "Soak").
    duckdb_memory_limit: str = "1GB"
    symbols: tuple[str, ...] = _DEFAULT_SYMBOLS
    log_level: str = "INFO"

    # synthetic trades: total trades/s over all symbols; 0 turns the generator off
    synthetic_rate: float = 20.0
    synthetic_seed: int = 7
    synthetic_backfill_s: int = 6 * 3600  # history written on first start into an empty store

    # ingest limits
    max_batch_trades: int = 10_000
    max_body_bytes: int = 4 * 1024 * 1024
    max_future_ms: int = 60_000  # a trade may be at most this far ahead of the clock
    max_frame_bytes: int = 4 * 1024 * 1024

    # trade writer
    flush_interval_ms: int = 200
    flush_rows: int = 50_000
    writer_max_pending_rows: int = 2_000_000

    # live push
    push_interval_ms: int = 50
    send_timeout_s: float = 5.0
    client_queue_max: int = 256  # closed bars waiting for one subscription before cut-off
    max_subscriptions_per_connection: int = 200

    max_connections_per_client: int = 64  # open WebSocket/SSE connections per client address

    # durability: every accepted batch is in the on-disk spool before it is acknowledged
    spool_max_bytes: int = 1024 * 1024 * 1024  # past this, ingest answers 429
    spool_fsync_interval_ms: int = 200  # 0 = fsync every batch before acknowledging it

    # access control (empty = open); tokens are Secret so they never reach logs or reprs
    ingest_token: Secret = Secret("")
    admin_token: Secret = Secret("")
    cors_origins: tuple[str, ...] = ()

    # history
    max_bars: int = 10_000
    history_timeout_s: float = 10.0  # a store query taking longer answers 503 (Retry-After)

    # downsampling
    tiers: tuple[str, ...] = DEFAULT_TIERS
    lookback_ms: int = 5 * 60_000
    grace_ms: int = 5_000
    downsample_interval_ms: int = 2_000
    downsample_timeout_s: float = 120.0  # a run taking longer is abandoned and retried

    # readiness: /health/ready is false past these
    ready_writer_lag_s: float = 30.0  # oldest trade waiting for the store
    ready_downsampling_slack_s: float = 300.0  # tier lag allowed beyond its normal worst case

    # fault injection for the outage tests: while this file exists, store writes fail
    fault_store_down_file: str = ""

    # InfluxDB 2
    influx_url: str = ""
    influx_token: Secret = Secret("")
    influx_org: str = "tvflux"
    influx_bucket: str = "trades"
    influx_bars_bucket: str = "bars"
    influx_status_bucket: str = "tvflux_status"
    influx_raw_retention_s: int = 0  # 0 keeps raw trades forever

    @property
    def plan(self) -> Plan:
        return build_plan(self.tiers, lookback_ms=self.lookback_ms, grace_ms=self.grace_ms)


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if lo is not None and value < lo:
            raise ValueError(f"must be >= {lo}")
        if hi is not None and value > hi:
            raise ValueError(f"must be <= {hi}")
        return value

    return parse


def _float(lo: float = 0.0) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not value >= lo or value == float("inf"):
            raise ValueError(f"must be a finite number >= {lo}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return text

    return parse


def _csv(text: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if not items:
        raise ValueError("must list at least one item, comma-separated")
    return items


def _size(text: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]*(\.[0-9]+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", text.strip()):
        raise ValueError("must be a size such as 512MB or 2GB")
    return text.strip()


def _log_level(text: str) -> str:
    return _choice("DEBUG", "INFO", "WARNING", "ERROR")(text.upper())


_PARSERS: dict[str, Callable[[str], Any]] = {
    "host": str,
    "port": _int(0, 65535),
    "data_dir": str,
    "store": _choice("duckdb", "influx"),
    "duckdb_memory_limit": _size,
    "symbols": _csv,
    "log_level": _log_level,
    "synthetic_rate": _float(0.0),
    "synthetic_seed": _int(0),
    "synthetic_backfill_s": _int(0, 366 * 86_400),
    "max_batch_trades": _int(1),
    "max_body_bytes": _int(1024),
    "max_future_ms": _int(0),
    "max_frame_bytes": _int(1024),
    "flush_interval_ms": _int(1),
    "flush_rows": _int(1),
    "writer_max_pending_rows": _int(1),
    "push_interval_ms": _int(0),
    "send_timeout_s": _float(0.01),
    "client_queue_max": _int(1),
    "max_subscriptions_per_connection": _int(1),
    "max_bars": _int(1),
    "history_timeout_s": _float(0.1),
    "max_connections_per_client": _int(1),
    "spool_max_bytes": _int(1024 * 1024),
    "spool_fsync_interval_ms": _int(0),
    "ingest_token": Secret,
    "admin_token": Secret,
    "cors_origins": _csv,
    "downsample_timeout_s": _float(0.1),
    "fault_store_down_file": str,
    "ready_writer_lag_s": _float(0.0),
    "ready_downsampling_slack_s": _float(0.0),
    "tiers": _csv,
    "lookback_ms": _int(0),
    "grace_ms": _int(0),
    "downsample_interval_ms": _int(0),
    "influx_url": str,
    "influx_token": Secret,
    "influx_org": str,
    "influx_bucket": str,
    "influx_bars_bucket": str,
    "influx_status_bucket": str,
    "influx_raw_retention_s": _int(0),
}

PREFIX = "TVFLUX_"


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
        if name.startswith(PREFIX) and name not in known:
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
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values.get("store") == "influx" and not values.get("influx_url"):
        problems.append(f"{env_name('store')}=influx needs {env_name('influx_url')}")
    if not problems:
        try:
            settings = Settings(**values)
            settings.plan  # validate tiers, lookback and grace together
        except ConfigError as exc:
            problems.extend(f"{env_name('tiers')}: {p}" for p in exc.problems)
    if problems:
        raise ConfigError(problems)
    return settings
