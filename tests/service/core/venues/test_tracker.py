"""Gap-free trades from ids alone (service/core/venues/tracker.py): every case the
connectors meet, as tables of offers, REST pages and verdicts."""

from __future__ import annotations

import pytest

from service.core.venues.common import VenueTrade
from service.core.venues.tracker import Hole, Tracker

T0 = 1_700_000_000_000
MINUTE = 60_000


def tr(*ids: int, placeholder: tuple[int, ...] = ()) -> list[VenueTrade]:
    return [VenueTrade(i, T0 + i, 1.0 + i, 0.5, placeholder=i in placeholder) for i in ids]


def ids(trades: list[VenueTrade]) -> list[int]:
    return [t.id for t in trades]


def tracker(last_id: int | None = 100, *, initial_ms: int = 0, max_pending: int = 1000, **kw) -> Tracker:
    return Tracker(
        "binance",
        "BTCUSD",
        "BTCUSDT",
        last_id=last_id,
        last_time_ms=None if last_id is None else T0 + last_id,
        reorder_ms=kw.pop("reorder_ms", 500),
        max_pending=max_pending,
        initial_backfill_ms=initial_ms,
        max_backfill_ms=kw.pop("max_backfill_ms", 3_600_000),
        **kw,
    )


def test_a_contiguous_stream_passes_through_in_order_once():
    t = tracker()
    assert ids(t.offer(tr(101, 102), T0)) == [101, 102]
    assert ids(t.offer(tr(102, 103, 101), T0)) == [103]  # duplicates dropped, new one passed
    assert (t.last_id, t.duplicates, t.need(T0 + MINUTE), t.state) == (103, 2, None, "live")


def test_out_of_order_delivery_within_the_grace_is_not_a_gap():
    t = tracker(reorder_ms=500)
    assert t.offer(tr(102, 104), T0) == []
    assert t.need(T0 + 499) is None  # waiting: the rest may still come
    assert ids(t.offer(tr(103, 101), T0 + 200)) == [101, 102, 103, 104]
    assert t.need(T0 + 10 * MINUTE) is None and t.drain_records() == []


def test_a_long_quiet_market_is_not_a_gap():
    t = tracker()
    t.offer(tr(101), T0)
    assert t.need(T0 + 3 * 86_400_000) is None  # time passes, ids stay contiguous
    assert ids(t.offer(tr(102), T0 + 3 * 86_400_000)) == [102]


def test_a_dropped_message_is_found_after_the_grace_and_backfilled():
    t = tracker(reorder_ms=500)
    t.offer(tr(101), T0)
    assert t.offer(tr(105, 106), T0 + 10) == []
    assert t.need(T0 + 400) is None
    hole = t.need(T0 + 510)
    assert hole == Hole(102, 104, T0 + 101, "id jump")
    assert t.begin(hole, T0 + 510) == hole and t.state == "backfilling"
    out, verdict = t.page(tr(102, 103, 104, 105), exhausted=True, now_ms=T0 + 600)
    assert ids(out) == [102, 103, 104, 105, 106] and verdict == "closed"
    (record,) = t.drain_records()
    assert (record.state, record.from_id, record.to_id, record.trades, record.cause) == (
        "backfilled",
        102,
        104,
        3,
        "id jump",
    )
    assert (record.from_time, record.to_time, record.resolved_at) == (T0 + 101, T0 + 105, T0 + 600)
    assert (t.gaps_found, t.gaps_open, t.backfilled) == (1, 0, 3)


def test_a_reconnect_syncs_from_the_last_id_to_where_the_new_stream_begins():
    t = tracker()
    t.offer(tr(101), T0)
    t.connected("reconnect")
    hole = t.need(T0)
    assert hole == Hole(102, None, T0 + 101, "reconnect")
    t.begin(hole, T0)
    assert t.offer(tr(110, 111), T0 + 5) == []  # the new stream: buffered behind the hole
    out, verdict = t.page(tr(*range(102, 113)), exhausted=True, now_ms=T0 + 20)
    assert ids(out) == list(range(102, 113)) and verdict == "closed"
    (record,) = t.drain_records()
    assert (record.from_id, record.to_id, record.trades, record.cause) == (102, 109, 8, "reconnect")
    assert t.backfilled == 9  # 102..109 missing, and 112 that REST had before the stream did


