/*
 * tvflux chart page: boot, preferences (theme, symbol, resolution), the
 * connection indicator, and the choice of renderer.
 *
 * Two renderers, one datafeed:
 *  - When the licensed TradingView Charting Library is installed under
 *    /charting_library/ we hand it our TvfluxDatafeed and get out of the way.
 *  - Otherwise chart.js adapts the same datafeed API (getBars / subscribeBars
 *    / resetCache) to Lightweight Charts 5.x, so the open-source page
 *    exercises exactly the code the licensed library would run.
 */
(function () {
  "use strict";

  const TV_PROBE_URL = "/charting_library/charting_library.standalone.js";
  const RESOLUTIONS = ["1S", "5S", "15S", "30S", "1", "5", "15", "30", "60", "240", "1D", "1W", "1M"];
  const RESOLUTION_ALIASES = { D: "1D", W: "1W", M: "1M", "1H": "60", "4H": "240", S: "1S" };
  // "Live" means trades are arriving, not just that the socket is open: a symbol
  // whose newest trade is older than this says "No trades since …" instead.
  const STALE_AFTER_MS = 5 * 60 * 1000;

  const $ = (id) => document.getElementById(id);
  const feed = new TvfluxDatafeed({ baseUrl: "" });

  // Test hook and debugging handle. Tests read counters from here instead of
  // guessing from pixels; nothing in the page depends on it.
  const hook = {
    mode: null,
    feed,
    ready: false,
    historyLoads: 0,
    olderLoads: 0,
    ticks: 0,
    droppedTicks: 0,
    errors: [],
  };
  window.__tvflux = hook;

  // ---- preferences: theme ------------------------------------------------

  const THEME_KEY = "tvflux.theme";
  const darkQuery = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  const themeListeners = [];

  function storedTheme() {
    try {
      const t = localStorage.getItem(THEME_KEY);
      return t === "light" || t === "dark" ? t : null;
    } catch (_) {
      return null; // storage disabled (private mode, sandboxed iframe)
    }
  }

  function currentTheme() {
    return storedTheme() || (darkQuery && darkQuery.matches ? "dark" : "light");
  }

  function applyTheme(theme) {
    document.documentElement.dataset.theme = theme;
    $("theme-toggle").setAttribute("aria-pressed", theme === "dark" ? "true" : "false");
    for (const fn of themeListeners) fn(theme);
  }

  $("theme-toggle").addEventListener("click", () => {
    const next = currentTheme() === "dark" ? "light" : "dark";
    try {
      localStorage.setItem(THEME_KEY, next);
    } catch (_) {
      // not persisted, but still switch for this visit
    }
    applyTheme(next);
  });
  // Follow the OS setting live, but only until the user picks a theme.
  if (darkQuery && darkQuery.addEventListener) {
    darkQuery.addEventListener("change", () => {
      if (!storedTheme()) applyTheme(currentTheme());
    });
  }

  /** Canvas colours come from the same CSS variables as the page chrome. */
  function themeColors() {
    const css = getComputedStyle(document.documentElement);
    const v = (name) => css.getPropertyValue(name).trim();
    return { bg: v("--bg"), fg: v("--fg"), grid: v("--grid"), border: v("--border"), up: v("--up"), down: v("--down") };
  }

  // ---- preferences: time zone -----------------------------------------------

  // Stored as "UTC" (the default), "browser" (whatever zone this browser is in,
  // so it follows a laptop that travels) or an IANA zone name.
  const TZ_KEY = "tvflux.timezone";
  const T = TvfluxTime;
  const zoneListeners = [];
  let zoneChoice = (() => {
    const stored = remembered(TZ_KEY);
    return stored === T.BROWSER || (stored && T.isValidZone(stored)) ? stored : T.UTC;
  })();
  /** The IANA zone times are shown in. */
  function timeZone() {
    return T.resolve(zoneChoice);
  }

  function zoneOption(value, text) {
    const opt = document.createElement("option");
    opt.value = value;
    opt.textContent = text;
    return opt;
  }
  function fillZoneSelect() {
    const sel = $("tz");
    const nowS = Date.now() / 1000;
    const label = (z) => (z === T.UTC ? "UTC" : `${T.zoneName(z)} ${T.offsetLabel(nowS, z)}`);
    sel.textContent = "";
    sel.appendChild(zoneOption(T.UTC, "UTC"));
    sel.appendChild(zoneOption(T.BROWSER, `${label(T.browserZone())} (this browser)`));
    const zones = T.ZONES.slice();
    if (zoneChoice !== T.UTC && zoneChoice !== T.BROWSER && !zones.includes(zoneChoice)) zones.unshift(zoneChoice);
    for (const z of zones) sel.appendChild(zoneOption(z, label(z)));
    sel.value = zoneChoice;
    showZoneLabel();
  }
  function showZoneLabel() {
    const zone = timeZone();
    const text = zone === T.UTC ? "UTC" : `${T.zoneName(zone)} ${T.offsetLabel(Date.now() / 1000, zone)}`;
    $("tz-label").textContent = text;
    $("tz-wrap").title = `Times are shown in ${zone}${zoneChoice === T.BROWSER ? " (this browser's zone)" : ""}; click to change`;
    hook.timeZone = zone;
  }
  $("tz").addEventListener("change", () => {
    zoneChoice = $("tz").value;
    remember(TZ_KEY, zoneChoice);
    showZoneLabel();
    for (const fn of zoneListeners) fn(timeZone());
    renderStatus();
  });

  // ---- connection status ---------------------------------------------------

  // The indicator says "Live" only when the socket is open AND the symbol on
  // screen traded recently (chart.js reports its newest trade through
  // setActivity); otherwise "No trades since <time>". In Charting Library mode
  // nothing reports activity and it shows the connection alone.
  const STATUS_LABEL = { open: "Live", connecting: "Connecting…", closed: "Disconnected" };
  let connection = "closed";
  let activity = null; // null: unknown; else {lastTradeMs: epoch ms or null (no trade ever)}
  function renderStatus() {
    const el = $("status");
    el.dataset.state = connection;
    let label = STATUS_LABEL[connection] || connection;
    let fresh = "unknown";
    if (connection === "open" && activity) {
      const last = activity.lastTradeMs;
      if (last === null) {
        fresh = "stale";
        label = "No trades yet";
      } else if (Date.now() - last > STALE_AFTER_MS) {
        fresh = "stale";
        const zone = timeZone();
        label = `No trades since ${T.formatDateTime(last / 1000, zone)} ${T.offsetLabel(last / 1000, zone)}`;
      } else {
        fresh = "live";
      }
    }
    el.dataset.fresh = fresh;
    el.querySelector(".label").textContent = label;
    el.title = `WebSocket ${connection}` + (fresh === "stale" ? `; no trade for ${STALE_AFTER_MS / 60000} min or more` : "");
    hook.status = { connection, fresh, label };
  }
  function setActivity(next) {
    activity = next;
    renderStatus();
  }
  feed.onConnectionChange((state) => {
    connection = state;
    renderStatus();
  });
  // A quiet symbol turns stale without any event; look again now and then.
  setInterval(renderStatus, 5000);

  // ---- notices -------------------------------------------------------------

  function notice(text, isError) {
    const el = $("notice");
    if (!text) {
      el.hidden = true;
      return;
    }
    el.textContent = text;
    el.classList.toggle("error", Boolean(isError));
    el.hidden = false;
  }

  // Problems with the link itself (?symbol=, ?resolution=): their own notice, which the
  // chart's loading messages never overwrite; dismissed by its button.
  function linkNotice(text) {
    const el = $("link-notice");
    el.hidden = !text;
    el.querySelector(".text").textContent = text || "";
    hook.linkNotice = text || null;
  }
  $("link-notice").querySelector("button").addEventListener("click", () => linkNotice(null));

  // ---- choose a renderer ---------------------------------------------------

  // The server says whether the licensed library is installed: probing its file would
  // log a red 404 in the console on every load of a page without it.
  async function chartingLibraryAvailable() {
    try {
      const body = await feed.fetchJson("/api/frontend");
      return Boolean(body && body.chartingLibrary);
    } catch (_) {
      return false;
    }
  }

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src;
      s.onload = resolve;
      s.onerror = () => reject(new Error(`failed to load ${src}`));
      document.head.appendChild(s);
    });
  }

  // ---- URL / storage state ---------------------------------------------------

  const params = new URLSearchParams(location.search);
  function remembered(key) {
    try {
      return localStorage.getItem(key);
    } catch (_) {
      return null;
    }
  }
  function remember(key, value) {
    try {
      localStorage.setItem(key, value);
    } catch (_) {
      // best effort
    }
  }
  function reflectInUrl(symbol, resolution) {
    // Shareable links: the address bar always says what is on screen.
    const p = new URLSearchParams(location.search);
    p.set("symbol", symbol);
    p.set("resolution", resolution);
    history.replaceState(null, "", `${location.pathname}?${p}`);
  }

  /** Symbols matching `query`, from `/udf/search`: the server may have thousands. */
  function searchSymbols(query) {
    return new Promise((resolve) => feed.searchSymbols(query, "", "", (items) => resolve(items.map((i) => ({ symbol: i.symbol, description: i.description })))));
  }

  /**
   * Whether the server has `symbol`. Asked through the search, not /udf/symbols,
   * whose 404 for an unknown name would be a console error; only when the search
   * is too crowded to tell (100 symbols containing the name) is the whole list read.
   */
  async function symbolExists(symbol) {
    if (!symbol) return false;
    const same = (s) => s.symbol === symbol;
    const found = await feed.fetchJson("/udf/search", { query: symbol, limit: 100 });
    if (found.some(same)) return true;
    if (found.length < 100) return false;
    const all = await feed.fetchJson("/api/symbols");
    return (all.symbols || []).some(same);
  }

  // ==========================================================================
  // Licensed Charting Library
  // ==========================================================================

  /** The stored zone, if the library knows it (our list is a subset of its zones). */
  function chartingLibraryZone() {
    const zone = timeZone();
    return T.ZONES.includes(zone) ? zone : "Etc/UTC";
  }

  async function startChartingLibrary(symbol, resolution) {
    document.body.classList.add("tv-mode");
    hook.mode = "charting_library";
    await loadScript(TV_PROBE_URL);
    const widget = new window.TradingView.widget({
      container: $("chart"),
      library_path: "/charting_library/",
      datafeed: feed,
      symbol,
      interval: resolution,
      timezone: chartingLibraryZone(),
      locale: "en",
      theme: currentTheme(),
      autosize: true,
    });
    hook.widget = widget;
    themeListeners.push((theme) => {
      if (typeof widget.changeTheme === "function") widget.changeTheme(theme);
    });
    if (typeof widget.onChartReady === "function") widget.onChartReady(() => (hook.ready = true));
  }

  // ==========================================================================
  // boot
  // ==========================================================================

  async function main() {
    applyTheme(currentTheme());
    fillZoneSelect();
    const pick = (cands, allowed, fallback) => cands.find((c) => c && allowed.includes(c)) || fallback;
    const asked = { symbol: params.get("symbol"), resolution: params.get("resolution") };
    const askedRes = asked.resolution && (RESOLUTION_ALIASES[asked.resolution.toUpperCase()] || asked.resolution);
    // The symbol: the link's, else the last one shown, else the server's first.
    let symbol = null;
    try {
      for (const cand of [asked.symbol, remembered("tvflux.symbol")]) {
        if (await symbolExists(cand)) {
          symbol = cand;
          break;
        }
      }
    } catch (e) {
      // The server did not answer (restarting, say): show what was asked for; the
      // chart says what fails and retries its loads until the server is back.
      console.warn("tvflux: could not check the symbol:", e.message);
      symbol = asked.symbol || remembered("tvflux.symbol");
    }
    if (!symbol) {
      const first = await searchSymbols("");
      symbol = first.length ? first[0].symbol : "BTCUSD";
    }
    const resolution = pick([askedRes, remembered("tvflux.resolution")], RESOLUTIONS, "1");
    // A link naming something this server doesn't have: say so, and show what is shown.
    const problems = [];
    if (asked.symbol !== null && asked.symbol !== symbol) {
      problems.push(`Unknown symbol "${asked.symbol}" in the link (this server has no such symbol); showing ${symbol}.`);
    }
    if (asked.resolution !== null && askedRes !== resolution) {
      problems.push(`Unsupported resolution "${asked.resolution}" in the link (use one of ${RESOLUTIONS.join(", ")}); showing ${resolution}.`);
    }
    linkNotice(problems.join(" "));
    if (problems.length) reflectInUrl(symbol, resolution);
    if (await chartingLibraryAvailable()) {
      try {
        await startChartingLibrary(symbol, resolution);
        return;
      } catch (e) {
        console.error("tvflux: Charting Library failed to start, falling back to Lightweight Charts", e);
        document.body.classList.remove("tv-mode");
      }
    }
    hook.mode = "lightweight";
    TvfluxChart.start({
      feed,
      hook,
      searchSymbols,
      symbol,
      resolution,
      notice,
      themeColors,
      onThemeChange: (fn) => themeListeners.push(fn),
      timeZone,
      onTimeZoneChange: (fn) => zoneListeners.push(fn),
      setActivity,
      staleAfterMs: STALE_AFTER_MS,
      remember,
      reflectInUrl,
    });
  }

  main().catch((e) => {
    console.error("tvflux: page failed to start", e);
    notice(`The page failed to start: ${e.message}`, true);
  });
})();
