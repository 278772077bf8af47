"""Parsing Binance aggTrades CSVs: every row accepted or rejected with the right reason,
checked against a plain line-by-line reference parser on random files."""

from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest

from service.ops import binance_csv as bcsv

T0_MS = 1_704_067_200_000  # 2024-01-01
MAX_TIME_MS = 1_800_000_000_000
HEADER8 = ",".join(bcsv.COLUMNS)
HEADER7 = ",".join(bcsv.COLUMNS[:7])


@pytest.mark.parametrize(
    "name, symbol",
    [
        ("BTCUSDT-aggTrades-2024-01.zip", "BTCUSDT"),
        ("BTCUSDT-aggTrades-2024-01.csv", "BTCUSDT"),
        ("ethusdt-aggTrades-2024-01-15.csv", "ETHUSDT"),
        ("some/dir/1000PEPEUSDT-aggTrades-2025-03-02.zip", "1000PEPEUSDT"),
        ("BTCUSDT-trades-2024-01.zip", None),
        ("aggTrades.csv", None),
        ("BTCUSDT-aggTrades-2024-01.csv.gz", None),
    ],
)
def test_symbol_from_file_name(name, symbol):
    assert bcsv.symbol_from_name(name) == symbol


@pytest.mark.parametrize(
    "head, layout",
    [
        (b"1,2.5,1,1,1,1704067200000,True,True\n2,2.5,1,1,1,1704067200000,False,True\n", bcsv.Layout(False, 8)),
        (b"1,2.5,1,1,1,1704067200000,True\n", bcsv.Layout(False, 7)),
        ((HEADER7 + "\n1,2.5,1,1,1,1704067200000,true\n").encode(), bcsv.Layout(True, 7)),
        ((HEADER8.upper() + "\r\n").encode(), bcsv.Layout(True, 8)),
        # one bad line among good ones does not decide the layout
        (b"1,2.5,1,1,1,1704067200000,True,True\n2,2.5\n3,2.5,1,1,1,1704067200000,True,True\n", bcsv.Layout(False, 8)),
    ],
)
def test_sniff_recognises_the_layouts(head, layout):
    assert bcsv.sniff(head) == layout


@pytest.mark.parametrize(
    "head, message",
    [
        (b"", "empty"),
        (b"agg_trade_id,price,amount\n1,2,3\n", "unknown header"),
        (b"time,price,amount\n1,2,3\n", "rows have 7 or 8"),
        (b"1,2,3\n4,5,6\n", "rows have 7 or 8"),
    ],
)
def test_sniff_refuses_other_files(head, message):
    with pytest.raises(bcsv.ImportFormatError, match=message):
        bcsv.sniff(head)


# --- random files against a reference ---------------------------------------------------------

CORRUPTIONS = ["ok"] * 12 + [
    "fields",
    "id",
    "id_neg",
    "time_text",
    "time_old",
    "time_future",
    "price_zero",
    "price_text",
    "price_neg",
    "qty_inf",
    "qty_empty",
    "micro",
]


def make_line(rng: random.Random, agg_id: int, t_ms: int, columns: int) -> tuple[str, str]:
    """A line and what the reference expects of it (``ok``/``micro`` or a reason)."""
    kind = rng.choice(CORRUPTIONS)
    agg, price, qty, time_field = (
        str(agg_id),
        f"{rng.uniform(1, 70000):.8f}",
        f"{rng.uniform(0.0001, 5):.8f}",
        str(t_ms),
    )
    if kind == "fields":
        return f"{agg},{price}", bcsv.MALFORMED
    if kind == "id":
        agg = "x" + agg
    elif kind == "id_neg":
        agg = "-" + agg
    elif kind == "time_text":
        time_field = "2024-01-01"
    elif kind == "time_old":
        time_field = "1000000000000"  # 2001
    elif kind == "time_future":
        time_field = str(MAX_TIME_MS + 1)
    elif kind == "price_zero":
        price = "0.00000000"
    elif kind == "price_text":
        price = "NaN"
    elif kind == "price_neg":
        price = "-" + price
    elif kind == "qty_inf":
        qty = "1e400"
    elif kind == "qty_empty":
        qty = ""
    elif kind == "micro":
        time_field = str(t_ms * 1000 + rng.randrange(1000))
    fields = [agg, price, qty, str(agg_id * 2), str(agg_id * 2 + 1), time_field, rng.choice(["True", "False"])]
    if columns == 8:
        fields.append("True")
    return ",".join(fields), kind


