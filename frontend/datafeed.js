/*
 * tvflux datafeed for the TradingView Charting Library (JS API, not UDF).
 *
 * A plain browser script: it defines `window.TvfluxDatafeed` and needs no
 * bundler. The same object drives both the licensed Charting Library (when it
 * is installed, see README.md) and our Lightweight Charts page (app.js), so
 * the page exercises exactly the code path the Charting Library would.
 *
 *   const feed = new TvfluxDatafeed({ baseUrl: "", wsUrls: ["wss://a/ws", "wss://b/ws"] });
 *
 * History comes from `GET /api/bars` (bar times in epoch ms, as the JS API
 * wants them). Live bars come over ONE shared WebSocket to `/ws`, multiplexed
 * by the library's listenerGuid. By default it speaks protocol v2
 * (`/ws?v=2`): the server answers each subscribe with the listener's topic
 * and then sends each topic's frames once, which we fan out to every
 * listener of that topic. `protocol: 1` keeps the old per-listener frames.
 *
 * The socket reconnects with capped exponential backoff and full jitter,
 * trying the next of several edge URLs each time, runs a ping/pong
 * heartbeat, and after every reconnect re-subscribes everything and asks
 * each listener to reset its cache, because bars may have been missed while
 * we were away.
 */
(function (global) {
  "use strict";

  // Resolutions the service accepts (see design.md); used when /udf/config
  // is unreachable or does not list them, so the chart still has sane
  // buttons.
  const DEFAULT_RESOLUTIONS = [
    "1S", "5S", "15S", "30S",
    "1", "3", "5", "15", "30", "45", "60", "120", "180", "240", "360", "480", "720",
    "1D", "3D", "1W", "1M",
  ];

  const STATES = Object.freeze({ CONNECTING: "connecting", OPEN: "open", CLOSED: "closed" });

  // Subscribe errors worth retrying on the same socket: the server (or the edge
  // we reached) cannot serve live bars right now, e.g. an edge whose upstream
  // is not (yet) connected, or a core still starting.
  const RETRYABLE_ERRORS = new Set(["store_unavailable", "unavailable", "overloaded"]);

  /**
   * Length of one bar in milliseconds, or null for calendar resolutions
   * (months have no fixed length). Accepts TradingView strings: "1S", "15",
   * "1D"/"D", "1W"/"W", "1M"/"M".
   */
  function resolutionToMs(resolution) {
    const m = /^(\d*)([SDWM]?)$/i.exec(String(resolution).trim());
    if (!m) return null;
    const n = m[1] === "" ? 1 : Number(m[1]);
    switch (m[2].toUpperCase()) {
      case "S": return n * 1000;
      case "": return n * 60000;
      case "D": return n * 86400000;
      case "W": return n * 7 * 86400000;
      default: return null; // months: variable length
    }
  }

  /** Turn `{error:{code,message}}` bodies into an Error with a readable message. */
  async function httpError(response) {
    let message = `HTTP ${response.status}`;
    let code = null;
    try {
      const body = await response.json();
      if (body && body.error) {
        code = body.error.code || null;
        message = body.error.message || code || message;
      }
    } catch (_) {
      // Not JSON (e.g. a proxy error page): the status line is all we have.
    }
    const err = new Error(message);
    err.status = response.status;
    err.code = code;
    return err;
  }

  function toBar(raw) {
    return {
      time: Number(raw.time),
      open: Number(raw.open),
      high: Number(raw.high),
      low: Number(raw.low),
      close: Number(raw.close),
      volume: raw.volume == null ? 0 : Number(raw.volume),
    };
  }

  /**
   * The WebSocket URL to open for `url` under `protocol`: relative URLs are
   * resolved against the page, http(s) becomes ws(s), and v2 adds `v=2`.
   * A URL that does not parse is returned as given (the WebSocket
   * constructor then reports it).
   */
  function socketUrl(url, protocol) {
    let u;
    try {
      u = new URL(url, global.location ? global.location.href : undefined);
    } catch (_) {
      return url;
    }
    if (u.protocol === "http:") u.protocol = "ws:";
    else if (u.protocol === "https:") u.protocol = "wss:";
    if (protocol >= 2) u.searchParams.set("v", String(protocol));
    return u.toString();
  }

  /**
   * The multiplexed WebSocket. Kept separate from the datafeed so the
   * reconnect/heartbeat state machine reads on one screen.
   *
   * Subscriptions are keyed by listenerGuid (`subs`). In v2 the server names
   * a topic per subscribe (`subscribed`), and bar/reset frames carry only the
   * topic, so `topics` maps each topic to the guids listening to it. That
   * map belongs to one socket: it is rebuilt from the `subscribed` answers
   * after every reconnect.
   */
  class LiveConnection {
    constructor(urls, options) {
      this.urls = urls.slice();
      this.urlIndex = 0; // the URL the current (or next) socket uses
      this.protocol = options.protocol;
      this.opts = options;
      this.ws = null;
      this.state = STATES.CLOSED;
      this.listeners = new Set(); // connection-state callbacks
      this.subs = new Map(); // listenerGuid -> subscription
      this.topics = new Map(); // v2: topic -> Set of listenerGuids
      // v2: per guid, the subscription objects whose subscribe was sent on
      // this socket and not answered yet, oldest first. The server answers
      // subscribes in order, so the head is what a `subscribed` answers; an
      // answer for an object that is no longer the guid's subscription (it
      // was unsubscribed or replaced meanwhile) binds nothing.
      this.pending = new Map();
      // v2 asked, but this socket's server sent a v1 frame (it ignores `?v=2`):
      // it will never answer with `subscribed`, so nothing waits for one.
      this.legacyServer = false;
      this.status = { live: true, reason: null }; // the server's upstream, v2 `status`
      this.statusListeners = new Set();
      this.attempt = 0; // consecutive failed connects, drives the backoff
      this.everOpened = false;
      this.reconnectTimer = null;
      this.pingTimer = null;
      this.pongDeadline = null;
      this.stopped = false;

      // A laptop waking up or a phone regaining network should not wait out
      // a 10 s backoff: try right away.
      if (typeof window !== "undefined") {
        window.addEventListener("online", () => this.kick());
        document.addEventListener("visibilitychange", () => {
          if (document.visibilityState === "visible") this.kick();
        });
      }
    }

    /** The URL the current (or next) socket connects to, as given. */
    get url() {
      return this.urls[this.urlIndex];
    }

    onStateChange(fn) {
      this.listeners.add(fn);
      fn(this.state);
      return () => this.listeners.delete(fn);
    }

    setState(state) {
      if (state === this.state) return;
      this.state = state;
      for (const fn of this.listeners) {
        try {
          fn(state);
        } catch (e) {
          console.error("tvflux: connection listener failed", e);
        }
      }
    }

    onStatusChange(fn) {
      this.statusListeners.add(fn);
      fn({ ...this.status });
      return () => this.statusListeners.delete(fn);
    }

    setStatus(live, reason) {
      const next = { live: Boolean(live), reason: live ? null : reason == null ? null : String(reason) };
      if (next.live === this.status.live && next.reason === this.status.reason) return;
      this.status = next;
      if (next.live) console.info("tvflux: live bars resumed");
      else console.warn("tvflux: live bars paused, the server lost its upstream:", next.reason || "(no reason given)");
      for (const fn of this.statusListeners) {
        try {
          fn({ ...next });
        } catch (e) {
          console.error("tvflux: status listener failed", e);
        }
      }
    }

    /** Open the socket unless it is already open or opening. */
    ensure() {
      if (this.stopped) return;
      if (this.ws && (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING)) return;
      if (this.reconnectTimer !== null) return; // a retry is already scheduled
      this.connect();
    }

    /** Skip the remaining backoff (network came back, tab became visible). */
    kick() {
      if (this.stopped || this.reconnectTimer === null) return;
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
      this.connect();
    }

    connect() {
      this.setState(STATES.CONNECTING);
      this.forgetTopics();
      let ws;
      try {
        ws = new WebSocket(socketUrl(this.url, this.protocol));
      } catch (e) {
        // Only a malformed URL throws here; retrying would not help, but the
        // backoff keeps us from spinning and the state shows the problem
        // (and with several URLs the next one may be fine).
        console.error("tvflux: cannot open WebSocket", e);
        this.scheduleReconnect();
        return;
      }
      this.ws = ws;
      ws.onopen = () => {
        if (ws !== this.ws) return;
        this.attempt = 0;
        const isReconnect = this.everOpened;
        this.everOpened = true;
        // A pause reported by another socket (maybe another edge) says
        // nothing about this one; a server without its upstream says so.
        this.setStatus(true);
        this.setState(STATES.OPEN);
        this.startHeartbeat();
        for (const [id, sub] of this.subs) this.sendSubscribe(id, sub);
        if (isReconnect) {
          // Bars closed while we were disconnected never reached the chart;
          // only a history refetch can fill that hole.
          for (const sub of this.subs.values()) this.resetListener(sub);
        }
      };
      ws.onmessage = (event) => {
        if (ws !== this.ws) return;
        this.onMessage(event.data);
      };
      ws.onclose = () => {
        if (ws !== this.ws) return;
        this.ws = null;
        this.stopHeartbeat();
        this.scheduleReconnect();
      };
      // onerror is always followed by onclose; nothing to do here beyond
      // not letting the browser log it as unhandled.
      ws.onerror = () => {};
    }

    /** Topic bindings and unanswered subscribes belong to one socket. */
    forgetTopics() {
      this.topics.clear();
      this.pending.clear();
      this.legacyServer = false;
      for (const sub of this.subs.values()) {
        sub.topic = null;
        // A new socket subscribes everything anew (and a reconnect resets
        // every listener anyway).
        this.cancelRetry(sub);
        sub.failed = false;
        sub.failures = 0;
      }
    }

    /**
     * A subscribe of the guid's current subscription failed for a reason
     * that passes (see RETRYABLE_ERRORS): try again on this socket after a
     * backoff, or at once when the server reports `status` live. The
     * listener missed bars meanwhile, so it is reset once bars flow again.
     */
    retryLater(id, sub) {
      this.cancelRetry(sub);
      sub.failed = true;
      const { minDelayMs, maxDelayMs } = this.opts.reconnect;
      const failures = sub.failures || 0;
      const bound = Math.min(maxDelayMs, minDelayMs * 2 ** Math.min(failures, 30));
      const delay = Math.max(minDelayMs / 2, Math.random() * bound);
      sub.failures = failures + 1;
      sub.retryTimer = setTimeout(() => {
        sub.retryTimer = null;
        this.retryNow(id, sub);
      }, delay);
    }

    retryNow(id, sub) {
      this.cancelRetry(sub);
      if (this.subs.get(id) !== sub || !sub.failed) return;
      this.sendSubscribe(id, sub); // a closed socket resubscribes on open anyway
    }

    cancelRetry(sub) {
      if (sub.retryTimer != null) clearTimeout(sub.retryTimer);
      sub.retryTimer = null;
    }

    scheduleReconnect() {
      this.forgetTopics();
      this.setState(STATES.CLOSED);
      if (this.stopped) return;
      // Several edges: each reconnect goes to the next one, so a dead edge
      // costs one attempt, not a whole backoff series.
      this.urlIndex = (this.urlIndex + 1) % this.urls.length;
      const { minDelayMs, maxDelayMs } = this.opts.reconnect;
      // "Full jitter": a random delay up to the capped exponential bound, so
      // a server restart is not met by every client reconnecting in lockstep.
      // The floor keeps a dead server from being hammered.
      const bound = Math.min(maxDelayMs, minDelayMs * 2 ** this.attempt);
      const delay = Math.max(minDelayMs / 2, Math.random() * bound);
      this.attempt = Math.min(this.attempt + 1, 30);
      this.reconnectTimer = setTimeout(() => {
        this.reconnectTimer = null;
        this.connect();
      }, delay);
    }

    startHeartbeat() {
      this.stopHeartbeat();
      const { intervalMs, timeoutMs } = this.opts.heartbeat;
      this.pingTimer = setInterval(() => {
        if (!this.send({ op: "ping" })) return;
        if (this.pongDeadline === null) {
          // A half-open TCP connection (server gone, no FIN seen) never fires
          // onclose; the missing pong is the only way we notice.
          this.pongDeadline = setTimeout(() => {
            this.pongDeadline = null;
            console.warn("tvflux: no pong within", timeoutMs, "ms; reconnecting");
            this.dropSocket();
          }, timeoutMs);
        }
      }, intervalMs);
    }

    stopHeartbeat() {
      if (this.pingTimer !== null) clearInterval(this.pingTimer);
      if (this.pongDeadline !== null) clearTimeout(this.pongDeadline);
      this.pingTimer = null;
      this.pongDeadline = null;
    }

    /** Abandon the current socket now and go through the reconnect path. */
    dropSocket() {
      const ws = this.ws;
      if (!ws) return;
      this.ws = null; // handlers of the old socket become no-ops
      this.stopHeartbeat();
      try {
        ws.close();
      } catch (_) {
        // closing a broken socket may throw; we are discarding it anyway
      }
      this.scheduleReconnect();
    }

    send(message) {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
      this.ws.send(JSON.stringify(message));
      return true;
    }

    sendSubscribe(id, sub) {
      if (!this.send({ op: "subscribe", id, symbol: sub.symbol, resolution: sub.resolution })) return;
      if (this.protocol >= 2 && !this.legacyServer) {
        const queue = this.pending.get(id);
        if (queue) queue.push(sub);
        else this.pending.set(id, [sub]);
      }
    }

    /** The subscription object the oldest unanswered subscribe of `id` was for. */
    takePending(id) {
      const queue = this.pending.get(id);
      if (!queue) return undefined;
      const sub = queue.shift();
      if (queue.length === 0) this.pending.delete(id);
      return sub;
    }

    bindTopic(id, sub, topic) {
      if (sub.topic === topic) return;
      this.unbindTopic(id, sub);
      sub.topic = topic;
      const ids = this.topics.get(topic);
      if (ids) ids.add(id);
      else this.topics.set(topic, new Set([id]));
    }

    unbindTopic(id, sub) {
      if (sub.topic == null) return;
      const ids = this.topics.get(sub.topic);
      if (ids) {
        ids.delete(id);
        if (ids.size === 0) this.topics.delete(sub.topic);
      }
      sub.topic = null;
    }

    /**
     * The subscriptions a bar or reset frame is for: by topic (v2) or by
     * listenerGuid (v1). A frame nobody listens to any more (in flight
     * across an unsubscribe) yields none.
     */
    targets(msg) {
      if (msg.topic != null) {
        const ids = this.topics.get(String(msg.topic));
        if (!ids) return [];
        return [...ids].map((id) => this.subs.get(id)).filter(Boolean);
      }
      if (msg.id == null) return [];
      if (this.protocol >= 2 && !this.legacyServer) {
        this.legacyServer = true;
        this.pending.clear();
      }
      const sub = this.subs.get(String(msg.id));
      return sub ? [sub] : [];
    }

    resetListener(sub) {
      try {
        sub.onReset();
      } catch (e) {
        console.error("tvflux: onResetCacheNeededCallback failed", e);
      }
    }

    deliver(sub, raw, closed) {
      if (sub.failed) {
        // The first bar after a failed subscribe: live bars flow again, and
        // the ones missed meanwhile are only in the history.
        sub.failed = false;
        sub.failures = 0;
        this.resetListener(sub);
      }
      const bar = toBar(raw); // a copy per listener: the library may keep it
      // The Charting Library requires that onTick never goes back in time;
      // a stale frame (e.g. across a resubscribe) is dropped.
      if (sub.lastTime !== null && bar.time < sub.lastTime) return;
      sub.lastTime = bar.time;
      try {
        sub.onTick(bar, { closed });
      } catch (e) {
        console.error("tvflux: onTick failed", e);
      }
    }

    onMessage(data) {
      // Any frame proves the link is alive. A pong can sit behind a burst of
      // bar frames, so waiting for the pong itself would misjudge a busy but
      // healthy connection.
      if (this.pongDeadline !== null) {
        clearTimeout(this.pongDeadline);
        this.pongDeadline = null;
      }
      let msg;
      try {
        msg = JSON.parse(data);
      } catch (_) {
        console.warn("tvflux: ignoring non-JSON frame");
        return;
      }
      if (!msg || typeof msg !== "object") return;
      // Frames are routed by what they carry, `topic` (v2) or `id` (v1), so
      // a v2 datafeed still works against a server that ignores `?v=2`.
      switch (msg.type) {
        case "subscribed": {
          if (msg.id == null || msg.topic == null) return;
          const id = String(msg.id);
          const answered = this.takePending(id);
          const sub = this.subs.get(id);
          // Bind only if this answers the guid's current subscription (or we
          // lost track of what was asked, e.g. a frame injected by hand).
          if (sub && (answered === undefined || answered === sub)) this.bindTopic(id, sub, String(msg.topic));
          return;
        }
        case "bar": {
          if (!msg.bar) return;
          const closed = Boolean(msg.closed);
          for (const sub of this.targets(msg)) this.deliver(sub, msg.bar, closed);
          return;
        }
        case "reset": {
          for (const sub of this.targets(msg)) this.resetListener(sub);
          return;
        }
        case "status": {
          // The edge lost (or regained) its upstream. The socket itself is
          // fine, and another edge would likely be in the same state, so
          // this never triggers a reconnect; after `live: true` the server
          // sends a reset per topic, which heals the charts.
          this.setStatus(msg.live !== false, msg.reason);
          if (msg.live !== false) {
            // Subscribes refused while the server had no upstream (it has
            // no subscription to reset for them): ask again now.
            for (const [id, sub] of this.subs) if (sub.failed) this.retryNow(id, sub);
          }
          return;
        }
        case "error": {
          const err = msg.error || {};
          const id = msg.id != null ? String(msg.id) : null;
          const answered = id !== null ? this.takePending(id) : undefined; // a failed subscribe
          const sub = id !== null ? this.subs.get(id) : null;
          console.warn("tvflux: server error", id !== null ? `for ${id}` : "", err.code, err.message);
          if (sub && (answered === undefined || answered === sub)) {
            // Only subscribes are answered with an error naming the guid: the
            // server holds no subscription for it, even if it announced the
            // topic first, so frames of that topic (another guid's) are not
            // for this listener.
            this.unbindTopic(id, sub);
            if (RETRYABLE_ERRORS.has(err.code)) this.retryLater(id, sub);
            if (sub.onError) sub.onError(err);
          }
          return;
        }
        case "pong":
          return;
        default:
          // Unknown message types are ignored so the server can add new
          // ones without breaking deployed pages.
          return;
      }
    }

    subscribe(id, sub) {
      const old = this.subs.get(id);
      if (old) {
        this.unbindTopic(id, old); // the server replaces it; its answer rebinds
        this.cancelRetry(old);
      }
      sub.topic = null;
      this.subs.set(id, sub);
      this.ensure();
      this.sendSubscribe(id, sub); // no-op while connecting; onopen sends it
    }

    unsubscribe(id) {
      const sub = this.subs.get(id);
      if (!sub) return;
      this.subs.delete(id);
      this.unbindTopic(id, sub);
      this.cancelRetry(sub);
      this.send({ op: "unsubscribe", id });
    }

    close() {
      this.stopped = true;
      if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
      this.stopHeartbeat();
      const ws = this.ws;
      this.ws = null;
      if (ws) ws.close();
      this.forgetTopics();
      this.setState(STATES.CLOSED);
    }
  }

  class TvfluxDatafeed {
    /**
     * @param {object} [options]
     * @param {string} [options.baseUrl]  HTTP origin of the service, "" = same origin.
     * @param {string} [options.wsUrl]    WebSocket URL of `/ws`; derived from the page URL when omitted.
     * @param {string[]} [options.wsUrls] Several `/ws` URLs (edge processes): each reconnect tries
     *                                    the next one, round robin. Takes precedence over wsUrl.
     * @param {1|2} [options.protocol]    Live protocol; 2 (default) opens `/ws?v=2`, 1 the old protocol.
     * @param {(status:{live:boolean,reason:?string}) => void} [options.onStatus]
     *                                    Called when the server reports losing/regaining its upstream.
     * @param {{minDelayMs:number,maxDelayMs:number}} [options.reconnect]
     * @param {{intervalMs:number,timeoutMs:number}} [options.heartbeat]
     */
    constructor(options = {}) {
      this.baseUrl = (options.baseUrl || "").replace(/\/+$/, "");
      const urls = Array.isArray(options.wsUrls) ? options.wsUrls.filter((u) => u).map(String) : [];
      if (urls.length === 0) urls.push(options.wsUrl || TvfluxDatafeed.defaultWsUrl(this.baseUrl));
      this.wsUrls = urls;
      this.wsUrl = urls[0];
      const protocol = options.protocol == null ? 2 : Number(options.protocol);
      if (protocol !== 1 && protocol !== 2) throw new TypeError(`tvflux: unknown protocol ${options.protocol} (1 or 2)`);
      this.protocol = protocol;
      this.opts = {
        protocol,
        reconnect: { minDelayMs: 500, maxDelayMs: 10000, ...(options.reconnect || {}) },
        heartbeat: { intervalMs: 15000, timeoutMs: 5000, ...(options.heartbeat || {}) },
      };
      this.live = new LiveConnection(urls, this.opts);
      if (typeof options.onStatus === "function") {
        const onStatus = options.onStatus;
        let first = true; // report changes only, not the initial state
        this.live.onStatusChange((status) => {
          if (first) first = false;
          else onStatus(status);
        });
      }
      this.configPromise = null;
      this.symbolCache = new Map();
    }

    static defaultWsUrl(baseUrl) {
      const base = new URL(baseUrl || global.location.href, global.location.href);
      base.protocol = base.protocol === "https:" ? "wss:" : "ws:";
      base.pathname = "/ws";
      base.search = "";
      base.hash = "";
      return base.toString();
    }

    async fetchJson(path, params, init) {
      const url = new URL(this.baseUrl + path, global.location.href);
      if (params) {
        for (const [k, v] of Object.entries(params)) {
          if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
        }
      }
      const response = await fetch(url.toString(), { headers: { Accept: "application/json" }, ...(init || {}) });
      if (!response.ok) throw await httpError(response);
      return response.json();
    }

    /** The service configuration, fetched once and shared by every caller. */
    getConfig() {
      if (!this.configPromise) {
        this.configPromise = this.fetchJson("/udf/config").then(
          (cfg) => ({
            supports_search: true,
            supports_group_request: false,
            supports_marks: false,
            supports_timescale_marks: false,
            supports_time: true,
            exchanges: [],
            symbols_types: [],
            ...cfg,
            supported_resolutions:
              Array.isArray(cfg.supported_resolutions) && cfg.supported_resolutions.length
                ? cfg.supported_resolutions.map(String)
                : DEFAULT_RESOLUTIONS.slice(),
          }),
          (err) => {
            // Forget the failure so the next caller retries instead of
            // inheriting a rejected promise forever.
            this.configPromise = null;
            throw err;
          },
        );
      }
      return this.configPromise;
    }

    // ---- Charting Library datafeed API -------------------------------

    onReady(callback) {
      this.getConfig().then(
        // The library requires the callback to run asynchronously.
        (cfg) => setTimeout(() => callback(cfg), 0),
        (err) => {
          console.error("tvflux: /udf/config failed, using defaults:", err.message);
          setTimeout(() => callback({ supported_resolutions: DEFAULT_RESOLUTIONS.slice(), supports_search: true, supports_time: true }), 0);
        },
      );
    }

    searchSymbols(userInput, exchange, symbolType, onResult) {
      this.fetchJson("/udf/search", { query: userInput || "", type: symbolType || "", exchange: exchange || "", limit: 30 }).then(
        (items) => {
          const list = Array.isArray(items) ? items : [];
          onResult(
            list.map((it) => ({
              symbol: it.symbol,
              full_name: it.full_name || it.symbol,
              description: it.description || "",
              exchange: it.exchange || "",
              ticker: it.ticker || it.symbol,
              type: it.type || "crypto",
            })),
          );
        },
        (err) => {
          // The search box has no error channel; an empty list is what the
          // user would see for "no matches" anyway.
          console.warn("tvflux: symbol search failed:", err.message);
          onResult([]);
        },
      );
    }

    resolveSymbol(symbolName, onResolve, onError) {
      this.resolveSymbolInfo(symbolName).then(
        (info) => setTimeout(() => onResolve(info), 0),
        (err) => setTimeout(() => onError(err.status === 404 || err.status === 400 ? "unknown_symbol" : err.message), 0),
      );
    }

    /** Promise flavour of resolveSymbol, used by app.js. */
    async resolveSymbolInfo(symbolName) {
      // TradingView may pass "EXCHANGE:SYMBOL"; the service knows bare tickers.
      const name = String(symbolName).includes(":") ? String(symbolName).split(":").pop() : String(symbolName);
      if (this.symbolCache.has(name)) return this.symbolCache.get(name);
      const [raw, cfg] = await Promise.all([
        this.fetchJson("/udf/symbols", { symbol: name }),
        this.getConfig().catch(() => ({ supported_resolutions: DEFAULT_RESOLUTIONS })),
      ]);
      const supported = (Array.isArray(raw.supported_resolutions) && raw.supported_resolutions.length
        ? raw.supported_resolutions
        : cfg.supported_resolutions
      ).map(String);
      // The service computes every listed resolution itself, so each one is
      // declared as a native multiplier; otherwise the library would build
      // e.g. 3D from 1D bars on its own and disagree with our aggregation.
      // The server's own lists win when it sends them.
      const list = (key, derived) => (Array.isArray(raw[key]) ? raw[key].map(String) : derived);
      const seconds = list("seconds_multipliers", supported.filter((r) => /^\d+S$/i.test(r)).map((r) => r.slice(0, -1)));
      const minutes = list("intraday_multipliers", supported.filter((r) => /^\d+$/.test(r)));
      const days = list("daily_multipliers", supported.filter((r) => /^\d*D$/i.test(r)).map((r) => r.slice(0, -1) || "1"));
      const weeks = list("weekly_multipliers", supported.filter((r) => /^\d*W$/i.test(r)).map((r) => r.slice(0, -1) || "1"));
      const months = list("monthly_multipliers", supported.filter((r) => /^\d*M$/i.test(r)).map((r) => r.slice(0, -1) || "1"));
      const ticker = raw.ticker || raw.symbol || raw.name || name;
      const info = {
        ...raw,
        name: raw.name || ticker,
        ticker,
        full_name: raw.full_name || ticker,
        description: raw.description || ticker,
        type: raw.type || "crypto",
        exchange: raw.exchange || "tvflux",
        listed_exchange: raw.listed_exchange || raw.exchange || "tvflux",
        format: "price",
        // Crypto trades around the clock; the service aligns everything to UTC.
        session: "24x7",
        timezone: "Etc/UTC",
        minmov: raw.minmov || 1,
        pricescale: Number(raw.pricescale) || 100,
        has_seconds: seconds.length > 0,
        seconds_multipliers: seconds,
        has_intraday: minutes.length > 0 || seconds.length > 0,
        intraday_multipliers: minutes,
        has_daily: days.length > 0,
        daily_multipliers: days,
        has_weekly_and_monthly: weeks.length > 0 || months.length > 0,
        weekly_multipliers: weeks,
        monthly_multipliers: months,
        has_empty_bars: false,
        visible_plots_set: "ohlcv",
        volume_precision: raw.volume_precision != null ? raw.volume_precision : 8,
        supported_resolutions: supported,
        data_status: "streaming",
      };
      this.symbolCache.set(name, info);
      return info;
    }

    getBars(symbolInfo, resolution, periodParams, onResult, onError) {
      this.fetchBars(symbolInfo.ticker || symbolInfo.name, resolution, periodParams).then(
        ({ bars, meta }) => onResult(bars, meta),
        (err) => onError(err.message),
      );
    }

    /**
     * Promise flavour of getBars. `periodParams` follows the library:
     * `{from, to, countBack, firstDataRequest}` with from/to in epoch
     * seconds, `to` exclusive, countBack taking precedence over from.
     */
    async fetchBars(symbol, resolution, periodParams) {
      const p = periodParams || {};
      const body = await this.fetchJson("/api/bars", {
        symbol,
        resolution,
        from: p.from != null ? Math.floor(p.from) : undefined,
        to: p.to != null ? Math.floor(p.to) : undefined,
        countback: p.countBack ? Math.floor(p.countBack) : undefined,
      });
      let bars = (body.bars || []).map(toBar);
      // The library silently misdraws unsorted or duplicated bars. The
      // server promises ascending unique times; if that is ever broken we
      // repair it here and say so loudly rather than show a garbled chart.
      for (let i = 1; i < bars.length; i++) {
        if (!(bars[i].time > bars[i - 1].time)) {
          console.warn("tvflux: /api/bars returned unsorted or duplicate bar times; repairing");
          const byTime = new Map(bars.map((b) => [b.time, b]));
          bars = [...byTime.values()].sort((a, b) => a.time - b.time);
          break;
        }
      }
      const meta = { noData: Boolean(body.noData) || bars.length === 0 };
      if (body.nextTime != null) meta.nextTime = Number(body.nextTime);
      return { bars, meta };
    }

    subscribeBars(symbolInfo, resolution, onTick, listenerGuid, onResetCacheNeededCallback) {
      this.live.subscribe(String(listenerGuid), {
        symbol: symbolInfo.ticker || symbolInfo.name,
        resolution: String(resolution),
        onTick,
        onReset: onResetCacheNeededCallback || (() => {}),
        lastTime: null,
        topic: null, // v2: set by the server's `subscribed` answer
        failed: false, // the last subscribe was refused for a passing reason
        failures: 0, // consecutive refusals, drives the retry backoff
        retryTimer: null,
      });
    }

    unsubscribeBars(listenerGuid) {
      this.live.unsubscribe(String(listenerGuid));
    }

    getServerTime(callback) {
      this.fetchJson("/udf/time").then(
        (t) => callback(Number(t)),
        () => {
          // Optional API: without a server clock the library uses the local one.
        },
      );
    }

    // ---- tvflux extensions --------------------------------------------

    /**
     * Connection state for a status indicator: "connecting" | "open" |
     * "closed". The callback fires immediately with the current state and
     * on every change; the return value unregisters it.
     */
    onConnectionChange(fn) {
      return this.live.onStateChange(fn);
    }

    get connectionState() {
      return this.live.state;
    }

    /**
     * Whether live bars flow (v2 `status`): `{live: true, reason: null}`, or
     * `{live: false, reason}` while the server has lost its upstream (the
     * socket stays open and bars resume by themselves). Independent of the
     * connection state: a closed socket keeps the last known status.
     */
    get status() {
      return { ...this.live.status };
    }

    /** Like onConnectionChange, for `status`: fires now and on every change. */
    onStatusChange(fn) {
      return this.live.onStatusChange(fn);
    }

    /** The URL of the current (or next) socket, as given in wsUrl/wsUrls. */
    get currentWsUrl() {
      return this.live.url;
    }

    /** Open the live socket now (otherwise it opens on the first subscribeBars). */
    connect() {
      this.live.ensure();
    }

    /** Close the socket for good (tests, page teardown). */
    destroy() {
      this.live.close();
    }
  }

  TvfluxDatafeed.STATES = STATES;
  TvfluxDatafeed.DEFAULT_RESOLUTIONS = DEFAULT_RESOLUTIONS;
  TvfluxDatafeed.resolutionToMs = resolutionToMs;
  global.TvfluxDatafeed = TvfluxDatafeed;
})(typeof window !== "undefined" ? window : globalThis);
