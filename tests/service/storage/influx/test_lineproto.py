"""Line protocol: every line must parse back (with the reference grammar) to exactly the
trade that was encoded — same float64 bits, same nanosecond, same symbol and id."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client import Point

from service.storage.influx.lineproto import (
    encode_bars,
    encode_trades,
    escape_string_field,
    series_prefix,
    split_lines,
    unique_ns,
)
from tests.service.storage.influx.lp_reader import parse

T0 = 1_700_000_000_000_000_000


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def by_time(rows):
    return {ts: (m, tags, fields) for m, tags, fields, ts in rows}


# --- numbers round-trip exactly -----------------------------------------------------


def test_realistic_ticks_round_trip_exactly() -> None:
    rng = np.random.default_rng(3)
    n = 50_000  # more than one vectorised chunk
    ts = T0 + np.cumsum(rng.integers(1, 5_000_000, n))
    price = np.round(30_000 + rng.standard_normal(n).cumsum(), 2)
    size = np.round(rng.exponential(0.5, n), 8)
    rows = parse(encode_trades("BTCUSD", ts, price, size))
    assert len(rows) == n
    got = by_time(rows)
    for t, p, s in zip(ts.tolist(), price.tolist(), size.tolist()):
        m, tags, fields = got[t]
        assert (m, tags) == ("trades", {"symbol": "BTCUSD"})
        assert bits(fields["price"]) == bits(p) and bits(fields["size"]) == bits(s)


awkward_floats = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, 5e-324, 2.2250738585072014e-308, 1e-13, 0.1 + 0.2, 1 / 3, 2.0**53, 2.0**53 + 2, 1e22, 1.7976931348623157e308]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(awkward_floats, awkward_floats), min_size=1, max_size=40))
def test_any_finite_float_round_trips(pairs: list[tuple[float, float]]) -> None:
    price = np.array([p for p, _ in pairs])
    size = np.array([s for _, s in pairs])
    ts = T0 + np.arange(len(pairs), dtype=np.int64)
    got = by_time(parse(encode_trades("X", ts, price, size)))
    for i, (p, s) in enumerate(pairs):
        fields = got[T0 + i][2]
        assert bits(fields["price"]) == bits(p), (p, fields["price"])
        assert bits(fields["size"]) == bits(s), (s, fields["size"])


def test_negative_values_and_short_timestamps_round_trip() -> None:
    # not valid trades, but the encoder must not corrupt them (bars tooling reuses it)
    ts = np.array([0, 7, 10**9, 2**62], dtype=np.int64)
    price = np.array([-1.5, -0.0, 1e-300, 3.0])
    rows = by_time(parse(encode_trades("X", ts, price, np.ones(4))))
    assert sorted(rows) == ts.tolist()
    assert [rows[t][2]["price"] for t in ts.tolist()] == [-1.5, 0.0, 1e-300, 3.0]


def test_fixed_point_form_is_used_for_plain_prices() -> None:
    line = encode_trades("X", np.array([T0]), np.array([30_000.5]), np.array([0.00000001])).decode()
    assert line == f"trades,symbol=X price=30000.5,size=0.00000001 {T0}\n"
    line = encode_trades("X", np.array([T0]), np.array([42.0]), np.array([1.0])).decode()
    assert line == f"trades,symbol=X price=42,size=1 {T0}\n"  # no "i": still a float field


# --- escaping -----------------------------------------------------------------------

TRICKY = ["A B", "A,B", "A=B", " lead", "trail ", "a,=, b", "ünï", '"quoted"', "#hash", "a/b:c.d-e"]


@pytest.mark.parametrize("symbol", TRICKY)
def test_tag_values_are_escaped_and_round_trip(symbol: str) -> None:
    rows = parse(encode_trades(symbol, np.array([T0]), np.array([1.0]), np.array([2.0])))
    assert rows[0][1] == {"symbol": symbol}


@pytest.mark.parametrize("symbol", TRICKY)
def test_prefix_matches_influxdb_clients_own_escaping(symbol: str) -> None:
    theirs = Point("trades").tag("symbol", symbol).field("price", 1.0).time(1, "ns").to_line_protocol()
    assert theirs.startswith(series_prefix("trades", [("symbol", symbol)]) + " ")


@pytest.mark.parametrize("measurement", ["bars 1m", "bars,1m", "bars=1m"])
def test_measurement_names_are_escaped(measurement: str) -> None:
    payload = encode_bars(measurement, "S", [60_000], [1.0], [2.0], [0.5], [1.5], [3.0])
    assert parse(payload)[0][0] == measurement


@pytest.mark.parametrize(
    "trade_id", ["plain", 'with "quotes"', "back\\slash", "end\\", '\\"', "comma, space=eq", "ünïcode ✓", ""]
)
def test_id_strings_are_escaped_and_round_trip(trade_id: str) -> None:
    payload = encode_trades("S", np.array([T0, T0 + 1]), np.array([1.0, 2.0]), np.array([3.0, 4.0]), [trade_id, None])
    rows = by_time(parse(payload))
    assert rows[T0][2] == {"price": 1.0, "size": 3.0, "id": trade_id}
    assert rows[T0 + 1][2] == {"price": 2.0, "size": 4.0}


def test_many_ids_with_awkward_floats_take_both_paths() -> None:
    rng = np.random.default_rng(5)
    n = 40_000
    ts = T0 + np.arange(n, dtype=np.int64)
    price = rng.random(n) * 1e6  # mostly 17 significant digits: some need the repr path
    ids = [None if i % 3 == 0 else f'id"{i}\\' for i in range(n)]
    rows = by_time(parse(encode_trades("S", ts, price, price, ids)))
    assert len(rows) == n
    for i in range(0, n, 97):
        fields = rows[T0 + i][2]
        assert bits(fields["price"]) == bits(float(price[i]))
        assert fields.get("id") == ids[i]


def test_escape_string_field_matches_influxdb_client() -> None:
    value = 'a"b\\c d,e=f'
    theirs = Point("m").field("id", value).time(1, "ns").to_line_protocol()
    assert theirs == f"m id={escape_string_field(value)} 1"


@pytest.mark.parametrize(
    ("symbol", "message"),
    [("A\nB", "line break"), ("A\rB", "line break"), ("A\\B", "backslash"), ("", "empty"), ("A\tB", "control")],
)
def test_unrepresentable_symbols_are_rejected(symbol: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_trades(symbol, np.array([T0]), np.array([1.0]), np.array([1.0]))


def test_unrepresentable_values_are_rejected() -> None:
    one = np.array([1.0])
    with pytest.raises(ValueError, match="line break"):
        encode_trades("S", np.array([T0]), one, one, ["a\nb"])
    with pytest.raises(ValueError, match="NaN or infinity"):
        encode_trades("S", np.array([T0]), np.array([math.nan]), one)
    with pytest.raises(ValueError, match="NaN or infinity"):
        encode_trades("S", np.array([T0]), one, np.array([math.inf]))
    with pytest.raises(ValueError, match="before 1970"):
        encode_trades("S", np.array([-1]), one, one)
    with pytest.raises(ValueError, match="comment"):
        encode_trades("S", np.array([T0]), one, one, measurement="#trades")
    with pytest.raises(ValueError, match="one length"):
        encode_trades("S", np.array([T0, T0 + 1]), one, one)


def test_empty_input_encodes_to_nothing() -> None:
    empty = np.array([], dtype=np.float64)
    assert encode_trades("S", np.array([], dtype=np.int64), empty, empty) == b""


def test_bars_write_trade_counts_as_integers() -> None:
    payload = encode_bars(
        "bars_1m", "S", [0, 60_000], [1.0, 2.0], [3.0, 4.0], [0.5, 1.0], [2.5, 3.5], [10.0, 0.25], [7, 1]
    )
    rows = parse(payload)
    merged: dict[int, dict[str, object]] = {}
    for m, tags, fields, ts in rows:
        assert (m, tags) == ("bars_1m", {"symbol": "S"})
        merged.setdefault(ts, {}).update(fields)
    assert merged[60_000_000_000] == {"open": 2.0, "high": 4.0, "low": 1.0, "close": 3.5, "volume": 0.25, "trades": 1}
    assert b"trades=7i 0\n" in payload


# --- timestamps ---------------------------------------------------------------------


def test_unique_ns_keeps_strictly_increasing_input_untouched() -> None:
    ts = np.array([1, 5, 9], dtype=np.int64)
    assert unique_ns(ts) is ts or np.array_equal(unique_ns(ts), ts)


def test_unique_ns_separates_equal_stamps_in_arrival_order() -> None:
    ms = 1_700_000_000_000 * 1_000_000
    ts = np.array([ms, ms, ms + 1, ms, ms + 5, ms - 3], dtype=np.int64)
    out = unique_ns(ts)
    assert len(set(out.tolist())) == len(ts)
    # each stamp only moves forward, and by less than a microsecond here
    assert np.all(out >= ts) and np.all(out - ts < 1_000)
    # equal inputs keep their arrival order
    assert out[0] < out[1] < out[3]
    assert out[5] == ms - 3 and out[4] == ms + 5


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=50), min_size=0, max_size=60))
def test_unique_ns_always_yields_distinct_stamps_that_never_move_back(values: list[int]) -> None:
    ts = np.array(values, dtype=np.int64)
    out = unique_ns(ts)
    assert len(set(out.tolist())) == len(values)
    assert np.all(out >= ts)


def test_two_trades_in_one_millisecond_become_two_points() -> None:
    ms_ns = 1_700_000_000_123 * 1_000_000
    ts = unique_ns(np.array([ms_ns, ms_ns], dtype=np.int64))
    rows = parse(encode_trades("S", ts, np.array([1.0, 2.0]), np.array([1.0, 1.0])))
    assert len({(m, tuple(tags.items()), t) for m, tags, _, t in rows}) == 2


# --- request splitting --------------------------------------------------------------


@pytest.mark.parametrize(("lines", "per"), [(0, 5), (1, 5), (5, 5), (12, 5), (10_001, 5_000)])
def test_split_lines_cuts_at_line_ends(lines: int, per: int) -> None:
    payload = b"".join(b"m f=%d %d\n" % (i, i) for i in range(lines))
    chunks = split_lines(payload, per)
    assert b"".join(chunks) == payload
    assert all(c.endswith(b"\n") and 1 <= c.count(b"\n") <= per for c in chunks)
    assert len(chunks) == -(-lines // per)
