"""``gaps.jsonl`` (service/runtime/exchanges/gaplog.py) outlives releases: the records an
earlier release appended read back, and new ones are appended in the same format."""

from __future__ import annotations

from service.core.sources import GapRecord
from service.runtime.exchanges.gaplog import GapLog

# Two records exactly as earlier releases wrote them: camelCase keys, defaults left out.
EARLIER_LINES = (
    b'{"source":"binance","symbol":"BTCUSD","venueSymbol":"BTCUSDT","fromId":101,"state":"backfilled",'
    b'"cause":"id jump","detectedAt":1700000000500,"toId":105,"fromTime":1700000000101,'
    b'"toTime":1700000000106,"trades":5,"resolvedAt":1700000000600}\n'
    b'{"source":"kraken","symbol":"ETHUSD","venueSymbol":"ETH/USD","fromId":7,"state":"open",'
    b'"cause":"restart","detectedAt":1700000001000,"reason":"REST gave up","resolvedAt":1700000002000}\n'
)


async def test_records_written_by_an_earlier_release_read_back_and_new_ones_are_written_alike(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_bytes(EARLIER_LINES)
    log = GapLog(str(path))
    log.load()
    kraken, binance = log.recent()  # newest first
    assert binance == GapRecord(
        source="binance",
        symbol="BTCUSD",
        venue_symbol="BTCUSDT",
        from_id=101,
        state="backfilled",
        cause="id jump",
        detected_at=1700000000500,
        to_id=105,
        from_time=1700000000101,
        to_time=1700000000106,
        trades=5,
        resolved_at=1700000000600,
    )
    assert (kraken.venue_symbol, kraken.from_id, kraken.to_id, kraken.state, kraken.reason, kraken.trades) == (
        "ETH/USD",
        7,
        None,
        "open",
        "REST gave up",
        0,
    )

    path.write_bytes(b"")
    log.add([binance, kraken])
    await log.flush()
    assert path.read_bytes() == EARLIER_LINES
