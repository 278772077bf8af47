from datetime import UTC, datetime

import pytest

from service.core.errors import InvalidResolution
from service.core.resolution import SUPPORTED, Resolution, Unit, parse_resolution


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    "text, unit, count, canonical",
    [
        ("1S", Unit.SECOND, 1, "1S"),
        ("30S", Unit.SECOND, 30, "30S"),
        ("1", Unit.MINUTE, 1, "1"),
        ("45", Unit.MINUTE, 45, "45"),
        ("720", Unit.MINUTE, 720, "720"),
        ("1D", Unit.DAY, 1, "1D"),
        ("D", Unit.DAY, 1, "1D"),
        ("3D", Unit.DAY, 3, "3D"),
        ("1W", Unit.WEEK, 1, "1W"),
        ("W", Unit.WEEK, 1, "1W"),
        ("1M", Unit.MONTH, 1, "1M"),
        ("M", Unit.MONTH, 1, "1M"),
    ],
)
def test_parse(text, unit, count, canonical):
    res = parse_resolution(text)
    assert (res.unit, res.count, res.text) == (unit, count, canonical)


@pytest.mark.parametrize("text", ["", "0", "2", "7", "1H", "1m", "2S", "1440", "2W", "2M", "d", " 1", "1.5", "-1"])
def test_rejects_unsupported(text):
    with pytest.raises(InvalidResolution) as info:
        parse_resolution(text)
    assert info.value.status == 400 and "supported" in info.value.details


def test_supported_is_the_design_list():
    assert SUPPORTED == (
        "1S",
        "5S",
        "15S",
        "30S",
        "1",
        "3",
        "5",
        "15",
        "30",
        "45",
        "60",
        "120",
        "180",
        "240",
        "360",
        "480",
        "720",
        "1D",
        "3D",
        "1W",
        "1M",
    )


@pytest.mark.parametrize(
    "res, t, start, next_start",
    [
        ("1S", "2024-01-01T00:00:00.999", "2024-01-01T00:00:00", "2024-01-01T00:00:01"),
        ("1", "2024-01-01T00:00:59.999", "2024-01-01T00:00:00", "2024-01-01T00:01:00"),
        ("45", "2024-01-01T01:00:00", "2024-01-01T00:45:00", "2024-01-01T01:30:00"),
        ("240", "2024-03-10T03:59:59", "2024-03-10T00:00:00", "2024-03-10T04:00:00"),
        ("1D", "2024-02-29T23:59:59.999", "2024-02-29T00:00:00", "2024-03-01T00:00:00"),
        ("3D", "1970-01-04T00:00:00", "1970-01-04T00:00:00", "1970-01-07T00:00:00"),
        ("3D", "1970-01-03T23:59:59", "1970-01-01T00:00:00", "1970-01-04T00:00:00"),
        # weeks start on Monday 00:00 UTC
        ("1W", "2024-01-07T23:59:59", "2024-01-01T00:00:00", "2024-01-08T00:00:00"),
        ("1W", "2024-01-08T00:00:00", "2024-01-08T00:00:00", "2024-01-15T00:00:00"),
        ("1W", "1970-01-01T00:00:00", "1969-12-29T00:00:00", "1970-01-05T00:00:00"),
        ("1W", "2024-12-31T12:00:00", "2024-12-30T00:00:00", "2025-01-06T00:00:00"),
        # calendar months, leap years, century rules
        ("1M", "2024-02-29T12:00:00", "2024-02-01T00:00:00", "2024-03-01T00:00:00"),
        ("1M", "2023-02-28T23:59:59.999", "2023-02-01T00:00:00", "2023-03-01T00:00:00"),
        ("1M", "2024-12-31T23:59:59.999", "2024-12-01T00:00:00", "2025-01-01T00:00:00"),
        ("1M", "2000-02-29T00:00:00", "2000-02-01T00:00:00", "2000-03-01T00:00:00"),
        ("1M", "2100-03-01T00:00:00", "2100-03-01T00:00:00", "2100-04-01T00:00:00"),
        ("1M", "1970-01-01T00:00:00", "1970-01-01T00:00:00", "1970-02-01T00:00:00"),
    ],
)
def test_bucket_alignment(res, t, start, next_start):
    r = parse_resolution(res)
    assert r.bucket_start_ms(ms(t)) == ms(start)
    assert r.next_start_ms(ms(start)) == ms(next_start)


def test_epoch_and_exact_edges():
    day = parse_resolution("1D")
    assert day.bucket_start_ms(0) == 0
    assert day.bucket_start_ms(86_400_000 - 1) == 0
    assert day.bucket_start_ms(86_400_000) == 86_400_000


def test_month_starts_agree_with_datetime_for_many_years():
    month = parse_resolution("1M")
    for year in range(1970, 2101):
        for m in range(1, 13):
            start = ms(f"{year:04d}-{m:02d}-01T00:00:00")
            assert month.bucket_start_ms(start) == start
            assert month.bucket_start_ms(start - 1) < start
            assert month.next_start_ms(month.bucket_start_ms(start - 1)) == start


def test_bucket_count():
    assert parse_resolution("1").bucket_count(0, 60_000) == 1
    assert parse_resolution("1").bucket_count(0, 60_001) == 2
    assert parse_resolution("1M").bucket_count(ms("2024-01-15T00:00:00"), ms("2024-03-02T00:00:00")) == 3
    assert parse_resolution("1D").bucket_count(5, 5) == 0


def test_is_multiple_of():
    assert parse_resolution("1W").is_multiple_of(86_400_000)
    assert not parse_resolution("1W").is_multiple_of(7 * 86_400_000)
    assert parse_resolution("1M").is_multiple_of(4 * 3_600_000)
    assert not parse_resolution("180").is_multiple_of(4 * 3_600_000)
    assert Resolution(Unit.MINUTE, 45).is_multiple_of(15 * 60_000)
