"""``tvflux symbols list|add|remove``: the symbol registry from the command line.

Through the service that holds the data directory when one runs (``/api/admin/symbols``:
the change is listed, audited and applied to open subscriptions at once), else on the
store directly (:class:`~service.runtime.symbols.SymbolRegistry`, the same code and the
same audit log; the service reads it at its next start).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import os
import socket
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import msgspec

from service.core.errors import UsageError
from service.core.settings import Settings
from service.core.symbols import SymbolInfo, SymbolRecord, SymbolRemoved, SymbolRequest, check_symbol, price_scale

if TYPE_CHECKING:
    from service.runtime.symbols import SymbolRegistry

EXIT_OK = 0
OFFLINE = "tvflux CLI, store opened directly"  # who changed the registry, for the audit log
T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = subparsers.add_parser("symbols", help="list, add (or update) and remove symbols")
    sub = cmd.add_subparsers(dest="symbols_command", required=True)
    listing = sub.add_parser("list", help="the symbols, their metadata and stored data (removed ones too)")
    listing.add_argument("--json", action="store_true", help="as JSON, as GET /api/admin/symbols answers")
    listing.add_argument("--url", help="the running service (default: the one serving this data dir)")
    listing.set_defaults(func=cmd_list)

    add = sub.add_parser("add", help="add a symbol, or update one's metadata (what is not given stays)")
    add.add_argument("symbol")
    add.add_argument("--description")
    add.add_argument("--tick-size", type=float, help="smallest price step, e.g. 0.01 or 0.00001 (default 0.01)")
    add.add_argument("--volume-precision", type=int, help="decimals of volumes on charts (default 6)")
    band = add.add_mutually_exclusive_group()
    band.add_argument("--price-band-pct", type=float, help="live trades further than this from the market are refused")
    band.add_argument("--no-price-band", action="store_true", help="no price band (a listing finds its price)")
    band.add_argument("--default-price-band", action="store_true", help="the service's TVFLUX_PRICE_BAND_PCT")
    add.add_argument("--url", help="the running service (default: the one serving this data dir)")
    add.set_defaults(func=cmd_add)

    remove = sub.add_parser("remove", help="unlist a symbol (its data is kept unless --with-data)")
    remove.add_argument("symbol")
    remove.add_argument("--with-data", action="store_true", help="also delete its stored trades and bars")
    remove.add_argument("--url", help="the running service (default: the one serving this data dir)")
    remove.set_defaults(func=cmd_remove)


def _actor() -> str:
    return f"tvflux symbols ({getpass.getuser()}@{socket.gethostname()})"


def _service(settings: Settings, url: str | None) -> str | None:
    """The service to go through: ``--url``, the one serving this data dir, or the one
    holding the store file; ``None``: work on the store directly."""
    from service.ops.discovery import running_service_url
    from service.ops.remote import serving_url

    if url:
        return url.rstrip("/")
    return running_service_url(settings.data_dir) or serving_url(settings)


def _call(url: str, method: str, path: str, settings: Settings, answer: type[T], body: bytes | None = None) -> T:
    """The service's JSON answer, as ``answer``."""
    from service.ops.remote import call

    return call(
        url,
        method,
        path,
        settings.admin_token,
        answer,
        data=body,
        content_type="application/json" if body is not None else None,
        headers={"X-Tvflux-Actor": _actor()},
        retries=3,
    )


def _request(args: argparse.Namespace) -> SymbolRequest:
    why = check_symbol(args.symbol)
    if why:
        raise UsageError(why)
    band: float | None | msgspec.UnsetType = msgspec.UNSET if args.price_band_pct is None else args.price_band_pct
    if args.no_price_band:
        band = 0.0
    if args.default_price_band:
        band = None
    return SymbolRequest(
        args.symbol,
        description=msgspec.UNSET if args.description is None else args.description,
        tick_size=msgspec.UNSET if args.tick_size is None else args.tick_size,
        volume_precision=msgspec.UNSET if args.volume_precision is None else args.volume_precision,
        price_band_pct=band,
    )


# --- the commands ---------------------------------------------------------------------


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    url = _service(settings, args.url)
    if url is not None:
        records = _call(url, "GET", "/api/admin/symbols", settings, dict[str, list[SymbolRecord]])["symbols"]
    else:
        records = asyncio.run(_offline(settings, lambda registry: registry.listing()))
    if args.json:
        print(json.dumps({"symbols": msgspec.to_builtins(records)}, indent=2))
        return EXIT_OK
    print(
        f"{'symbol':<16} {'state':<10} {'tick':>10} {'vol.dec':>7} {'band %':>7}  {'stored trades (UTC)':<41} description"
    )
    for r in records:
        spec = r.spec
        state = "removed" if not spec.listed else ("configured" if r.configured else "listed")
        band = spec.price_band_pct
        band_text = "default" if band is None else ("off" if band == 0 else f"{band:g}")
        first, last = r.first_trade_ms, r.last_trade_ms
        span = "none" if first is None or last is None else f"{_utc(first)} → {_utc(last)}"
        print(
            f"{spec.symbol:<16} {state:<10} {spec.tick_size:>10g} {spec.volume_precision:>7} {band_text:>7}  "
            f"{span:<41} {spec.description}"
        )
    return EXIT_OK


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    request = _request(args)
    url = _service(settings, args.url)
    if url is not None:
        info = _call(url, "POST", "/api/admin/symbols", settings, SymbolInfo, msgspec.json.encode(request))
        symbol, tick, scale, minmov = info.symbol, info.tick_size, info.pricescale, info.minmov
        where = f"through the service at {url}"
    else:
        spec = asyncio.run(_offline(settings, lambda registry: registry.upsert(request, who=OFFLINE, actor=_actor())))
        symbol, tick, (scale, minmov) = spec.symbol, spec.tick_size, price_scale(spec.tick_size)
        where = "in the store (the service lists it at its next start)"
    print(
        f"{symbol}: listed {where}; tick size {tick:g} (pricescale {scale}, minmov {minmov})",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    url = _service(settings, args.url)
    if url is not None:
        query = urllib.parse.urlencode({"symbol": args.symbol, "data": "true" if args.with_data else "false"})
        answer = _call(url, "DELETE", f"/api/admin/symbols?{query}", settings, SymbolRemoved)
        deleted, where = answer.deleted_trades, f"through the service at {url}"
    else:
        deleted = asyncio.run(
            _offline(
                settings,
                lambda registry: registry.remove(args.symbol, purge=args.with_data, who=OFFLINE, actor=_actor()),
            )
        )
        where = "in the store"
    data = f"its {deleted:,} stored trades and their bars deleted" if args.with_data else "its data kept"
    print(f"{args.symbol}: removed {where}; {data}", file=sys.stderr)
    return EXIT_OK


# --- on the store directly ------------------------------------------------------------------


async def _offline(settings: Settings, work: Callable[[SymbolRegistry], Awaitable[T]]) -> T:
    """``work`` done with a registry on the store itself (no service holds it)."""
    from service.runtime.audit import AuditLog
    from service.runtime.clock import now_ms
    from service.runtime.history import SymbolSet
    from service.runtime.symbols import SymbolRegistry
    from service.storage.factory import build_store

    store = build_store(settings)
    await store.start()
    try:
        registry = SymbolRegistry(
            store,
            SymbolSet(),
            configured=settings.symbols,
            audit=AuditLog(os.path.join(settings.data_dir, "audit.jsonl")),
            clock_ms=now_ms,
        )
        await registry.load()
        return await work(registry)
    finally:
        await store.close()


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