def reference_parse(line: str) -> tuple[str, tuple[int, int, float, float] | None]:
    """Line by line, plain Python: (reason or 'ok', (id, ms, price, qty))."""
    fields = line.split(",")
    if len(fields) not in (7, 8):
        return bcsv.MALFORMED, None
    agg, price, qty, time_field = fields[0], fields[1], fields[2], fields[5]
    if not agg.isdigit():
        return bcsv.BAD_ID, None
    if not time_field.isdigit():
        return bcsv.BAD_TIME, None
    t = int(time_field)
    ms = t // 1000 if t >= 10**14 else t
    if not bcsv.MIN_TIME_MS <= ms <= MAX_TIME_MS:
        return bcsv.BAD_TIME, None
    for text, reason in ((price, bcsv.BAD_PRICE), (qty, bcsv.BAD_QUANTITY)):
        try:
            value = float(text)
        except ValueError:
            return reason, None
        if not (math.isfinite(value) and value > 0) or text.startswith(("-", "+")) or text.lower() in ("nan", "inf"):
            return reason, None
    return "ok", (int(agg), ms, float(price), float(qty))


@pytest.mark.parametrize("seed", range(6))
def test_random_files_match_the_reference_whatever_the_block_size(seed):
    rng = random.Random(seed)
    columns = rng.choice([7, 8])
    header = rng.random() < 0.5
    lines, t = [], T0_MS
    for i in range(rng.randrange(300, 900)):
        t += rng.choice([0, 0, 1, 7, 1000])
        line, _ = make_line(rng, 10_000 + i, t, columns)
        lines.append(line)
    text = ((HEADER8 if columns == 8 else HEADER7) + "\n" if header else "") + "\n".join(lines) + "\n"
    data = text.encode()
    expected_ok = []
    expected_rejects: dict[str, int] = {}
    for line in lines:
        reason, row = reference_parse(line)
        if row is None:
            expected_rejects[reason] = expected_rejects.get(reason, 0) + 1
        else:
            expected_ok.append(row)
    layout = bcsv.sniff(data[:65536])
    assert layout == bcsv.Layout(header, columns)
    for block_bytes in (1 << 20, 2048, 777):
        got, rejects, rows_read = [], bcsv.Rejects(), 0
        for chunk in bcsv.read_chunks(io.BytesIO(data), layout, max_time_ms=MAX_TIME_MS, block_bytes=block_bytes):
            rejects.merge(chunk.rejects)
            rows_read += chunk.rows_read
            got.extend(zip(chunk.agg_ids.tolist(), chunk.ts_ms.tolist(), chunk.price.tolist(), chunk.quantity.tolist()))
        assert got == expected_ok, block_bytes
        assert rejects.counts == expected_rejects, block_bytes
        assert rows_read == len(lines)
        assert all(1 <= len(v) <= bcsv.MAX_EXAMPLES for v in rejects.examples.values())


def test_microsecond_times_are_detected_per_row_and_counted():
    data = (
        b"1,10,1,1,1,1704067200123,True,True\n"
        b"2,10,1,1,1,1704067200123456,True,True\n"
        b"3,10,1,1,1,1704067200999999,True,True\n"
    )
    (chunk,) = list(bcsv.read_chunks(io.BytesIO(data), bcsv.Layout(False, 8), max_time_ms=MAX_TIME_MS))
    assert chunk.ts_ms.tolist() == [1704067200123, 1704067200123, 1704067200999]
    assert chunk.microsecond_rows == 2


def test_duplicate_ids_keep_the_first_row_in_order():
    chunk = bcsv.Chunk(
        np.array([5, 6, 5, 7, 6]), np.arange(5) + T0_MS, np.array([1.0, 2, 3, 4, 5]), np.ones(5), bcsv.Rejects(), 5, 0
    )
    out = bcsv.drop_duplicate_ids(chunk)
    assert out.agg_ids.tolist() == [5, 6, 7] and out.price.tolist() == [1.0, 2.0, 4.0]
    assert out.rejects.counts == {bcsv.DUPLICATE_ID: 2}
    assert bcsv.drop_duplicate_ids(out) is out


def test_the_newest_millisecond_is_carried_to_the_next_chunk():
    ts = np.array([10, 11, 12, 12, 11]) + T0_MS
    chunk = bcsv.Chunk(np.arange(5), ts, np.arange(5.0), np.ones(5), bcsv.Rejects(), 5, 0)
    head, carry = bcsv.split_last_millisecond(chunk)
    assert head.agg_ids.tolist() == [0, 1, 4] and carry.agg_ids.tolist() == [2, 3]
    nxt = bcsv.Chunk(np.array([9]), np.array([13 + T0_MS]), np.array([9.0]), np.ones(1), bcsv.Rejects(), 1, 0)
    joined = bcsv.concat(carry, nxt)
    assert joined.agg_ids.tolist() == [2, 3, 9] and joined.rows_read == 1
    single = bcsv.Chunk(np.arange(2), np.array([T0_MS, T0_MS]), np.ones(2), np.ones(2), bcsv.Rejects(), 2, 0)
    assert bcsv.split_last_millisecond(single) == (single, None)
