"""The /admin dashboard (frontend/admin.html + admin.js) against the real service."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from tests.frontend.helpers import open_chart, wait_until

ISO = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z$")


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def cell(page: Any, tier: str, column: int) -> str:
    return page.locator(f"#tiers tbody tr[data-tier='{tier}'] td").nth(column).inner_text()


def test_admin_shows_tiers_stats_and_runs_downsampling(new_page, fe_server, seeded, http):
    # A chart in another tab, so there is a WebSocket client to count.
    chart = new_page()
    open_chart(chart, fe_server)

    page = new_page()
    page.goto(fe_server.base_url + "/admin")
    page.wait_for_function("() => window.__tvfluxAdmin && __tvfluxAdmin.polls >= 1")

    expected = [t["tier"] for t in http.get("/api/downsampling").json()["tiers"]]
    assert expected[:2] == ["1m", "5m"]
    assert [r.get_attribute("data-tier") for r in page.locator("#tiers tbody tr").all()] == expected

    # The seed is hours old, so the 1m tier gets a watermark within a few runs; the page
    # shows it as an ISO time, identical to what the API said on that poll.
    page.wait_for_function("() => { const t = __tvfluxAdmin.lastTiers.tiers[0]; return t.watermark !== null && t.lastRun !== null; }", timeout=20_000)
    wm = page.evaluate("__tvfluxAdmin.lastTiers.tiers[0].watermark")
    page.wait_for_function("v => document.querySelector(\"#tiers tr[data-tier='1m'] td:nth-child(3)\").textContent === v", arg=iso(wm))
    assert ISO.match(cell(page, "1m", 4)), cell(page, "1m", 4)  # last run
    assert re.match(r"^[\d.,]+ (ms|s)$", cell(page, "1m", 5)), cell(page, "1m", 5)  # duration
    assert cell(page, "1m", 0) == "1m" and cell(page, "1m", 1) == "trades"

    # Service figures.
    page.wait_for_function("() => /^\\d+(\\.\\d)?\\/s$/.test(document.getElementById('ingest-rate').textContent)")
    page.wait_for_function("() => Number(document.getElementById('ws-clients').textContent) >= 1", timeout=10_000)
    assert page.locator("#store-health").inner_text() == "healthy"
    assert page.locator("#store-kind").inner_text() == "Store (duckdb)"
    assert not page.is_visible("#banner")

    # It keeps refreshing on its own.
    polls = page.evaluate("__tvfluxAdmin.polls")
    page.wait_for_function("n => __tvfluxAdmin.polls >= n + 2", arg=polls, timeout=10_000)

    # The button really POSTs a run and reports what the server ran.
    with page.expect_response(lambda r: "/api/downsampling/run?" in r.url and r.request.method == "POST") as info:
        page.click("#run-now")
    response = info.value
    assert response.status == 200
    body = response.json()
    page.wait_for_function("() => __tvfluxAdmin.runs === 1 && !document.getElementById('run-now').disabled")
    text = page.locator("#run-result").inner_text()
    if body["ran"]:
        assert text.startswith("Ran ")
        for r in body["ran"]:
            assert r["tier"] in text
    else:
        assert text.startswith("Nothing to do")
    assert [r.get_attribute("data-tier") for r in page.locator("#tiers tbody tr").all()] == [t["tier"] for t in body["tiers"]]


def test_admin_says_when_the_service_is_unreachable(page, fe_server, seeded, console):
    console.allow(r"ERR_CONNECTION_REFUSED|Failed to load resource")
    page.goto(fe_server.base_url + "/admin")
    page.wait_for_function("() => window.__tvfluxAdmin && __tvfluxAdmin.polls >= 1")
    rows = page.locator("#tiers tbody tr").count()
    fe_server.stop()
    try:
        page.wait_for_function("() => !document.getElementById('banner').hidden", timeout=10_000)
        assert "Cannot reach the service" in page.locator("#banner").inner_text()
        # The last known figures stay on screen.
        assert page.locator("#tiers tbody tr").count() == rows
    finally:
        fe_server.start()
    page.wait_for_function("() => document.getElementById('banner').hidden", timeout=15_000)
    wait_until(lambda: page.locator("#store-health").inner_text() == "healthy", timeout_s=5, what="healthy store after restart")


def test_admin_asks_for_the_token_when_the_server_requires_one(new_page, server_factory, console):
    server = server_factory(admin_token="s3cret-admin", synthetic_rate="0")
    console.allow(r"status of 401 .*/api/downsampling/run")
    page = new_page()
    page.goto(server.base_url + "/admin")
    page.wait_for_function("() => window.__tvfluxAdmin && __tvfluxAdmin.polls >= 1")
    assert not page.is_visible("#token-form")

    page.click("#run-now")
    page.wait_for_selector("#token-form", state="visible")
    assert "needs the admin token" in page.locator("#run-result").inner_text()

    page.fill("#admin-token", "wrong")
    with page.expect_response("**/api/downsampling/run?*") as info:
        page.click("#token-form button[type=submit]")
    assert info.value.status == 401
    page.wait_for_function("() => document.getElementById('run-result').textContent.includes('not accepted')")
    assert page.evaluate("__tvfluxAdmin.runs") == 0

    page.fill("#admin-token", "s3cret-admin")
    with page.expect_response("**/api/downsampling/run?*") as info:
        page.click("#token-form button[type=submit]")
    assert info.value.status == 200
    assert info.value.request.headers["authorization"] == "Bearer s3cret-admin"
    page.wait_for_function("() => __tvfluxAdmin.runs === 1")
    assert not page.is_visible("#token-form")
    # Remembered for this browser session only, never in localStorage.
    assert page.evaluate("sessionStorage.getItem('tvflux.adminToken')") == "s3cret-admin"
    assert page.evaluate("localStorage.getItem('tvflux.adminToken')") is None
    with page.expect_response("**/api/downsampling/run?*") as info:
        page.click("#run-now")
    assert info.value.status == 200


def test_admin_shows_totals_next_to_since_start_and_each_tiers_recent_runs(page, fe_server, seeded, http):
    page.goto(fe_server.base_url + "/admin")
    page.wait_for_function("() => window.__tvfluxAdmin && __tvfluxAdmin.polls >= 1")
    # since-start counters are labelled so, with what the store holds next to them
    assert page.locator("text=Trades accepted since start").count() == 1
    page.wait_for_function("() => /in the store$/.test(document.getElementById('trades-in-store').textContent)")
    # one read of both, so a poll in between cannot split them
    stats, text = page.evaluate("[__tvfluxAdmin.lastStats, document.getElementById('trades-in-store').textContent]")
    # the store holds the seed too (trades accepted but not yet written are in flight, so
    # no order between the two counters is asserted)
    assert stats["storeTrades"] > 0
    assert int(text.split()[0].replace(",", "")) == stats["storeTrades"]
    assert page.locator("#bars-in-store").inner_text().endswith("bars in the store's tiers")

    # every tier's recent runs: time, window, rows, duration, error
    # (the log is the process's: after a restart,) a late trade makes the next scheduled
    # run rebuild its windows, so there is a run to list
    late = int(datetime.now(timezone.utc).timestamp() * 1000) - 2 * 3_600_000
    fe_server.post_trades([{"symbol": "BTCUSD", "price": 60_000.0, "size": 0.1, "time": late}])
    # a run now, rather than waiting for the schedule to list one (up to a minute: the 1m
    # tier's edge moves once a minute); the run log lists manual and scheduled runs alike
    assert fe_server.post("/api/downsampling/run?wait=600")[0] == 200
    page.wait_for_function("() => (__tvfluxAdmin.lastTiers.tiers[0].recentRuns || []).length > 0", timeout=20_000)
    tiers = [t["tier"] for t in page.evaluate("__tvfluxAdmin.lastTiers.tiers")]
    assert [d.get_attribute("data-tier") for d in page.locator("#runs details").all()] == tiers
    page.click("#runs details[data-tier='1m'] summary")
    first = page.locator("#runs details[data-tier='1m'] tbody tr").first.locator("td")
    assert ISO.match(first.nth(0).inner_text())
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ → \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$", first.nth(1).inner_text())
    assert re.match(r"^[\d,]+$", first.nth(2).inner_text()) and re.match(r"^[\d.,]+ (ms|s)$", first.nth(3).inner_text())
    polls = page.evaluate("__tvfluxAdmin.polls")
    page.wait_for_function("n => __tvfluxAdmin.polls >= n + 1", arg=polls, timeout=10_000)
    assert page.locator("#runs details[data-tier='1m']").get_attribute("open") is not None  # stays open
    assert cell(page, "1m", 8) in ("at the edge",) or "%" in cell(page, "1m", 8)


def test_admin_shows_a_backfills_progress_and_expected_finish(page, fe_server, seeded, http):
    real = http.get("/api/downsampling").json()
    now = int(datetime.now(timezone.utc).timestamp() * 1000)
    tiers = [dict(t, backfill=None) for t in real["tiers"]]
    tiers[0]["backfill"] = {"progress": 0.42, "fromMs": now - 300 * 86_400_000, "toMs": now,
                            "rangePerS": 3 * 86_400_000, "expectedFinish": now + 200_000}
    tiers[1]["backfill"] = {"progress": 0.1, "fromMs": now - 300 * 86_400_000, "toMs": now,
                            "rangePerS": None, "expectedFinish": None}
    page.route("**/api/downsampling", lambda route: route.fulfill(json={"tiers": tiers}))
    page.goto(fe_server.base_url + "/admin")
    page.wait_for_function("() => window.__tvfluxAdmin && __tvfluxAdmin.polls >= 1")
    text = cell(page, "1m", 8)
    assert re.match(r"^42\.0 % · 3 m \d+ s left \(about \d\d:\d\d:\d\dZ\)$", text), text
    assert cell(page, "5m", 8) == "10.0 % · measuring rate…"
    assert cell(page, "15m", 8) == "at the edge"


def test_admin_figures_are_true_from_the_first_poll(page, fe_server, seeded, http):
    # a correction made before the page opens is listed at once, not "none yet" for 10 s
    gone = int(datetime.now(timezone.utc).timestamp() * 1000) - 90 * 86_400_000
    assert fe_server.request("DELETE", f"/api/trades?symbol=ETHUSD&from={gone}&to={gone + 1000}")[0] == 200
    page.goto(fe_server.base_url + "/admin")
    page.wait_for_function("() => window.__tvfluxAdmin && __tvfluxAdmin.auditLoads >= 1", timeout=4_000)
    assert page.evaluate("__tvfluxAdmin.polls") <= 2
    audit = page.locator("#audit-rows").inner_text()
    assert "none yet" not in audit and "loading" not in audit and "ETHUSD" in audit, audit

    # per tier, "Bars" is the rows the tier holds, and the total above is their sum
    tiers = page.evaluate("__tvfluxAdmin.lastTiers.tiers")
    for i, t in enumerate(tiers[:3]):
        assert cell(page, t["tier"], 6).replace(",", "") == str(t["bars"]), (i, t)
    total = page.locator("#bars-in-store").inner_text()
    assert total.split()[0].replace(",", "") == str(sum(t["bars"] for t in tiers)), total
    # a lag within what the plan makes normal reads as normal, not as a fault
    for t in tiers:
        lag = page.locator(f"#tiers tbody tr[data-tier='{t['tier']}'] td").nth(3)
        if t["lagMs"] is not None:
            want = "lag-behind" if t["lagMs"] > t["normalLagMs"] else "lag-normal"
            assert want in (lag.get_attribute("class") or ""), t
