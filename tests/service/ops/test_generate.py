"""``tvflux generate`` run again and again on one data dir, as the issue tried it: generated
history never overlaps stored trades, for any ``--days``/``--end-ms``, and joins the stored
prices on either side of what it writes (no cliff at a seam)."""

from __future__ import annotations

import time
from collections import Counter

import duckdb

from tests.service.ops.test_cli import END_MS, run

DAY_MS = 86_400_000


def trades(data_dir, symbol="BTCUSD"):
    with duckdb.connect(str(data_dir / "tvflux.duckdb"), read_only=True) as db:
        rows = db.execute("SELECT ts_ns // 1000000, price FROM trades WHERE symbol = ? ORDER BY ts_ns", [symbol])
        return rows.fetchall()


def generate(data_dir, *args):
    out = run(["generate", "--trades", "20000", *args], data_dir)
    assert out.returncode == 0, out.stderr
    return out


def count_in(rows, lo, hi):
    return sum(1 for t, _ in rows if lo <= t <= hi)


def seam_jump(rows, at_ms):
    """Relative price change between the last trade before ``at_ms`` and the first at or after."""
    before = [p for t, p in rows if t < at_ms][-1]
    after = next(p for t, p in rows if t >= at_ms)
    return abs(after / before - 1)


def test_days_1_then_2_then_2_never_overlaps_and_joins_the_prices(tmp_path):
    generate(tmp_path, "--days", "1")
    spans = []
    for days in ("2", "2", "0.5"):
        before = trades(tmp_path)
        first, last = before[0][0], before[-1][0]
        out = generate(tmp_path, "--days", days)
        after = trades(tmp_path)
        assert count_in(after, first, last) == len(before)  # nothing written among the stored trades
        new = [t for t, _ in after if t < first]
        assert len(new) == len(after) - len(before) and new, days
        assert first - new[0] > 0.9 * float(days) * DAY_MS  # the whole span, right before them
        assert seam_jump(after, first) < 0.005, days  # a walk that arrives at the stored price
        assert "writing the" in out.stderr and "joins the stored prices" in out.stderr, out.stderr
        spans.append((new[0], first))
    for (lo, _), (_, hi) in zip(spans, spans[1:], strict=False):
        assert hi <= lo  # each span before the one written before it


def test_an_explicit_end_fills_a_gap_exactly_and_refuses_stored_trades(tmp_path):
    generate(tmp_path, "--days", "1", "--end-ms", str(END_MS))
    generate(tmp_path, "--days", "1", "--end-ms", str(END_MS - 2 * DAY_MS), "--seed", "9")
    before = trades(tmp_path)

    over = run(["generate", "--days", "1.5", "--trades", "1000", "--end-ms", str(END_MS - DAY_MS // 2)], tmp_path)
    assert over.returncode == 2 and "refusing" in over.stderr, over.stderr
    suggested = int(over.stderr.split("--end-ms ")[1].split(";")[0])
    assert END_MS - 3 * DAY_MS <= suggested < END_MS - 3 * DAY_MS + 600_000  # before all, where free
    assert trades(tmp_path) == before

    out = generate(tmp_path, "--days", "1", "--end-ms", str(END_MS - DAY_MS))  # the day between them
    assert "from " in out.stderr and " to " in out.stderr, out.stderr
    after = trades(tmp_path)
    assert len(after) > len(before)
    assert count_in(after, END_MS - 3 * DAY_MS, END_MS - 2 * DAY_MS - 1) == count_in(
        before, END_MS - 3 * DAY_MS, END_MS - 2 * DAY_MS - 1
    )
    assert seam_jump(after, END_MS - 2 * DAY_MS) < 0.005  # starts at the left neighbour's price
    assert seam_jump(after, END_MS - DAY_MS) < 0.005  # and arrives at the right one's


def test_through_the_running_service_too(server_factory, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    server = server_factory(str(data), synthetic_rate="0", synthetic_backfill_s="0")
    env = {"TVFLUX_PORT": "1", "TVFLUX_LOG_LEVEL": "WARNING"}  # the service is found through service.json
    seams = []
    for days, n in (("1", "6000"), ("2", "12000"), ("2", "12000")):  # one density throughout
        out = run(["generate", "--days", days, "--trades", n], data, **env)
        assert out.returncode == 0 and "through the service" in out.stderr, out.stderr
        seams += [int(x.split(")")[0]) for x in out.stderr.split("(--end-ms ")[1:]]
    over = run(["generate", "--days", "1", "--trades", "100", "--end-ms", str(int(time.time() * 1000))], data, **env)
    assert over.returncode == 2 and "refusing" in over.stderr, over.stderr
    server.stop()

    rows = trades(data)
    times = [t for t, _ in rows]
    assert times[-1] - times[0] > 4.9 * DAY_MS  # three spans back to back
    per_hour = Counter(t // 3_600_000 for t in times)
    typical = sorted(per_hour.values())[len(per_hour) // 2]
    assert max(per_hour.values()) < 1.6 * typical  # no hour holds two walks
    assert len(seams) == 2
    for at in seams:
        assert seam_jump(rows, at) < 0.005, at
