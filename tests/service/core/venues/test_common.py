"""Exact numbers and times from the venues' texts (service/core/venues/common.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from service.core.errors import VenueProtocolError
from service.core.sources import parse_sources
from service.core.venues.common import Instrument, decimal_value, decimals, epoch_ms, make_trade, rfc3339_ms


@pytest.mark.parametrize(
    "text, value",
    [
        ("0.35280000", 0.3528),
        ("0.1", 0.1),  # the float nearest to 1/10, exactly what float("0.1") is
        ("0.00000638", 6.38e-06),
        ("67123.45000000", 67123.45),
        ("100", 100.0),
        ("0", 0.0),
        (Decimal("0.5117"), 0.5117),
        (Decimal("40.0"), 40.0),
    ],
)
def test_decimal_values_are_the_nearest_float(text, value):
    assert decimal_value(text, "price") == value


@pytest.mark.parametrize("text", ["", "-1", "1e5", "nan", "inf", " 1", "0x10", "1.", ".5", "1,5"])
def test_anything_but_a_plain_decimal_is_refused(text):
    with pytest.raises(VenueProtocolError, match="price"):
        decimal_value(text, "price")


@pytest.mark.parametrize("value", [Decimal("-0.5"), Decimal("NaN"), Decimal("Infinity")])
def test_non_finite_or_negative_decimals_are_refused(value):
    with pytest.raises(VenueProtocolError):
        decimal_value(value, "size")


@pytest.mark.parametrize(
    "text, n", [("0.01000000", 2), ("0.00000001", 8), ("1.00000000", 0), ("1", 0), ("0.5", 1), ("10", 0), ("1e-8", 8)]
)
def test_decimals_of_an_increment(text, n):
    assert decimals(text) == n


@pytest.mark.parametrize("text", ["0", "-0.01", "x"])
def test_an_increment_must_be_a_positive_number(text):
    with pytest.raises(VenueProtocolError):
        decimals(text)


def test_instrument_gives_tradingview_scale_and_precision():
    btc = Instrument("BTCUSDT", "BTCUSDT", "0.01000000", "0.00001000")
    assert (btc.pricescale, btc.minmov, btc.volume_precision) == (100, 1, 5)
    half = Instrument("X", "X", "0.5", "1")
    assert (half.pricescale, half.minmov, half.volume_precision) == (10, 5, 0)


@pytest.mark.parametrize(
    "value, ms",
    [
        (1633998523963, 1633998523963),  # ms (Binance's default)
        (1633998523963123, 1633998523963),  # µs (timeUnit=MICROSECOND): floored
        (1633998523963999, 1633998523963),
        (1633998523963123456, 1633998523963),  # ns
        (0, 0),
    ],
)
def test_epoch_ms_tells_units_apart_by_magnitude(value, ms):
    assert epoch_ms(value) == ms


@pytest.mark.parametrize(
    "text",
    [
        "2023-09-25T07:49:37.708706Z",
        "2023-09-25T07:49:37.708Z",
        "2023-09-25T07:49:37.70870612Z",
        "2023-09-25T07:49:37.708999999Z",
        "2023-09-25T09:49:37.708706+02:00",
        "2023-09-25T07:49:37.7087Z",
        "2023-09-25 07:49:37.708706+00:00",
    ],
)
def test_rfc3339_to_epoch_ms_floors_any_fraction(text):
    want = int(datetime(2023, 9, 25, 7, 49, 37, tzinfo=UTC).timestamp()) * 1000 + 708
    assert rfc3339_ms(text) == want


def test_rfc3339_without_fraction_and_across_a_leap_day():
    assert rfc3339_ms("2024-02-29T00:00:00Z") == int(datetime(2024, 2, 29, tzinfo=UTC).timestamp()) * 1000
    assert rfc3339_ms("2024-03-01T00:30:00+01:00") == int(datetime(2024, 2, 29, 23, 30, tzinfo=UTC).timestamp()) * 1000


@pytest.mark.parametrize("text", ["2023-02-30T00:00:00Z", "yesterday", "2023-09-25T07:49:37", "1695628177708"])
def test_bad_times_are_refused(text):
    with pytest.raises(VenueProtocolError):
        rfc3339_ms(text)


def test_zero_price_or_size_is_a_placeholder():
    assert make_trade(1, 5, "0.00000000", "1.0").placeholder
    assert make_trade(1, 5, "1.0", "0").placeholder
    assert not make_trade(1, 5, "1.0", "1.0").placeholder


def test_sources_setting_is_parsed_and_every_problem_reported():
    specs, problems = parse_sources(("binance:btcusdt=BTCUSD", "kraken:BTC/USD=BTCUSD.KRK", "coinbase:BTC-USD=CB"))
    assert problems == []
    assert [(s.venue, s.venue_symbol, s.symbol) for s in specs] == [
        ("binance", "BTCUSDT", "BTCUSD"),
        ("kraken", "BTC/USD", "BTCUSD.KRK"),
        ("coinbase", "BTC-USD", "CB"),
    ]
    _, problems = parse_sources(
        (
            "binance:BTCUSDT",
            "bitstamp:BTCUSD=X",
            "binance:BTC USDT=Y",
            "binance:ETHUSDT=bad symbol",
            "binance:BTCUSDT=A",
            "kraken:BTC/USD=A",
            "binance:BTCUSDT=B",
        )
    )
    assert len(problems) == 6, problems
    assert "expected venue:VENUE_SYMBOL=SYMBOL" in problems[0]
    assert "unknown venue 'bitstamp'" in problems[1]
    assert "not a binance symbol" in problems[2]
    assert "not a valid tvflux symbol" in problems[3]
    assert "A is already fed by binance:BTCUSDT" in problems[4]
    assert "binance:BTCUSDT is listed twice" in problems[5]
