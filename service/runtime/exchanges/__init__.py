"""The asyncio side of the exchange sources: WebSocket sessions (:mod:`.session`), REST
with the venue's budget (:mod:`.rest`), the source that ties them to the gap tracker and
to ingest (:mod:`.source`), and the gap log (:mod:`.gaplog`). The protocol logic they
drive is pure and lives in :mod:`service.core.venues`."""
