"""How a subscriber turns pushed bars into latency samples (pure)."""

from __future__ import annotations

from array import array

from loadgen.markers import MarkerBook, MarkerCursor
from service.core.resolution import parse_resolution

M1 = parse_resolution("1")
WINDOW = (0.0, 1e9)


def book_with(times_ms, sent):
    book = MarkerBook("BTCUSD", [M1])
    for t, s in zip(times_ms, sent):
        book.add(book.next_price(t), t, s)
    return book


def test_prices_increase_even_within_a_millisecond():
    book = MarkerBook("BTCUSD", [M1])
    assert [book.next_price(5) for _ in range(3)] == [5.0, 6.0, 7.0]


def test_a_bar_resolves_the_markers_it_reflects():
    book = MarkerBook("BTCUSD", [M1])
    cursor = MarkerCursor(book, M1)  # subscribed before any marker
    for t, s in [(60_000, 1.0), (60_010, 1.1), (60_020, 1.2)]:
        book.add(book.next_price(t), t, s)
    samples = array("d")
    # a bar of the first minute whose high is the second marker: two samples
    assert cursor.observe(60_000, book.prices[1], now=1.5, window=WINDOW, samples=samples) == 0
    assert [round(x) for x in samples] == [500, 400]
    # the next minute's bar: the third marker (minute 1) was never shown -> missed
    assert cursor.observe(120_000, 50.0, now=2.0, window=WINDOW, samples=samples) == 1
    assert len(samples) == 2 and cursor.pos == 3


def test_markers_before_subscription_and_outside_window_do_not_count():
    book = book_with([60_000], [1.0])
    cursor = MarkerCursor(book, M1)
    book.add(book.next_price(60_001), 60_001, 2.0)
    book.add(book.next_price(60_002), 60_002, 9.0)
    samples = array("d")
    cursor.observe(60_000, book.prices[-1], now=10.0, window=(0.0, 5.0), samples=samples)
    assert list(samples) == [8000.0]


def test_refused_markers_are_skipped():
    book = book_with([60_000, 60_001], [1.0, 1.1])
    cursor = MarkerCursor(book, M1)
    cursor.pos = 0
    book.refuse(0)
    samples = array("d")
    assert cursor.observe(60_000, book.prices[1], now=2.0, window=WINDOW, samples=samples) == 0
    assert [round(x) for x in samples] == [900]
