/*
 * Time zones for the chart page: `window.TvfluxTime`.
 *
 * Bars stay in UTC epoch seconds everywhere (the server's, the datafeed's and
 * Lightweight Charts' unit); a zone only changes how a time is *written*:
 * axis ticks, the crosshair label, the legend, the date fields and the status
 * line. Shifting the data instead (what Lightweight Charts' docs suggest)
 * would break at every daylight-saving change, where an hour repeats and bar
 * times would collide or go back in time. The cost of formatting only: tick
 * marks sit where the library puts them (UTC hour and day boundaries), each
 * labelled with its true local time.
 *
 * Bars of a day or longer are UTC calendar days, weeks and months (that is
 * how the server builds them), so they are labelled with their UTC date in
 * any zone.
 */
(function (global) {
  "use strict";

  // A short list a trader recognises (the main market centres). The browser's
  // own zone is always offered on top of it, and a stored zone that is not in
  // the list (set by an older page, or by hand) is kept and offered too.
  const ZONES = [
    "America/Los_Angeles",
    "America/Chicago",
    "America/New_York",
    "America/Toronto",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Paris",
    "Europe/Berlin",
    "Europe/Zurich",
    "Europe/Istanbul",
    "Europe/Moscow",
    "Africa/Johannesburg",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Bangkok",
    "Asia/Singapore",
    "Asia/Hong_Kong",
    "Asia/Shanghai",
    "Asia/Seoul",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
  ];

  const UTC = "UTC";
  const BROWSER = "browser"; // the stored choice "whatever zone this browser is in"

  const partsFormatters = new Map();
  const offsetFormatters = new Map();

  function isValidZone(zone) {
    if (typeof zone !== "string" || !zone) return false;
    try {
      new Intl.DateTimeFormat("en-US", { timeZone: zone });
      return true;
    } catch (_) {
      return false; // RangeError: not a zone this browser knows
    }
  }

  function browserZone() {
    try {
      const z = Intl.DateTimeFormat().resolvedOptions().timeZone;
      return isValidZone(z) ? z : UTC;
    } catch (_) {
      return UTC;
    }
  }

  /** The IANA zone a stored choice stands for ("UTC", "browser" or a zone name). */
  function resolve(choice) {
    if (choice === BROWSER) return browserZone();
    return isValidZone(choice) ? choice : UTC;
  }

  function partsFormatter(zone) {
    let f = partsFormatters.get(zone);
    if (!f) {
      f = new Intl.DateTimeFormat("en-US", {
        timeZone: zone,
        hourCycle: "h23",
        year: "numeric",
        month: "2-digit",
        day: "2-digit",
        hour: "2-digit",
        minute: "2-digit",
        second: "2-digit",
      });
      partsFormatters.set(zone, f);
    }
    return f;
  }

  /** Wall-clock parts of `epochS` in `zone`: {year, month, day, hour, minute, second}. */
  function parts(epochS, zone) {
    const out = {};
    for (const p of partsFormatter(zone).formatToParts(new Date(epochS * 1000))) {
      if (p.type !== "literal") out[p.type] = Number(p.value);
    }
    if (out.hour === 24) out.hour = 0; // engines that still say 24:00 for midnight
    return out;
  }

  const pad = (n) => String(n).padStart(2, "0");

  /** "YYYY-MM-DD" of the day `epochS` falls on in `zone`. */
  function isoDay(epochS, zone) {
    const p = parts(epochS, zone);
    return `${p.year}-${pad(p.month)}-${pad(p.day)}`;
  }

  /** "YYYY-MM-DD HH:MM" (":SS" with `seconds`) of `epochS` in `zone`. */
  function formatDateTime(epochS, zone, seconds) {
    const p = parts(epochS, zone);
    const time = `${pad(p.hour)}:${pad(p.minute)}` + (seconds ? `:${pad(p.second)}` : "");
    return `${p.year}-${pad(p.month)}-${pad(p.day)} ${time}`;
  }

  /** The zone's offset from UTC at `epochS`, in seconds (east positive). */
  function offsetS(epochS, zone) {
    const p = parts(epochS, zone);
    const wall = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second) / 1000;
    return wall - Math.floor(epochS);
  }

  /**
   * Epoch seconds of 00:00 on `isoDate` ("YYYY-MM-DD") in `zone`, or NaN.
   * Two passes find the offset in force at that midnight, not the one of the
   * UTC midnight next to it (they differ on a daylight-saving day).
   */
  function dayStart(isoDate, zone) {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(isoDate));
    if (!m) return NaN;
    const wall = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) / 1000;
    const guess = wall - offsetS(wall, zone);
    return wall - offsetS(guess, zone);
  }

  /** "UTC", "UTC+5:30", "UTC−5": the offset in force at `epochS`, for labels. */
  function offsetLabel(epochS, zone) {
    let f = offsetFormatters.get(zone);
    if (!f) {
      f = new Intl.DateTimeFormat("en-US", { timeZone: zone, timeZoneName: "shortOffset" });
      offsetFormatters.set(zone, f);
    }
    const name = f.formatToParts(new Date(epochS * 1000)).find((p) => p.type === "timeZoneName");
    const text = name ? name.value : "GMT";
    if (/^(GMT|UTC)([+-]0+(:00)?)?$/.test(text)) return UTC; // "GMT", "UTC", "GMT+0"
    return text.replace(/^GMT/, "UTC").replace("-", "\u2212");
  }

  /** A zone's name for a menu: "America/New_York" -> "New York". */
  function zoneName(zone) {
    if (zone === UTC) return UTC;
    return zone.slice(zone.lastIndexOf("/") + 1).replace(/_/g, " ");
  }

  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  /**
   * The label of an intraday axis tick at `epochS` in `zone`: its local time,
   * or its local date when it falls on a local midnight (the year at New
   * Year, the month's name on the 1st, else the day of the month).
   */
  function intradayTick(epochS, zone, seconds) {
    const p = parts(epochS, zone);
    if (p.hour === 0 && p.minute === 0 && p.second === 0) {
      if (p.month === 1 && p.day === 1) return String(p.year);
      return p.day === 1 ? MONTHS[p.month - 1] : String(p.day);
    }
    return `${pad(p.hour)}:${pad(p.minute)}` + (seconds ? `:${pad(p.second)}` : "");
  }

  global.TvfluxTime = {
    UTC,
    BROWSER,
    ZONES,
    isValidZone,
    browserZone,
    resolve,
    parts,
    isoDay,
    formatDateTime,
    offsetS,
    dayStart,
    offsetLabel,
    zoneName,
    intradayTick,
  };
})(typeof window !== "undefined" ? window : globalThis);
