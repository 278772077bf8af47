"""Keeping the load generator's trades out of real data.

Every trade the generator publishes is stored for good, and its latency markers are
priced at the epoch millisecond (≈1.8e12, see :mod:`loadgen.markers`): one run against a
symbol gives every bar of it, from 1 minute to 1 month, a 1.8-trillion high. So a run
publishes only to the load generator's **own symbols** (``LOADGEN-…``, the default), and:

- with ``--spawn`` and a scratch data directory the server is created for the run and
  accepts exactly the run's symbols (``TVFLUX_SYMBOLS``); nothing is checked;
- against any other server (``--url``, or ``--spawn --data-dir``) a run that would write to
  a symbol that is not its own is refused before anything is sent, unless the user says
  so explicitly (``--allow-real-symbols``). Own symbols the server does not accept are
  refused too, with what to configure.

Markers are far outside any price band (``TVFLUX_PRICE_BAND_PCT``, a fat-finger guard), so
before publishing a run turns the band off for its own symbols it writes to
(:func:`turn_price_band_off`, ``POST /api/admin/symbols`` with ``priceBandPct: 0``, the
admin token from ``TVFLUX_ADMIN_TOKEN``); a server that refuses is named with the command
that does it. A real symbol (``--allow-real-symbols``) keeps its band: its markers are
refused unless the band is turned off for it by hand.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

OWN_PREFIX = "LOADGEN-"
DEFAULT_SYMBOLS = ("LOADGEN-1", "LOADGEN-2", "LOADGEN-3")


class RefusedRun(RuntimeError):
    """The run would write where it must not; nothing was sent."""


def is_own(symbol: str) -> bool:
    return symbol.startswith(OWN_PREFIX)


def check_target(
    base_url: str,
    symbols: Sequence[str],
    *,
    writes: bool,
    allow_real_symbols: bool,
    get_json: Callable[[str, str], Any],
) -> None:
    """Raise :class:`RefusedRun` when a run against ``base_url`` must not start."""
    if not writes:
        return  # subscribers and history requests only read
    foreign = [s for s in symbols if not is_own(s)]
    try:
        known = [s["symbol"] for s in get_json(base_url, "/api/symbols")["symbols"]]
    except Exception as exc:  # noqa: BLE001 - any failure: no run
        raise RefusedRun(f"cannot read the symbols of {base_url} ({exc}); refusing to publish to it") from None
    if foreign and not allow_real_symbols:
        held = [s for s in known if not is_own(s)]
        raise RefusedRun(
            f"refusing to publish to {', '.join(foreign)} on {base_url}: the load generator's trades and latency "
            f"markers (priced at the epoch ms, ≈1.8e12) would be stored in them for good, and every bar from 1m to "
            f"1M would show that high. The server holds {', '.join(held) or 'no other symbols'}. Use --spawn (a "
            f"scratch server), or the load generator's own symbols ({OWN_PREFIX}…, the default), or pass "
            f"--allow-real-symbols if this server's data is disposable."
        )
    missing = [s for s in symbols if s not in known]
    if missing:
        raise RefusedRun(
            f"{base_url} does not accept {', '.join(missing)}: start it with TVFLUX_SYMBOLS listing them next to its "
            f"own (e.g. TVFLUX_SYMBOLS={','.join([*[s for s in known if not is_own(s)], *missing])}), "
            f"or use --spawn"
        )


def turn_price_band_off(base_url: str, symbols: Sequence[str], admin_token: str | None) -> None:
    """``priceBandPct: 0`` for each of ``symbols`` on ``base_url`` (idempotent, audited by the
    server); :class:`RefusedRun` when the server does not allow it."""
    for symbol in symbols:
        request = urllib.request.Request(
            base_url + "/api/admin/symbols",
            data=json.dumps({"symbol": symbol, "priceBandPct": 0}).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "X-Tvflux-Actor": "tvflux-loadgen"},
        )
        if admin_token:
            request.add_header("Authorization", f"Bearer {admin_token}")
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except (urllib.error.URLError, OSError) as exc:
            raise RefusedRun(
                f"cannot turn the price band off for {symbol} on {base_url} ({exc}): the load generator's latency "
                f"markers (≈1.8e12) are outside any band. Set TVFLUX_ADMIN_TOKEN to the server's admin token, or "
                f"run `tvflux symbols add {symbol} --no-price-band` against it"
            ) from None
