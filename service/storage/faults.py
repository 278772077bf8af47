"""Fault injection for the outage tests and drills: while ``trigger_path`` exists, every
store write fails as if the store were unreachable. Reads still work (an outage of
writes is the interesting case: acks must keep their promise). Enabled only by
``TVFLUX_FAULT_STORE_DOWN_FILE``; never on by default."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from service.core.errors import StoreUnavailable
from service.core.models import TradeColumns
from service.storage.base import Health


class FaultInjectingStore:
    def __init__(self, inner: Any, trigger_path: str) -> None:
        self._inner = inner
        self.trigger_path = trigger_path
        self.kind = inner.kind

    def _down(self) -> bool:
        return os.path.exists(self.trigger_path)

    async def append(self, batches: Sequence[TradeColumns], **kwargs: Any) -> None:
        if self._down():
            raise StoreUnavailable(f"injected outage ({self.trigger_path} exists)")
        await self._inner.append(batches, **kwargs)

    async def health(self) -> Health:
        if self._down():
            return Health(False, "injected outage")
        return await self._inner.health()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
