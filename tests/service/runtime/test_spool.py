import os

import numpy as np
import pytest

from service.core.errors import Overloaded
from service.core.models import TradeColumns
from service.runtime.spool import Spool


def batch(n, start=0, ids=False):
    ts = (np.arange(n, dtype=np.int64) + start) * 1_000_000
    return TradeColumns(
        "BTCUSD", ts, ts / 1e9 + 1, np.full(n, 0.5), [f"i{start + k}" for k in range(n)] if ids else None
    )


def same(a, b):
    return (
        a.symbol == b.symbol
        and np.array_equal(a.ts_ns, b.ts_ns)
        and np.array_equal(a.price, b.price)
        and np.array_equal(a.size, b.size)
        and a.ids == b.ids
    )


def test_round_trip_and_read_after(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=10**8, fsync_interval_ms=0)
    assert spool.open() == 0
    written = {seq: [batch(5, seq * 10, ids=seq % 2 == 0)] for seq in range(1, 8)}
    for seq, b in written.items():
        spool.append(seq, b)
    got = spool.read_after(3, max_rows=10**9)
    assert [s for s, _ in got] == [4, 5, 6, 7]
    assert all(same(g[0], written[s][0]) for s, g in got)
    assert [s for s, _ in spool.read_after(0, max_rows=12)] == [1, 2, 3]  # bounded by rows
    spool.close()
    reopened = Spool(str(tmp_path), max_bytes=10**8)
    assert reopened.open() == 7
    assert [s for s, _ in reopened.read_after(6, 100)] == [7]


def test_torn_tail_is_cut_and_corrupt_record_skipped(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=10**8)
    spool.open()
    for seq in (1, 2, 3):
        spool.append(seq, [batch(3, seq * 10)])
    spool.close()
    (segment,) = [tmp_path / n for n in os.listdir(tmp_path)]
    data = bytearray(segment.read_bytes())
    record_len = len(data) // 3
    data[record_len + 30] ^= 0xFF  # corrupt the payload of record 2
    segment.write_bytes(bytes(data) + b"TVF1\x99\x00")  # and a torn header at the end
    again = Spool(str(tmp_path), max_bytes=10**8)
    assert again.open() == 3
    assert [s for s, _ in again.read_after(0, 100)] == [1, 3]
    assert again.corrupt_records >= 1
    assert segment.stat().st_size == len(data)  # the torn tail was cut off


def test_full_spool_refuses_and_release_frees(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=4000, segment_bytes=1500)
    spool.open()
    seq = 0
    with pytest.raises(Overloaded):
        for seq in range(1, 100):
            spool.append(seq, [batch(10, seq * 10)])
    full_at = seq
    assert spool.size_bytes <= 4000
    spool.release(full_at - 1)
    assert spool.size_bytes < 4000
    spool.append(full_at, [batch(10)])  # room again
    assert [s for s, _ in spool.read_after(full_at - 1, 100)] == [full_at]
