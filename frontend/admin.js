/*
 * tvflux admin dashboard: downsampling tiers and service stats, polled every
 * 2 s. Polls are chained with setTimeout (not setInterval) so a slow server
 * never has two polls of ours in flight.
 */
(function () {
  "use strict";

  const POLL_MS = 2000;
  const $ = (id) => document.getElementById(id);

  // Test hook: counters the browser tests wait on.
  const hook = { polls: 0, runs: 0, auditLoads: 0, lastTiers: null, lastStats: null, lastRun: null, lastSources: null };
  window.__tvfluxAdmin = hook;

  async function getJson(url, init) {
    const r = await fetch(url, { cache: "no-store", ...(init || {}), headers: { Accept: "application/json", ...((init && init.headers) || {}) } });
    let body = null;
    try {
      body = await r.json();
    } catch (_) {
      // fall through with body = null
    }
    if (!r.ok) {
      const msg = body && body.error ? body.error.message || body.error.code : `HTTP ${r.status}`;
      const err = new Error(`${url}: ${msg}`);
      err.status = r.status;
      throw err;
    }
    return body;
  }

  // The admin token lives in sessionStorage: it survives the 2 s refreshes and
  // a reload, but not the browser session, and other origins never see it.
  const TOKEN_KEY = "tvflux.adminToken";
  function adminToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (_) {
      return "";
    }
  }
  function setAdminToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // storage disabled: the token is used for this click only
    }
  }

  // ---- formatting --------------------------------------------------------

  const intFmt = new Intl.NumberFormat("en-US");

  function isoTime(ms) {
    if (ms == null) return "—";
    // Full ISO with milliseconds dropped; the T becomes a space for legibility.
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d{3}Z$/, "Z");
  }

  function duration(ms) {
    if (ms == null || !Number.isFinite(ms)) return "—";
    const a = Math.abs(ms);
    if (a < 1) return `${ms.toFixed(2)} ms`;
    if (a < 1000) return `${Math.round(ms)} ms`;
    if (a < 60000) return `${(ms / 1000).toFixed(1)} s`;
    if (a < 3600000) return `${Math.floor(a / 60000)} m ${Math.round((a % 60000) / 1000)} s`;
    if (a < 86400000) return `${Math.floor(a / 3600000)} h ${Math.round((a % 3600000) / 60000)} m`;
    return `${(a / 86400000).toFixed(1)} d`;
  }

  function setText(id, text, cls) {
    const el = $(id);
    el.textContent = text;
    if (cls !== undefined) el.className = `v ${cls}`;
  }

  // ---- rendering -----------------------------------------------------------

  function renderTiers(body) {
    const tbody = document.querySelector("#tiers tbody");
    const rows = (body && body.tiers) || [];
    const frag = document.createDocumentFragment();
    for (const t of rows) {
      const tr = document.createElement("tr");
      tr.dataset.tier = t.tier;
      if (t.error) tr.classList.add("has-error");
      const cells = [
        [t.tier, ""],
        [t.source || "—", ""],
        [isoTime(t.watermark), ""],
        [duration(t.lagMs), lagClass(t)],
        [isoTime(t.lastRun), ""],
        [duration(t.lastDurationMs), "num"],
        [t.bars == null ? "—" : intFmt.format(t.bars), "num"],
        [t.dirtyWindows == null ? "—" : intFmt.format(t.dirtyWindows), "num"],
        [backfillText(t.backfill), "backfill"],
        [t.error || "", "err"],
      ];
      for (const [text, cls] of cells) {
        const td = document.createElement("td");
        td.textContent = text;
        if (cls) td.className = cls;
        if (cls.startsWith("num lag") && t.normalLagMs != null) td.title = `normal for this tier: up to ${duration(t.normalLagMs)}`;
        tr.appendChild(td);
      }
      frag.appendChild(tr);
    }
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 10;
      td.className = "muted";
      td.textContent = "No tiers configured.";
      tr.appendChild(td);
      frag.appendChild(tr);
    }
    tbody.replaceChildren(frag);
    renderRuns(rows);
  }

  // A tier's watermark trails the clock by up to its own size and more (a 1d tier by a day):
  // that lag is the tier's nature; only lag beyond what the plan makes normal is a fault.
  function lagClass(t) {
    if (t.lagMs == null || t.normalLagMs == null) return "num";
    return t.lagMs > t.normalLagMs ? "num lag-behind" : "num lag-normal";
  }

  // "42.0 % · 3 m 20 s left (about 14:32:10Z)", or "at the edge" for a tier that follows it.
  function backfillText(b) {
    if (!b) return "at the edge";
    const pct = `${(b.progress * 100).toFixed(1)} %`;
    if (b.expectedFinish == null) return `${pct} · measuring rate…`;
    const left = Math.max(0, b.expectedFinish - Date.now());
    return `${pct} · ${duration(left)} left (about ${isoTime(b.expectedFinish).slice(11)})`;
  }

  // One <details> per tier with its recent runs; which ones are open survives the refresh.
  const openRuns = new Set();
  function renderRuns(tiers) {
    const box = $("runs");
    const frag = document.createDocumentFragment();
    for (const t of tiers) {
      const runs = t.recentRuns || [];
      const det = document.createElement("details");
      det.dataset.tier = t.tier;
      det.open = openRuns.has(t.tier);
      det.addEventListener("toggle", () => (det.open ? openRuns.add(t.tier) : openRuns.delete(t.tier)));
      const sum = document.createElement("summary");
      const failed = runs.filter((r) => r.error).length;
      sum.textContent = `${t.tier}: ${runs.length} recent run${runs.length === 1 ? "" : "s"}` +
        (failed ? `, ${failed} failed` : "") + (runs.length ? `, last ${isoTime(runs[0].time)}` : "");
      det.appendChild(sum);
      const table = document.createElement("table");
      table.className = "runs";
      table.innerHTML = "<thead><tr><th scope=\"col\">Ended (UTC)</th><th scope=\"col\">Window (UTC)</th>" +
        "<th scope=\"col\" class=\"num\">Rows</th><th scope=\"col\" class=\"num\">Duration</th>" +
        "<th scope=\"col\">Error</th></tr></thead>";
      const body = document.createElement("tbody");
      for (const r of runs) {
        const tr = document.createElement("tr");
        if (r.error) tr.classList.add("has-error");
        const cells = [
          [isoTime(r.time), ""],
          [r.fromMs == null ? "—" : `${isoTime(r.fromMs)} → ${isoTime(r.toMs)}`, ""],
          [intFmt.format(r.rows || 0), "num"],
          [duration(r.durationMs), "num"],
          [r.error || "", "err"],
        ];
        for (const [text, cls] of cells) {
          const td = document.createElement("td");
          td.textContent = text;
          if (cls) td.className = cls;
          tr.appendChild(td);
        }
        body.appendChild(tr);
      }
      if (!runs.length) {
        const tr = document.createElement("tr");
        const td = document.createElement("td");
        td.colSpan = 5;
        td.className = "muted";
        td.textContent = "No runs since the service started.";
        tr.appendChild(td);
        body.appendChild(tr);
      }
      table.appendChild(body);
      det.appendChild(table);
      frag.appendChild(det);
    }
    box.replaceChildren(frag);
  }

  function renderStats(s) {
    setText("ingest-rate", s.ingestRatePerS == null ? "—" : `${s.ingestRatePerS.toFixed(1)}/s`);
    setText("trades-accepted", s.tradesAccepted == null ? "—" : intFmt.format(s.tradesAccepted));
    $("trades-in-store").textContent = s.storeTrades == null ? "" : `${intFmt.format(s.storeTrades)} in the store`;
    setText("ws-clients", s.wsClients == null ? "—" : intFmt.format(s.wsClients));
    setText("subscriptions", s.subscriptions == null ? "—" : intFmt.format(s.subscriptions));
    const writer = s.writer || {};
    setText("pending-rows", writer.pendingRows != null ? intFmt.format(writer.pendingRows) : "—");
    setText("stored-rows", writer.storedRows != null ? intFmt.format(writer.storedRows) : "—");
    $("writer-error").textContent = writer.lastError || "";
    setText("uptime", s.uptimeS != null ? duration(s.uptimeS * 1000) : "—");
    const store = s.store || {};
    $("store-kind").textContent = store.kind ? `Store (${store.kind})` : "Store";
    setText("store-health", store.healthy ? "healthy" : "unhealthy", store.healthy ? "ok" : "bad");
    $("store-error").textContent = store.error || "";
  }

  function banner(text) {
    const el = $("banner");
    el.hidden = !text;
    el.textContent = text || "";
  }

  // ---- polling ---------------------------------------------------------------

  let timer = null;
  function renderAudit(body) {
    const rows = (body.entries || []).map((e) => {
      const what = e.ids
        ? `ids ${e.ids.join(", ")}`
        : e.fromMs != null
          ? `range ${isoTime(e.fromMs)} – ${isoTime(e.toMs)}`
          : (e.action || "").replace("_", " ");
      const who = e.actor ? `${e.who} (${e.actor})` : e.who;
      const tr = document.createElement("tr");
      for (const text of [isoTime(e.time), who, e.symbol, what, intFmt.format(e.deleted)]) {
        const td = document.createElement("td");
        td.textContent = text;  // text only: audit fields come from clients
        tr.appendChild(td);
      }
      return tr;
    });
    const tbody = $("audit-rows");
    if (!rows.length) {
      const td = document.createElement("td");
      td.colSpan = 5;
      td.className = "muted";
      td.textContent = "none yet";
      const tr = document.createElement("tr");
      tr.appendChild(td);
      rows.push(tr);
    }
    tbody.replaceChildren(...rows);
    hook.auditLoads += 1;
  }

  async function pollAudit() {
    const token = adminToken();
    try {
      renderAudit(await getJson("/api/admin/audit?limit=50", token ? { headers: { Authorization: `Bearer ${token}` } } : undefined));
    } catch (err) {
      $("audit-note").textContent = `The audit log needs the admin token (${err.message}).`;
    }
  }

  function row(cells, cls) {
    const tr = document.createElement("tr");
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;  // text only: venue messages end up in errors and reasons
      tr.appendChild(td);
    }
    if (cls) tr.className = cls;
    return tr;
  }

  function renderSources(body) {
    hook.lastSources = body;
    const rows = [];
    for (const s of body.sources || []) {
      for (const f of s.symbols || []) {
        const age = f.lastTradeAgeS == null ? "—" : `${f.lastTradeAgeS.toFixed(1)} s ago`;
        rows.push(row([
          s.name,
          f.venueSymbol ? `${f.symbol} (${f.venueSymbol})` : f.symbol,
          s.connected ? "yes" : "no",
          f.state,
          age,
          f.tradesPerS.toFixed(1),
          intFmt.format(s.reconnects),
          intFmt.format(f.gapsFound),
          intFmt.format(f.tradesBackfilled),
          intFmt.format(f.gapsOpen),
          s.restPausedUntil ? `${intFmt.format(s.restWeightUsed)} (paused until ${isoTime(s.restPausedUntil)})` : intFmt.format(s.restWeightUsed),
          s.lastError || "",
        ], f.gapsOpen ? "bad" : ""));
      }
    }
    if (rows.length) $("source-rows").replaceChildren(...rows);
    const gaps = (body.gaps || []).slice(0, 50).map((g) =>
      row([
        isoTime(g.detectedAt),
        g.source,
        g.symbol,
        `${g.fromId}…${g.toId == null ? "?" : g.toId}`,
        g.state,
        g.cause,
        intFmt.format(g.trades || 0),
        g.reason || "",
      ], g.state === "open" ? "bad" : ""),
    );
    if (gaps.length) $("gap-rows").replaceChildren(...gaps);
  }

  async function poll() {
    clearTimeout(timer);
    const [tiers, stats, sources] = await Promise.allSettled([getJson("/api/downsampling"), getJson("/api/stats"), getJson("/api/sources")]);
    if (sources.status === "fulfilled") renderSources(sources.value);
    const problems = [];
    if (tiers.status === "fulfilled") {
      hook.lastTiers = tiers.value;
      renderTiers(tiers.value);
      const all = tiers.value.tiers || [];
      const bars = all.reduce((n, t) => n + (t.bars || 0), 0);
      $("bars-in-store").textContent = all.some((t) => t.bars == null)
        ? "" // the store does not count its tiers' rows cheaply (InfluxDB): no figure rather than a wrong one
        : `${intFmt.format(bars)} bars in the store's tiers`;
    } else problems.push(tiers.reason.message);
    const firstStats = hook.lastStats == null;
    if (stats.status === "fulfilled") {
      hook.lastStats = stats.value;
      renderStats(stats.value);
    } else problems.push(stats.reason.message);
    // the audit at once when the page opens (then every 5th poll), not 5 polls later
    const needsToken = hook.lastStats && hook.lastStats.adminTokenRequired;
    if ((firstStats || hook.polls % 5 === 0) && hook.lastStats && (!needsToken || adminToken())) pollAudit();
    // Keep the last good figures on screen and say they are stale, rather
    // than blanking the dashboard during a restart.
    banner(problems.length ? `Cannot reach the service (${problems.join("; ")}); showing the last known values.` : null);
    if (!problems.length) $("updated").textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC`;
    hook.polls += 1;
    timer = setTimeout(poll, POLL_MS);
  }

  async function runNow(token) {
    const btn = $("run-now");
    const out = $("run-result");
    btn.disabled = true;
    out.textContent = "Running…";
    try {
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      // The service answers at once with the run; follow it until it is over (a backfill
      // can take minutes), showing where the tiers stand meanwhile.
      let body = await getJson("/api/downsampling/run?wait=20", { method: "POST", headers });
      while (body.state === "running") {
        if (body.tiers) renderTiers(body);
        out.textContent = `Running… (${Math.round((Date.now() - body.startedAt) / 1000)} s)`;
        body = await getJson(`/api/downsampling/runs/${encodeURIComponent(body.id)}?wait=20`, { headers });
      }
      if (body.state === "failed") throw new Error(body.error || "the run failed");
      hook.runs += 1;
      hook.lastRun = body;
      $("token-form").hidden = true;
      if (body.tiers) renderTiers(body);
      const ran = body.ran || [];
      out.textContent = ran.length
        ? `Ran ${ran.map((r) => `${r.tier} (${intFmt.format(r.rows)} rows, ${duration(r.durationMs)})`).join(", ")}`
        : "Nothing to do: every tier is up to date.";
    } catch (e) {
      if (e.status === 401) {
        // The server has TVFLUX_ADMIN_TOKEN set: ask for it instead of failing.
        setAdminToken("");
        $("token-form").hidden = false;
        $("admin-token").focus();
        out.textContent = token ? "That token was not accepted." : "This server needs the admin token for manual runs.";
      } else {
        out.textContent = `Run failed: ${e.message}`;
      }
    } finally {
      btn.disabled = false;
    }
  }

  $("run-now").addEventListener("click", () => runNow(adminToken()));
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("admin-token").value.trim();
    setAdminToken(token);
    $("admin-token").value = "";
    runNow(token);
  });

  poll();
})();
