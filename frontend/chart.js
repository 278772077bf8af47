/*
 * Lightweight Charts adapter: renders the tvflux chart with Lightweight
 * Charts 5.x, fed ONLY through the Charting Library datafeed API of
 * TvfluxDatafeed (getBars / subscribeBars / onResetCacheNeededCallback).
 *
 * Times: the datafeed speaks epoch milliseconds (JS API); Lightweight Charts
 * wants UTCTimestamp seconds. The conversion happens in toChartBar() only.
 * Bars stay in UTC; the chosen time zone only changes how times are written
 * (timezone.js), and stretches without trades are kept visible (gaps.js).
 *
 * `TvfluxChart.start(ctx)` takes the page services from app.js:
 *   { feed, hook, searchSymbols(query), symbol, resolution, notice(text, isError),
 *     themeColors(), onThemeChange(fn), timeZone(), onTimeZoneChange(fn),
 *     setActivity({lastTradeMs} | null), staleAfterMs,
 *     remember(key, value), reflectInUrl(symbol, resolution) }
 */
(function () {
  "use strict";

  const HISTORY_PAGE = 300; // bars per getBars page; ~2 screens on a desktop
  const LOAD_OLDER_THRESHOLD = 15; // bars left of the viewport before we page
  const RANGE_MAX_BARS = 20000; // keep a huge range from freezing a phone
  const RANGE_CHUNK_BUCKETS = 5000; // half the server's default max_bars per request
  const RANGE_MAX_REQUESTS = 40;
  const DEFAULT_BAR_SPACING = 6; // Lightweight Charts' default, px per bar
  const FIT_MAX_BAR_SPACING = 60; // px per bar at most, when few bars are fitted to the view
  const RETRY_MS = 3000;
  const ACTIVITY_REPROBE_MS = 30000; // how often a quiet symbol's newest trade is asked again

  const $ = (id) => document.getElementById(id);
  const resolutionToMs = TvfluxDatafeed.resolutionToMs;
  const T = TvfluxTime;

  function start(ctx) {
    const { feed, hook } = ctx;
    const LC = window.LightweightCharts;
    const container = $("chart");
    const chart = LC.createChart(container, {
      autoSize: true, // follows the container via ResizeObserver (phones rotate)
      layout: { fontSize: 12 },
      rightPriceScale: { scaleMargins: { top: 0.1, bottom: 0.25 } },
      timeScale: { rightOffset: 3, timeVisible: true, secondsVisible: false },
      crosshair: { mode: LC.CrosshairMode.Normal },
    });
    const candles = chart.addSeries(LC.CandlestickSeries, {
      borderVisible: false,
      priceLineVisible: true,
    });
    // Volume shares the pane on its own hidden scale, squeezed into the bottom
    // fifth so it never covers the candles.
    const volume = chart.addSeries(LC.HistogramSeries, {
      priceScaleId: "",
      priceFormat: { type: "volume" },
      lastValueVisible: false,
      priceLineVisible: false,
    });
    volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    Object.assign(hook, { chart, candleSeries: candles, volumeSeries: volume });

    let colors = ctx.themeColors();
    function paintTheme() {
      colors = ctx.themeColors();
      chart.applyOptions({
        layout: { background: { type: LC.ColorType.Solid, color: colors.bg }, textColor: colors.fg },
        grid: { vertLines: { color: colors.grid }, horzLines: { color: colors.grid } },
        rightPriceScale: { borderColor: colors.border },
        timeScale: { borderColor: colors.border },
      });
      candles.applyOptions({
        upColor: colors.up,
        downColor: colors.down,
        wickUpColor: colors.up,
        wickDownColor: colors.down,
      });
      // Histogram colours are per point; recolour the loaded data.
      if (state.bars.length) volume.setData(state.bars.map(toVolumePoint));
    }
    ctx.onThemeChange(paintTheme);

    // ---- state -----------------------------------------------------------

    const state = {
      symbol: ctx.symbol,
      resolution: ctx.resolution,
      mode: "live", // "live" | "range"
      range: null, // {from, to} epoch seconds, to exclusive
      info: null,
      bars: [], // chart bars: {time (s), open, high, low, close, volume}, ascending
      gen: 0, // bumped on every (re)load; late callbacks of older loads are ignored
      listenerGuid: null,
      pendingTicks: null, // ticks that arrived before history; replayed after
      loadingOlder: false,
      exhausted: false,
      retryTimer: null,
      resetTimer: null,
      legendPinned: false,
      precision: 2,
      fitted: false, // the view was fitted to a few bars (not the default zoom)
      gapPoints: 0, // whitespace points on the time axis (gaps.js)
      activity: null, // {symbol, lastTradeMs (null: never traded), probedAt}
    };
    hook.state = state;
    hook.barsCount = () => state.bars.length;
    hook.lastBar = () => (state.bars.length ? { ...state.bars[state.bars.length - 1] } : null);
    hook.firstBar = () => (state.bars.length ? { ...state.bars[0] } : null);
    hook.bars = () => state.bars.map((b) => ({ ...b }));
    hook.gapPoints = () => state.gapPoints;

    function toChartBar(bar) {
      return {
        time: Math.floor(bar.time / 1000),
        open: bar.open,
        high: bar.high,
        low: bar.low,
        close: bar.close,
        volume: bar.volume,
      };
    }
    function toCandle(b) {
      return { time: b.time, open: b.open, high: b.high, low: b.low, close: b.close };
    }
    function toVolumePoint(b) {
      // Translucent so the candles stay the thing you look at.
      const color = (b.close >= b.open ? colors.up : colors.down) + "66";
      return { time: b.time, value: b.volume, color };
    }

    /** Promise around the callback API, called exactly as the library calls it. */
    function getBars(info, resolution, periodParams) {
      return new Promise((resolve, reject) => {
        feed.getBars(info, resolution, periodParams, (bars, meta) => resolve({ bars, meta: meta || {} }), (reason) => reject(new Error(reason)));
      });
    }

    function barSeconds(resolution) {
      // Months have no fixed length; 31 days is a safe upper bound for
      // computing a `from` that countBack overrides anyway.
      return (resolutionToMs(resolution) || 31 * 86400000) / 1000;
    }

    /** End (exclusive, epoch s) of the bar starting at `time`. */
    function barEnd(time, resolution) {
      const m = /^(\d*)M$/i.exec(resolution);
      if (!m) return time + barSeconds(resolution);
      const d = new Date(time * 1000);
      return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + Number(m[1] || 1), 1) / 1000;
    }

    function setAllData() {
      // Whitespace goes into the candle series only: the time axis is the union
      // of both series, so the volume histogram needs none.
      const { data, points } = TvfluxGaps.withGaps(state.bars, state.resolution, toCandle);
      state.gapPoints = points;
      candles.setData(data);
      volume.setData(state.bars.map(toVolumePoint));
      if (!state.legendPinned) showLegend(null);
    }

    /** Bars of a day or longer are UTC calendar periods: they are dated in UTC in any zone. */
    function isDaily() {
      const ms = resolutionToMs(state.resolution);
      return ms === null || ms >= 86400000;
    }
    /** The zone the date fields and the range are in (see isDaily). */
    function fieldZone() {
      return isDaily() ? T.UTC : ctx.timeZone();
    }

    /** Axis ticks, crosshair label, legend and date fields in the chosen zone. */
    function applyZone() {
      const zone = ctx.timeZone();
      const daily = isDaily();
      const seconds = /S$/i.test(state.resolution);
      chart.applyOptions({
        localization: { timeFormatter: (time) => formatBarTime(Number(time)) },
        timeScale: {
          // null = the library's own label, which is UTC: right for UTC and for daily bars
          tickMarkFormatter: (time) => (daily || zone === T.UTC ? null : T.intradayTick(Number(time), zone, seconds)),
        },
      });
      const where = fieldZone() === T.UTC ? "UTC" : fieldZone();
      $("range-from").setAttribute("aria-label", `From date (${where})`);
      $("range-to").setAttribute("aria-label", `To date (${where}, inclusive)`);
      $("range-form").title = `Days in ${where}`;
      if (!state.legendPinned) showLegend(null);
    }

    /** A bar's time as the legend and the crosshair write it. */
    function formatBarTime(epochS) {
      if (isDaily()) return T.isoDay(epochS, T.UTC);
      return T.formatDateTime(epochS, ctx.timeZone(), /S$/i.test(state.resolution));
    }

    /**
     * After a fresh load: the latest bars at the default zoom, or, when all the
     * bars (and gaps) fit on screen with room to spare, all of them spread over
     * the width instead of squeezed against the right edge.
     */
    function showLatest() {
      const ts = chart.timeScale();
      const points = state.bars.length + state.gapPoints;
      const capacity = ts.width() / DEFAULT_BAR_SPACING - ts.options().rightOffset;
      if (points > 0 && points < capacity) {
        // All of them, centred, at most FIT_MAX_BAR_SPACING px each (three
        // monthly candles a third of the screen wide each would be absurd).
        const slots = Math.max(points + 2, ts.width() / FIT_MAX_BAR_SPACING);
        const mid = (points - 1) / 2;
        ts.setVisibleLogicalRange({ from: mid - slots / 2, to: mid + slots / 2 });
        state.fitted = true;
      } else if (state.fitted) {
        ts.resetTimeScale(); // back from a fitted zoom to the default one
        state.fitted = false;
      } else {
        ts.scrollToRealTime();
      }
    }

    function applyPriceFormat(info) {
      const scale = Number(info.pricescale) || 100;
      state.precision = Math.max(0, Math.round(Math.log10(scale)));
      // the symbol's own tick (/udf/symbols: minmov / pricescale), e.g. 0.25 or 0.00000001
      candles.applyOptions({ priceFormat: { type: "price", precision: state.precision, minMove: (Number(info.minmov) || 1) / scale } });
      const intraday = resolutionToMs(state.resolution) !== null && resolutionToMs(state.resolution) < 86400000;
      chart.applyOptions({
        timeScale: { timeVisible: intraday, secondsVisible: /S$/i.test(state.resolution) },
      });
      applyZone();
    }

    function stopLive() {
      if (state.listenerGuid) feed.unsubscribeBars(state.listenerGuid);
      state.listenerGuid = null;
      state.pendingTicks = null;
      clearTimeout(state.retryTimer);
      clearTimeout(state.resetTimer);
    }

    function onTick(gen, bar) {
      if (gen !== state.gen) return;
      const b = toChartBar(bar);
      if (state.pendingTicks) {
        state.pendingTicks.push(b);
        return;
      }
      applyTick(b);
    }

    function applyTick(b) {
      const n = state.bars.length;
      const last = n ? state.bars[n - 1] : null;
      // series.update() throws on a bar older than the last one; the datafeed
      // already filters per listener, this also covers history vs. live.
      if (last && b.time < last.time) {
        hook.droppedTicks += 1;
        return;
      }
      // A frame that changes the bar (more volume, or a new bar) means a trade
      // just happened; a repeat (the bar sent on subscribing, a `closed` frame)
      // does not.
      const same = last && b.time === last.time;
      if (!same || b.volume !== last.volume) noteTrade(Date.now());
      hook.ticks += 1;
      if (same) state.bars[n - 1] = b;
      else state.bars.push(b);
      if (last && !same && TvfluxGaps.opensGap(last.time, b.time, state.resolution)) {
        // A quiet stretch just ended: redraw with its gap, and keep following
        // the live edge if the user was there.
        const atEdge = chart.timeScale().scrollPosition() >= -1;
        setAllData();
        if (atEdge) chart.timeScale().scrollToRealTime();
        return;
      }
      candles.update(toCandle(b));
      volume.update(toVolumePoint(b));
      if (!state.legendPinned) showLegend(null);
    }

    // ---- activity: when did the symbol last trade? --------------------------
    //
    // The status says "Live" only while trades arrive. The newest trade comes
    // from the server (the newest 1-minute bar, so to the minute) on every load
    // and again every ACTIVITY_REPROBE_MS while the symbol looks quiet (a fixed
    // range gets no live bars); live bars that change move it to "now".

    function reportActivity() {
      const a = state.activity;
      ctx.setActivity(a && a.symbol === state.symbol ? { lastTradeMs: a.lastTradeMs } : null);
    }

    function noteTrade(ms) {
      const a = state.activity;
      if (!a || a.symbol !== state.symbol) return; // not probed yet: the probe will say
      if (a.lastTradeMs === null || ms > a.lastTradeMs) {
        a.lastTradeMs = ms;
        reportActivity();
      }
    }

    async function probeActivity() {
      const symbol = state.symbol;
      const probedAt = Date.now();
      if (state.activity && state.activity.symbol === symbol) state.activity.probedAt = probedAt;
      let last;
      try {
        const to = Math.floor(probedAt / 1000) + 60;
        const { bars, meta } = await feed.fetchBars(symbol, "1", { to, countBack: 1 });
        const t = bars.length ? bars[bars.length - 1].time : meta.nextTime != null ? meta.nextTime : null;
        // The trade was somewhere in that minute: take its end, so a quiet
        // symbol is never called stale early.
        last = t === null ? null : Math.min(t + 59999, Date.now());
      } catch (e) {
        console.warn("tvflux: could not ask for the newest trade:", e.message);
        return;
      }
      if (symbol !== state.symbol) return;
      const a = state.activity;
      if (a && a.symbol === symbol && a.lastTradeMs !== null && (last === null || a.lastTradeMs > last)) last = a.lastTradeMs;
      state.activity = { symbol, lastTradeMs: last, probedAt };
      reportActivity();
    }

    setInterval(() => {
      const a = state.activity;
      if (!a || a.symbol !== state.symbol) return;
      const now = Date.now();
      const quiet = a.lastTradeMs === null || now - a.lastTradeMs > ctx.staleAfterMs - ACTIVITY_REPROBE_MS;
      if (quiet && now - a.probedAt >= ACTIVITY_REPROBE_MS) probeActivity();
    }, 5000);

    function onResetCache(gen) {
      if (gen !== state.gen || state.mode !== "live") return;
      // A reconnect and a server reset can arrive together; refetch once.
      clearTimeout(state.resetTimer);
      state.resetTimer = setTimeout(() => loadLive({ keepView: true }), 100);
    }

    /** (Re)load the latest history and follow live updates. */
    async function loadLive(opts = {}) {
      stopLive();
      const gen = ++state.gen;
      state.mode = "live";
      state.range = null;
      state.exhausted = false;
      state.loadingOlder = false;
      $("range-live").hidden = true;
      hook.ready = false;
      reportActivity();
      try {
        const info = await feed.resolveSymbolInfo(state.symbol);
        if (gen !== state.gen) return;
        state.info = info;
        applyPriceFormat(info);
        $("legend-symbol").textContent = `${info.ticker} · ${resolutionLabel(state.resolution)}`;

        // Subscribe before fetching history and buffer ticks until it lands,
        // so a bar that closes while the request is in flight is not lost.
        state.pendingTicks = [];
        state.listenerGuid = `${state.symbol}#${state.resolution}#${gen}`;
        feed.subscribeBars(info, state.resolution, (bar) => onTick(gen, bar), state.listenerGuid, () => onResetCache(gen));

        const nowS = Math.floor(Date.now() / 1000);
        const step = barSeconds(state.resolution);
        // `to` is exclusive and compared with bar start times; one bar of
        // slack covers a browser clock running behind the server.
        const to = nowS + Math.ceil(step);
        const [{ bars, meta }] = await Promise.all([
          getBars(info, state.resolution, {
            from: to - HISTORY_PAGE * step,
            to,
            countBack: HISTORY_PAGE,
            firstDataRequest: true,
          }),
          probeActivity(),
        ]);
        if (gen !== state.gen) return;
        hook.historyLoads += 1;
        state.bars = bars.map(toChartBar);
        state.exhausted = Boolean(meta.noData);
        const pending = state.pendingTicks || [];
        state.pendingTicks = null;
        setAllData();
        for (const t of pending) applyTick(t);
        if (!opts.keepView) showLatest();
        ctx.notice(state.bars.length ? null : "No data yet for this symbol and resolution.");
        hook.ready = true;
        maybeLoadOlder();
      } catch (err) {
        if (gen !== state.gen) return;
        hook.errors.push(String(err.message || err));
        ctx.notice(`Could not load history: ${err.message}. Retrying…`, true);
        // The socket may be up (so no reset will come); retry on our own.
        state.retryTimer = setTimeout(() => {
          if (gen === state.gen) loadLive(opts);
        }, RETRY_MS);
      }
    }

    /** Page further back in time; called when the user nears the left edge. */
    async function loadOlder() {
      if (state.mode !== "live" || state.loadingOlder || state.exhausted || !state.bars.length || !state.info) return;
      const gen = state.gen;
      state.loadingOlder = true;
      const oldest = state.bars[0].time;
      try {
        const { bars, meta } = await getBars(state.info, state.resolution, {
          from: oldest - HISTORY_PAGE * barSeconds(state.resolution),
          to: oldest,
          countBack: HISTORY_PAGE,
          firstDataRequest: false,
        });
        if (gen !== state.gen) return;
        hook.olderLoads += 1;
        const older = bars.map(toChartBar).filter((b) => b.time < state.bars[0].time);
        if (older.length) {
          state.bars = older.concat(state.bars);
          // Lightweight Charts keeps the right edge anchored on setData, so
          // prepending does not move what the user is looking at.
          setAllData();
        }
        // No older bars but no noData either would make us ask forever.
        if (meta.noData || !older.length) state.exhausted = true;
      } catch (err) {
        if (gen !== state.gen) return;
        hook.errors.push(String(err.message || err));
        ctx.notice(`Could not load older bars: ${err.message}`, true);
      } finally {
        if (gen === state.gen) state.loadingOlder = false;
      }
      if (gen === state.gen) maybeLoadOlder();
    }

    function maybeLoadOlder() {
      const range = chart.timeScale().getVisibleLogicalRange();
      if (range && range.from < LOAD_OLDER_THRESHOLD) loadOlder();
    }
    chart.timeScale().subscribeVisibleLogicalRangeChange((range) => {
      if (range && range.from < LOAD_OLDER_THRESHOLD) loadOlder();
    });

    /** Load exactly [from, to) (epoch seconds) and stop following live data. */
    async function loadRange(from, to) {
      stopLive();
      const gen = ++state.gen;
      state.mode = "range";
      state.range = { from, to };
      state.exhausted = true; // no scroll-back paging outside the chosen range
      $("range-live").hidden = false;
      hook.ready = false;
      reportActivity();
      probeActivity(); // no live bars in a fixed range; the status still says whether the symbol trades
      try {
        const info = await feed.resolveSymbolInfo(state.symbol);
        if (gen !== state.gen) return;
        state.info = info;
        applyPriceFormat(info);
        $("legend-symbol").textContent = `${info.ticker} · ${resolutionLabel(state.resolution)}`;
        // The server refuses requests spanning more than its max_bars buckets,
        // so walk the range newest-first in chunks; an error halves the chunk
        // (a server configured with a smaller limit), and `nextTime` lets us
        // jump over empty stretches instead of asking chunk by chunk.
        const step = barSeconds(state.resolution);
        let chunkBuckets = RANGE_CHUNK_BUCKETS;
        let collected = [];
        let upper = to;
        let requests = 0;
        let truncated = false;
        while (upper > from) {
          if (requests >= RANGE_MAX_REQUESTS || collected.length >= RANGE_MAX_BARS) {
            truncated = true;
            break;
          }
          const lower = Math.max(from, upper - chunkBuckets * step);
          let res;
          try {
            requests += 1;
            res = await getBars(info, state.resolution, { from: lower, to: upper, countBack: 0, firstDataRequest: collected.length === 0 });
          } catch (err) {
            if (gen !== state.gen) return;
            if (chunkBuckets <= 64) throw err;
            chunkBuckets = Math.floor(chunkBuckets / 2);
            continue;
          }
          if (gen !== state.gen) return;
          // A bar belongs to the range when its period overlaps it: the week
          // containing a Wednesday start date is shown, not dropped.
          // Bars before `lower` come back because the server aligns `from`
          // down to a bar start; they belong to the next (older) chunk.
          const page = res.bars
            .map(toChartBar)
            .filter((b) => b.time < upper && (lower > from ? b.time >= lower : barEnd(b.time, state.resolution) > from));
          collected = page.concat(collected);
          if (page.length) upper = lower;
          else if (res.meta.nextTime != null) upper = Math.min(lower, Math.floor(res.meta.nextTime / 1000) + 1);
          else if (res.meta.noData) break; // nothing older at all
          else upper = lower;
        }
        hook.historyLoads += 1;
        state.bars = collected;
        setAllData();
        chart.timeScale().fitContent();
        const zone = fieldZone();
        const label = `${T.isoDay(from, zone)} – ${T.isoDay(to - 1, zone)} ${zone === T.UTC ? "UTC" : zone}`;
        if (!collected.length) ctx.notice(`No bars between ${label}.`);
        else if (truncated) ctx.notice(`Showing the latest ${collected.length} bars of ${label}; pick a coarser resolution for the whole range.`);
        else ctx.notice(null);
        hook.ready = true;
      } catch (err) {
        if (gen !== state.gen) return;
        hook.errors.push(String(err.message || err));
        ctx.notice(`Could not load range: ${err.message}`, true);
      }
    }

    function reload() {
      if (state.mode === "range" && state.range) loadRange(state.range.from, state.range.to);
      else loadLive();
    }

    // ---- legend --------------------------------------------------------------

    function fmtPrice(x) {
      return Number.isFinite(x) ? x.toFixed(state.precision) : "—";
    }
    function fmtVolume(x) {
      if (!Number.isFinite(x)) return "—";
      if (x >= 1e6) return (x / 1e6).toFixed(2) + "M";
      if (x >= 1e3) return (x / 1e3).toFixed(2) + "K";
      return x.toFixed(x >= 100 ? 0 : 4).replace(/\.?0+$/, "") || "0";
    }
    /** "2024-01-15 09:30 UTC+1"; daily bars: "2024-01-15" (a UTC day, see isDaily). */
    function legendTime(epochS) {
      if (isDaily()) return formatBarTime(epochS);
      return `${formatBarTime(epochS)} ${T.offsetLabel(epochS, ctx.timeZone())}`;
    }
    /** The legend for `bar`, the latest bar (null), or an empty slot of a gap ({time} only). */
    function showLegend(bar) {
      const b = bar || (state.bars.length ? state.bars[state.bars.length - 1] : null);
      const empty = Boolean(b && b.open === undefined);
      const legend = $("legend");
      const val = (x, fmt) => (b && !empty ? fmt(x) : "—");
      $("lg-o").textContent = val(b && b.open, fmtPrice);
      $("lg-h").textContent = val(b && b.high, fmtPrice);
      $("lg-l").textContent = val(b && b.low, fmtPrice);
      $("lg-c").textContent = val(b && b.close, fmtPrice);
      $("lg-v").textContent = val(b && b.volume, fmtVolume);
      $("lg-t").textContent = b ? legendTime(b.time) + (empty ? " · no trades" : "") : "";
      legend.classList.toggle("up", Boolean(b && !empty && b.close >= b.open));
      legend.classList.toggle("down", Boolean(b && !empty && b.close < b.open));
    }
    chart.subscribeCrosshairMove((param) => {
      const c = param.time !== undefined ? param.seriesData.get(candles) : undefined;
      if (param.time !== undefined && (!c || c.open === undefined)) {
        // an empty slot of a gap (a time on the axis, no bar): say so, instead of
        // showing some other bar
        state.legendPinned = true;
        showLegend({ time: Number(param.time) });
        return;
      }
      if (!c) {
        state.legendPinned = false;
        showLegend(null);
        return;
      }
      const v = param.seriesData.get(volume);
      state.legendPinned = true;
      showLegend({ time: c.time, open: c.open, high: c.high, low: c.low, close: c.close, volume: v ? v.value : NaN });
    });

    // ---- controls ------------------------------------------------------------

    function resolutionLabel(r) {
      if (/^\d+$/.test(r)) return Number(r) % 60 === 0 ? `${Number(r) / 60}h` : `${r}m`;
      return /^\d+S$/i.test(r) ? `${r.slice(0, -1)}s` : r;
    }

    const symbolBox = TvfluxSymbolSearch.attach({
      input: $("symbol"),
      list: $("symbol-list"),
      search: ctx.searchSymbols,
      value: state.symbol,
      onPick(symbol) {
        state.symbol = symbol;
        ctx.remember("tvflux.symbol", state.symbol);
        ctx.reflectInUrl(state.symbol, state.resolution);
        reload();
      },
    });
    hook.symbolBox = symbolBox;

    const resButtons = Array.from(document.querySelectorAll("#resolutions button"));
    function markResolution() {
      for (const b of resButtons) b.setAttribute("aria-pressed", b.dataset.resolution === state.resolution ? "true" : "false");
    }
    for (const b of resButtons) {
      b.addEventListener("click", () => {
        if (b.dataset.resolution === state.resolution) return;
        state.resolution = b.dataset.resolution;
        ctx.remember("tvflux.resolution", state.resolution);
        ctx.reflectInUrl(state.symbol, state.resolution);
        markResolution();
        reload();
      });
    }
    markResolution();

    // Date range: inputs are calendar days in the chosen zone (UTC days for daily bars,
    // see isDaily), the end day inclusive. While following the live edge they show the
    // days the chart shows (they follow scrolling and zoom), so "Apply" on them
    // reproduces the view; a range the user loaded keeps its own days.
    const todayS = Date.now() / 1000;
    $("range-to").value = T.isoDay(todayS, fieldZone());
    $("range-from").value = T.isoDay(todayS, fieldZone());
    function syncDateFields() {
      if (state.mode !== "live" || !state.bars.length) return;
      const active = document.activeElement;
      if (active && (active.id === "range-from" || active.id === "range-to")) return; // the user is typing
      const r = chart.timeScale().getVisibleRange();
      if (!r) return;
      const first = Math.max(Number(r.from), state.bars[0].time);
      const last = Math.min(Number(r.to), state.bars[state.bars.length - 1].time);
      $("range-from").value = T.isoDay(first, fieldZone());
      $("range-to").value = T.isoDay(Math.max(first, last), fieldZone());
    }
    chart.timeScale().subscribeVisibleTimeRangeChange(syncDateFields);
    hook.syncDateFields = syncDateFields;
    function nextIsoDay(iso) {
      const t = Date.parse(`${iso}T00:00:00Z`);
      return Number.isFinite(t) ? new Date(t + 86400000).toISOString().slice(0, 10) : "";
    }
    function applyDateFields() {
      const zone = fieldZone();
      const from = T.dayStart($("range-from").value, zone);
      const toDay = T.dayStart($("range-to").value, zone);
      if (!Number.isFinite(from) || !Number.isFinite(toDay)) {
        ctx.notice("Pick both dates.", true);
        return;
      }
      if (toDay < from) {
        ctx.notice("The end date is before the start date.", true);
        return;
      }
      loadRange(from, T.dayStart(nextIsoDay($("range-to").value), zone));
    }
    $("range-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      applyDateFields();
    });
    $("range-live").addEventListener("click", () => loadLive());

    ctx.onTimeZoneChange(() => {
      applyZone();
      // A loaded range is days of the old zone: load the same days in the new one.
      if (state.mode === "range") applyDateFields();
      else syncDateFields();
    });

    Object.assign(hook, { loadLive, loadRange, loadOlder });

    paintTheme();
    loadLive();
  }

  window.TvfluxChart = { start };
})();
