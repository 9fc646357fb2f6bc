// Small helpers shared by the views: DOM building (text only, never HTML from
// data), number and time formatting, field paths.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** RFC 3339 string or epoch seconds -> epoch seconds. */
export function toEpoch(t) {
  if (t == null) return null;
  if (typeof t === "number") return t;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms / 1000;
}

export function fmtTime(t) {
  const s = toEpoch(t);
  if (s == null) return "–";
  const d = new Date(s * 1000);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

export function fmtAgo(t) {
  const s = toEpoch(t);
  if (s == null) return "";
  const d = Date.now() / 1000 - s;
  if (d < 60) return `${Math.max(0, Math.round(d))} s ago`;
  if (d < 3600) return `${Math.round(d / 60)} min ago`;
  if (d < 86400) return `${Math.round(d / 3600)} h ago`;
  return `${Math.round(d / 86400)} d ago`;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
export function fmtBytes(n) {
  if (n == null || !Number.isFinite(n)) return "–";
  let i = 0;
  while (Math.abs(n) >= 1024 && i < UNITS.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : Math.round(n)} ${UNITS[i]}`;
}

export function fmtNum(n) {
  if (n == null || !Number.isFinite(n)) return "–";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(2) + "G";
  if (a >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(1) + "k";
  if (Number.isInteger(n)) return String(n);
  return n.toFixed(a < 1 ? 3 : a < 100 ? 2 : 1);
}

/** A formatter for a field path: bytes for memory and io, % for percents. */
export function formatterFor(path) {
  if (/(^|\.)(rss|vms|bytes|used|total|available|free|read_bytes|write_bytes|bytes_sent|bytes_recv)$/.test(path))
    return fmtBytes;
  if (/percent$/.test(path)) return (v) => (v == null ? "–" : `${v.toFixed(1)} %`);
  return fmtNum;
}

/** The value at a dotted path of an object ("cpu.percent"), or undefined. */
export function pick(obj, path) {
  let cur = obj;
  for (const part of path.split(".")) {
    if (cur == null || typeof cur !== "object") return undefined;
    cur = cur[part];
  }
  return cur;
}

/** Every numeric leaf of an object as a dotted path, in key order. */
export function numericPaths(obj, prefix = "", out = []) {
  if (!obj || typeof obj !== "object" || Array.isArray(obj)) return out;
  for (const [k, v] of Object.entries(obj)) {
    const p = prefix ? `${prefix}.${k}` : k;
    if (typeof v === "number") out.push(p);
    else if (v && typeof v === "object" && !Array.isArray(v)) numericPaths(v, p, out);
  }
  return out;
}

export function errorText(e) {
  if (e && e.body && e.body.detail) return `${e.body.error}: ${e.body.detail}`;
  return String(e && e.message ? e.message : e);
}

/** Runs `step` now and again `ms` after each run ends (a failure is shown in
 * `status`, and the next run tries again). `again()` runs it at once (the view's
 * filters changed); `stop()` ends the loop when the view is left. */
export function repeat(ms, status, step) {
  let timer = null;
  let stopped = false;
  async function again() {
    clearTimeout(timer);
    try {
      await step();
    } catch (e) {
      status.textContent = errorText(e);
    }
    if (!stopped) timer = setTimeout(again, ms);
  }
  again();
  return {
    again,
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
