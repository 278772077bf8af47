"""The exchanges' public trade protocols, sans I/O.

Each venue module (:mod:`.binance`, :mod:`.coinbase`, :mod:`.kraken`) turns the venue's
WebSocket messages and REST answers into values (:mod:`.common`) and says which requests
to make; it never opens a socket and never reads the clock. :mod:`.tracker` decides, from
trade ids alone, what is missing and when a gap is closed or left open; :mod:`.budget`
holds the politeness rules (message and REST-weight budgets, back-off). The asyncio
adapters that do the I/O live in :mod:`service.runtime.exchanges`.
"""

from __future__ import annotations

from service.core.venues.binance import Binance
from service.core.venues.coinbase import Coinbase
from service.core.venues.common import Venue
from service.core.venues.kraken import Kraken

_VENUES: dict[str, type[Venue]] = {"binance": Binance, "coinbase": Coinbase, "kraken": Kraken}


def venue(name: str) -> Venue:
    """The protocol of venue ``name`` (one of :data:`service.core.sources.VENUES`)."""
    return _VENUES[name]()
