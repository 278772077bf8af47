"""A task run too big for the server's query memory fails cleanly and is retried smaller.

A real influxd of its own, with a query memory limit (4 MiB per query) far below what the
first run's budget needs: the runs that exceed it fail inside InfluxDB, the next run
(once the failed run's lease expires) halves the budget, and the tiers still end up equal
to an independent aggregation of the trades. Then the server is restarted with the
deployment's usual bounds, to read the failed runs' logs (listing runs is itself a query).
"""

from __future__ import annotations

import time

import pytest

from bench.influxd import Influxd
from service.core.settings import load_settings
from service.storage.influx import flux_render as fr
from service.storage.influx.store import InfluxStore
from tests.service.storage.influx.test_real_server import (
    DAY_MS,
    MINUTE_MS,
    PLAN,
    SYMBOLS,
    _bars_by_tier,
    _caught,
    assert_tiers_match_reference,
    deployment_env,
    make_store,
    market,
    status_points,
    tvflux,
    until,
)

RUN_ROWS = 200_000  # a run's first budget: all ~210k trades but for the last, over the limit below
TIGHT = ["--query-memory-bytes", "4194304", "--query-initial-memory-bytes", "1048576"]


@pytest.fixture
def tight_server(influx_server, tmp_path):
    server = Influxd(influx_server.binary, tmp_path / "influxd", TIGHT).start()
    yield server
    server.stop()


@pytest.mark.timeout(240)
async def test_a_run_over_the_query_memory_limit_is_retried_smaller(tight_server):
    env = deployment_env(tight_server, "budget") | {"TVFLUX_DOWNSAMPLE_RUN_ROWS": str(RUN_ROWS)}
    data_end_ms = time.time_ns() // 1_000_000 // MINUTE_MS * MINUTE_MS - 2 * MINUTE_MS
    trades = market(8, data_end_ms, rate=0.3)
    # the trades in first (buckets, and tasks for manual runs only: none runs meanwhile), so
    # the first scheduled run sees them all and its window holds more than the limit allows
    settings = load_settings(env)
    loader = InfluxStore(settings, settings.plan, schedule_tasks=False)
    await loader.start()
    try:
        await loader.append(trades)
    finally:
        await loader.close()
    # a lease of seconds, not the default minute, so each retry comes soon; still longer than
    # any run takes on a busy machine (a run still going when its lease ends counts as failed)
    done = tvflux(env, "influx", "setup", "--task-every-s", "1", "--lease-s", "6")
    assert done.returncode == 0, done.stderr
    store = make_store(env)
    await store.start()
    try:
        await until(lambda: _caught(store, data_end_ms), 150, "the tiers to catch up despite the memory limit")
        budgets = dict((await status_points(store, fr.LEASE, "budget_rows"))["1m"])
        failed = dict((await status_points(store, fr.LEASE, "failed_rows")).get("1m", []))
    finally:
        await store.close()
    # The first run had the whole budget, and failed. Each lease point holds its run's budget
    # and, when the run before it never released its lease, that run's budget (a failure).
    # Runs of one scheduler tick can both find the lease free (docs/influxdb.md), so compare
    # each point with the sizes recorded before it, not with its neighbour alone.
    times = sorted(budgets)
    assert budgets[times[0]] == RUN_ROWS and failed and min(failed) > times[0], (budgets, failed)
    assert failed[min(failed)] == RUN_ROWS, (budgets, failed)
    for t in times:
        earlier = [budgets[u] for u in times if u < t]
        if t in failed:  # half of the budget of a run before it that failed
            assert failed[t] in earlier and budgets[t] == failed[t] // 2, (budgets, failed)
        elif any(f < t for f in failed):  # never doubled back into a size that failed
            newest_failure = failed[max(f for f in failed if f < t)]
            assert budgets[t] <= newest_failure // 2, (budgets, failed)

    # read the answer and the runs with the usual bounds (listing runs is itself a query)
    tight_server.stop()
    tight_server.extra_args = []
    tight_server.start()
    store = make_store(env)
    await store.start()
    try:
        hi = data_end_ms // DAY_MS * DAY_MS
        lo = (data_end_ms - 8 * DAY_MS) // DAY_MS * DAY_MS + DAY_MS
        for symbol in SYMBOLS:
            assert_tiers_match_reference(await _bars_by_tier(store, symbol, lo, hi), trades, symbol, lo, hi)
        runs_by_tier = await store.task_runs(limit=100)
        logs = [" ".join(r.log) for r in runs_by_tier["1m"] if r.status == "failed"]
        # every size recorded as failed failed in a run, and for InfluxDB's memory limit
        assert len(logs) >= len(set(failed.values())), (logs, failed)
        assert all("memory allocation limit reached" in log for log in logs), logs
        assert not [r for tier in PLAN.tiers[1:] for r in runs_by_tier[tier.name] if r.status == "failed"]
    finally:
        await store.destroy()
