"""Pre-encoded trade frames decode, with the server's own decoders, to the trades meant."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from loadgen.frames import FrameEncoder, TradePool, fixed_width_decimal, msgpack_array_header
from service.core.models import Trade

SYMBOLS = ("BTCUSD", "ETHUSD", "X")


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
@pytest.mark.parametrize("per_symbol", [1, 5, 6000])
def test_frames_round_trip(fmt, per_symbol):
    pool = TradePool(SYMBOLS, size=1 << 14)
    enc = FrameEncoder(SYMBOLS, fmt)
    blocks = [(s, *pool.take(s, per_symbol), 1_735_689_600_123 + i) for i, s in enumerate(SYMBOLS)]
    frame = enc.encode(blocks)
    decoder = msgspec.msgpack.Decoder(list[Trade]) if fmt == "msgpack" else msgspec.json.Decoder(list[Trade])
    trades = decoder.decode(frame)
    assert len(trades) == per_symbol * len(SYMBOLS)
    i = 0
    for symbol, price, size, time_ms in blocks:
        for k in range(per_symbol):
            t = trades[i]
            assert (t.symbol, t.time) == (symbol, time_ms)
            # msgpack carries the float64 itself; JSON the value rounded to the field's decimals
            assert t.price == (price[k] if fmt == "msgpack" else round(price[k], 2))
            assert t.size == pytest.approx(size[k], abs=5e-7)
            i += 1


def test_marker_sized_prices_fit():
    enc = FrameEncoder(("BTCUSD",), "json")
    frame = enc.encode([("BTCUSD", np.array([1_763_711_000_123.0]), np.array([0.001]), 1_763_711_000_123)])
    assert msgspec.json.decode(frame) == [
        {"symbol": "BTCUSD", "price": 1_763_711_000_123.0, "size": 0.001, "time": 1_763_711_000_123}
    ]


def test_fixed_width_decimal():
    out = fixed_width_decimal(np.array([0.0, 1.5, 123.456]), 4, 2)
    assert [bytes(row).decode() for row in out] == ["   0.00", "   1.50", " 123.46"]
    with pytest.raises(ValueError):
        fixed_width_decimal(np.array([10_000.0]), 4, 2)


def test_msgpack_array_headers():
    for n in (0, 15, 16, 65535, 65536):
        assert msgspec.msgpack.decode(msgpack_array_header(n) + b"\xc0" * n) == [None] * n
