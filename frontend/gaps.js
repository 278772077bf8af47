/*
 * Gaps on the time axis: `window.TvfluxGaps`.
 *
 * Lightweight Charts places bars by index, one slot each, so a stretch
 * without trades (an outage, a deleted range, a quiet market) would vanish:
 * the bars on either side would sit next to each other. We keep it visible by
 * adding empty points ("whitespace", a time without a value) for the missing
 * buckets. The rule:
 *
 *  - A run of at least GAP_MIN_BUCKETS missing buckets between two bars is a
 *    gap; shorter runs are squeezed out, as every bar-by-index chart does for
 *    an illiquid minute or two.
 *  - A gap gets one empty slot per missing bucket, at most GAP_MAX_POINTS
 *    (about two screens). A longer gap still shows that wide, its slots
 *    spread evenly over it at bucket starts, so the axis labels across it
 *    stay true (the stretch is just drawn compressed).
 *  - All gaps of one series share a budget of WHITESPACE_BUDGET slots, spent
 *    newest gap first (what the user looks at). Gaps past the budget get
 *    GAP_MIN_BUCKETS slots: still visibly a gap, and the memory stays bounded
 *    (budget + GAP_MIN_BUCKETS per bar), however sparse the symbol.
 *
 * Pure functions over bar start times in epoch seconds (UTC-aligned, as the
 * server sends them); `resolution` in TradingView spelling.
 */
(function (global) {
  "use strict";

  const GAP_MIN_BUCKETS = 3;
  const GAP_MAX_POINTS = 300;
  const WHITESPACE_BUDGET = 20000;

  const MONTHLY = /^(\d*)M$/i;

  /**
   * Bucket arithmetic for a resolution: `missing(t1, t2)` = buckets strictly
   * between the bars starting at t1 < t2, `at(t1, k)` = start of the k-th
   * bucket after t1. Months have no fixed length, so they count calendar
   * months (of `n` months each for "nM").
   */
  function buckets(resolution) {
    const m = MONTHLY.exec(String(resolution));
    if (m) {
      const n = Number(m[1] || 1);
      const index = (t) => {
        const d = new Date(t * 1000);
        return d.getUTCFullYear() * 12 + d.getUTCMonth();
      };
      return {
        missing: (t1, t2) => Math.max(0, Math.round((index(t2) - index(t1)) / n) - 1),
        at: (t1, k) => {
          const i = index(t1) + k * n;
          return Date.UTC(Math.floor(i / 12), i % 12, 1) / 1000;
        },
      };
    }
    const stepMs = global.TvfluxDatafeed.resolutionToMs(resolution);
    const step = stepMs ? stepMs / 1000 : null;
    if (!step) return null;
    return {
      missing: (t1, t2) => Math.max(0, Math.round((t2 - t1) / step) - 1),
      at: (t1, k) => t1 + k * step,
    };
  }

  /** The empty slots (epoch seconds) to draw between the bars at t1 < t2, given `slots` of them. */
  function fill(b, t1, missing, slots) {
    const out = new Array(slots);
    for (let i = 1; i <= slots; i++) {
      // slots === missing: every bucket; fewer: spread evenly, distinct because
      // the stride (missing + 1) / (slots + 1) is at least one bucket.
      const k = slots === missing ? i : Math.round((i * (missing + 1)) / (slots + 1));
      out[i - 1] = b.at(t1, k);
    }
    return out;
  }

  /**
   * The series data for `bars` (ascending {time, ...}): the bars themselves
   * with `{time}` whitespace points merged in where the rule above finds a
   * gap. Returns {data, gaps, points}: the merged array, the number of gaps
   * and of whitespace points.
   */
  function withGaps(bars, resolution, toPoint) {
    const b = bars.length > 1 ? buckets(resolution) : null;
    if (!b) return { data: bars.map(toPoint), gaps: 0, points: 0 };
    // Slots per gap, decided newest first so the budget goes where the user looks.
    const slots = new Array(bars.length).fill(0); // slots[i]: between bars[i-1] and bars[i]
    const missingAt = new Array(bars.length).fill(0);
    let budget = WHITESPACE_BUDGET;
    let gaps = 0;
    for (let i = bars.length - 1; i > 0; i--) {
      const missing = b.missing(bars[i - 1].time, bars[i].time);
      if (missing < GAP_MIN_BUCKETS) continue;
      gaps += 1;
      missingAt[i] = missing;
      const want = Math.min(missing, GAP_MAX_POINTS);
      if (want <= budget) {
        slots[i] = want;
        budget -= want;
      } else {
        slots[i] = GAP_MIN_BUCKETS;
      }
    }
    const data = [];
    let points = 0;
    for (let i = 0; i < bars.length; i++) {
      if (slots[i]) {
        for (const t of fill(b, bars[i - 1].time, missingAt[i], slots[i])) data.push({ time: t });
        points += slots[i];
      }
      data.push(toPoint(bars[i]));
    }
    return { data, gaps, points };
  }

  /** Whether a bar at `t2` right after the bar at `t1` opens a gap. */
  function opensGap(t1, t2, resolution) {
    const b = buckets(resolution);
    return Boolean(b) && b.missing(t1, t2) >= GAP_MIN_BUCKETS;
  }

  global.TvfluxGaps = { GAP_MIN_BUCKETS, GAP_MAX_POINTS, WHITESPACE_BUDGET, withGaps, opensGap };
})(typeof window !== "undefined" ? window : globalThis);