def test_a_sync_that_finds_nothing_missing_leaves_no_record():
    t = tracker()
    t.connected("reconnect")
    t.begin(t.need(T0), T0)
    assert ids(t.offer(tr(101, 102), T0)) == [101, 102]  # the stream continues where it was
    out, verdict = t.page(tr(101, 102), exhausted=True, now_ms=T0)
    assert out == [] and verdict == "closed" and t.drain_records() == [] and t.gaps_found == 0
    quiet = tracker()
    quiet.connected("restart")
    quiet.begin(quiet.need(T0), T0)
    assert quiet.page([], exhausted=True, now_ms=T0) == ([], "closed")  # nothing traded meanwhile
    assert quiet.drain_records() == []


def test_a_planned_overlap_delivers_duplicates_and_closes_at_once():
    t = tracker()
    t.offer(tr(101, 102, 103), T0)
    t.connected("planned")
    t.begin(t.need(T0), T0)
    assert ids(t.offer(tr(102, 103, 104), T0)) == [104]  # the new socket starts behind: duplicates
    out, verdict = t.page(tr(104), exhausted=True, now_ms=T0)
    assert verdict == "closed" and out == [] and t.drain_records() == []


def test_rest_that_lags_the_stream_is_asked_again():
    t = tracker(reorder_ms=0)
    t.offer(tr(101, 105), T0)
    t.begin(t.need(T0), T0)
    out, verdict = t.page(tr(102), exhausted=True, now_ms=T0)
    assert ids(out) == [102] and verdict == "wait"  # 103, 104 not in REST yet
    out, verdict = t.page(tr(103, 104), exhausted=True, now_ms=T0 + 1000)
    assert ids(out) == [103, 104, 105] and verdict == "closed"


def test_a_hole_rest_cannot_fill_is_left_open_and_the_stream_goes_on():
    t = tracker(reorder_ms=0)
    t.offer(tr(101, 110, 111), T0)
    t.begin(t.need(T0), T0)
    out, verdict = t.page(tr(102, 103), exhausted=True, now_ms=T0)
    assert verdict == "wait"
    out = t.leave_open("Binance answered 418 (banned)", T0 + 60_000)
    assert ids(out) == [110, 111] and t.last_id == 111 and t.state == "live"
    (record,) = t.drain_records()
    assert (record.state, record.from_id, record.to_id, record.reason) == (
        "open",
        104,
        109,
        "Binance answered 418 (banned)",
    )
    assert (record.trades, record.to_time) == (2, T0 + 110)  # what REST did fill before it gave up
    assert (t.gaps_found, t.gaps_open) == (1, 1)


def test_a_failed_sync_waits_for_the_next_trade_to_know_the_gap():
    contiguous = tracker()
    contiguous.connected("reconnect")
    contiguous.begin(contiguous.need(T0), T0)
    assert contiguous.leave_open("REST unreachable", T0) == []
    assert ids(contiguous.offer(tr(101), T0)) == [101] and contiguous.drain_records() == []
    jumped = tracker()
    jumped.connected("reconnect")
    jumped.begin(jumped.need(T0), T0)
    jumped.leave_open("REST unreachable", T0)
    assert ids(jumped.offer(tr(150, 151), T0 + 5)) == [150, 151]
    (record,) = jumped.drain_records()
    assert (record.state, record.from_id, record.to_id, record.to_time, record.reason) == (
        "open",
        101,
        149,
        T0 + 150,
        "REST unreachable",
    )


