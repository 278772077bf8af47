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
"""

from __future__ import annotations

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