def test_a_hole_older_than_the_backfill_limit_is_opened_and_history_fetched_by_time():
    t = tracker(max_backfill_ms=MINUTE)
    now = T0 + 10 * MINUTE
    t.connected("restart")
    hole = t.begin(t.need(now), now)
    assert hole == Hole(None, None, now - MINUTE, "restart")
    t.offer(tr(900), now)  # the stream: waits, the fetch by time decides where ids resume
    out, verdict = t.page(tr(*range(800, 901)), exhausted=True, now_ms=now)
    assert ids(out) == list(range(800, 901)) and verdict == "closed"
    (record,) = t.drain_records()
    assert (record.state, record.from_id, record.to_id) == ("open", 101, 799)
    assert "TVFLUX_SOURCE_MAX_BACKFILL_S" in record.reason


def test_a_fresh_symbol_fetches_its_history_by_time_then_follows_the_stream():
    t = tracker(None, initial_ms=MINUTE, floor_time_ms=T0 + 5)
    t.connected("start")
    hole = t.need(T0 + 30_000)
    assert hole == Hole(None, None, T0 + 6, "start")  # after what is stored, within the minute
    t.begin(hole, T0 + 30_000)
    assert t.offer(tr(60, 61), T0 + 30_000) == [] and t.state == "backfilling"
    out, verdict = t.page(tr(50, 51, 52), exhausted=False, now_ms=T0 + 30_000)
    assert ids(out) == [50, 51, 52] and verdict == "more"
    out, verdict = t.page(tr(*range(53, 62)), exhausted=True, now_ms=T0 + 30_000)
    assert ids(out) == list(range(53, 62)) and verdict == "closed"
    assert t.drain_records() == [] and t.backfilled == 10


def test_history_by_time_that_finds_nothing_hands_over_to_the_stream():
    t = tracker(None, initial_ms=MINUTE)
    t.connected("start")
    t.begin(t.need(T0), T0)
    t.offer(tr(70), T0)
    assert t.page([], exhausted=False, now_ms=T0) == ([], "more")  # an empty window: more to come
    out, verdict = t.page([], exhausted=True, now_ms=T0 + 100)
    assert out == [] and verdict == "closed"  # the stream's first trade waits its reorder grace
    assert t.offer(tr(69), T0 + 200) == []  # ... for an older one delivered late
    assert ids(t.release(T0 + 500)) == [69, 70] and t.drain_records() == []
    failed = tracker(None, initial_ms=MINUTE)
    failed.connected("start")
    failed.begin(failed.need(T0), T0)
    failed.offer(tr(80), T0)
    assert ids(failed.leave_open("REST unreachable", T0 + 500)) == [80] and failed.drain_records() == []


def test_without_history_the_first_trade_starts_the_sequence():
    t = tracker(None)
    t.connected("start")
    assert t.need(T0) is None
    assert t.offer(tr(43, 44), T0) == [] and t.release(T0 + 499) == []  # out-of-order delivery may follow
    assert t.offer(tr(42), T0 + 100) == []
    assert ids(t.release(T0 + 500)) == [42, 43, 44]
    assert ids(t.offer(tr(45), T0 + 600)) == [45] and t.duplicates == 0 and t.drain_records() == []


def test_placeholders_hold_their_ids_but_are_not_passed_on():
    t = tracker()
    out = t.offer(tr(101, 102, 103, placeholder=(102,)), T0)
    assert ids(out) == [101, 103] and t.last_id == 103 and t.need(T0 + MINUTE) is None


def test_pending_is_bounded_and_what_was_dropped_is_fetched_later():
    t = tracker(max_pending=3, reorder_ms=0)
    t.offer(tr(105, 106, 107, 108, 109), T0)
    assert sorted(t.pending) == [105, 106, 107] and t.dropped == 2
    t.begin(t.need(T0), T0)
    out, verdict = t.page(tr(101, 102, 103, 104), exhausted=True, now_ms=T0)
    assert ids(out) == [101, 102, 103, 104, 105, 106, 107] and verdict == "closed"
    assert t.need(T0) is None  # 108, 109 were dropped: the next REST sync or id jump finds them


@pytest.mark.parametrize("cause", ["restart", "reconnect", "stall", "planned"])
def test_every_connection_asks_for_a_sync_naming_its_cause(cause):
    t = tracker()
    t.connected(cause)
    assert t.need(T0) == Hole(101, None, T0 + 100, cause)
