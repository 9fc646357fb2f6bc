// The collector's own health, from GET /stats (Prometheus text) polled every
// two seconds: rates are differences between two polls.

import { getText } from "./api.js";
import { TimeChart } from "./chart.js";
import { h, fmtNum, fmtBytes, repeat } from "./util.js";

const POLL_MS = 2000;
const HISTORY_SEC = 600;

/** Prometheus text -> Map(name -> [{labels, value}]). */
export function parseProm(text) {
  const out = new Map();
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const lm of m[3].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[lm[1]] = lm[2];
    const value = m[4] === "NaN" ? NaN : Number(m[4]);
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value });
  }
  return out;
}

const one = (s, name) => (s.get(name) || []).reduce((a, x) => a + (Number.isFinite(x.value) ? x.value : 0), 0);
const has = (s, name) => s.has(name);

const ACK_BUCKETS = "deltawire_ack_latency_seconds_bucket";

/** The ack-latency histogram's cumulative counts: [[le, count], ...] by le, or null. */
function ackBuckets(s) {
  const items = s.get(ACK_BUCKETS);
  if (!items || !items.length) return null;
  return items.map((x) => [x.labels.le === "+Inf" ? Infinity : Number(x.labels.le), x.value]).sort((a, b) => a[0] - b[0]);
}

/** The q-quantile (seconds) of the frames counted between two cumulative
 * histograms (prev may be null: since start), interpolated inside its bucket
 * as Prometheus' histogram_quantile does; null without frames. */
export function quantileBetween(cur, prev, q) {
  const counts = cur.map(([le, n], i) => [le, n - (prev && prev[i] && prev[i][0] === le ? prev[i][1] : 0)]);
  const total = counts.length ? counts[counts.length - 1][1] : 0;
  if (!(total > 0)) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [le, n] of counts) {
    if (n >= rank) {
      if (le === Infinity) return lower; // beyond the last bound: its value is unknown
      return lower + ((le - lower) * (rank - below)) / Math.max(1, n - below);
    }
    if (le !== Infinity) lower = le;
    below = n;
  }
  return null;
}

export function healthView(root) {
  const tiles = h("div", { class: "tiles", id: "tiles" });
  const status = h("p", { class: "muted" });
  const plot = h("div", { class: "plot", id: "ingest-chart" });
  const errors = h("tbody");
  root.replaceChildren(
    h("h1", {}, "Collector health"),
    status,
    tiles,
    h("h2", {}, "Ingest rate (documents stored per second)"),
    plot,
    h("h2", {}, "Errors by code"),
    h("table", { class: "grid" }, h("thead", {}, h("tr", {}, h("th", {}, "code"), h("th", {}, "count"))), errors),
  );
  const chart = new TimeChart(plot, { title: "", format: fmtNum, height: 180 });
  chart.windowSec = HISTORY_SEC;

  let prev = null;

  function tile(id, label, value, hint) {
    return h("div", { class: "tile", id }, h("div", { class: "tile-value" }, value), h("div", { class: "tile-label" }, label), hint ? h("div", { class: "muted small" }, hint) : null);
  }

  async function poll() {
    const text = await getText("/stats");
    const now = Date.now() / 1000;
    const s = parseProm(text);
    const cur = {
      t: now,
      stored: one(s, "deltawire_documents_stored_total"),
      frames: one(s, "deltawire_frames_in_total"),
      bytes: one(s, "deltawire_bytes_in_total"),
      acks: one(s, "deltawire_acks_sent_total"),
      batchSum: one(s, "deltawire_batch_seconds_sum"),
      batchCount: one(s, "deltawire_batch_seconds_count"),
    };
    const dt = prev ? cur.t - prev.t : 0;
    const rate = (k) => (prev && dt > 0 ? Math.max(0, (cur[k] - prev[k]) / dt) : null);
    cur.ack = ackBuckets(s);
    const ackSpan = prev && prev.ack && quantileBetween(cur.ack, prev.ack, 0.5) != null ? "last 2 s" : "since start";
    const ackPrev = ackSpan === "last 2 s" ? prev.ack : null;
    const ackP50 = cur.ack && quantileBetween(cur.ack, ackPrev, 0.5);
    const ackP99 = cur.ack && quantileBetween(cur.ack, ackPrev, 0.99);
    const dBatches = prev ? cur.batchCount - prev.batchCount : 0;
    const commitMs = dBatches > 0 ? (1000 * (cur.batchSum - prev.batchSum)) / dBatches : null;
    const protoErrors = s.get("deltawire_errors_total") || [];
    const errorTotal =
      protoErrors.reduce((a, x) => a + x.value, 0) + one(s, "deltawire_store_rejects_total") + one(s, "deltawire_api_store_errors_total") + one(s, "deltawire_connections_refused_total");
    const depth = one(s, "deltawire_queue_depth");
    const cap = one(s, "deltawire_queue_capacity");
    tiles.replaceChildren(
      tile("t-ingest", "documents stored / s", fmtNum(rate("stored")), `${fmtNum(cur.stored)} in total`),
      tile("t-frames", "frames in / s", fmtNum(rate("frames")), `${fmtBytes(rate("bytes"))}/s`),
      tile("t-conns", "connections open", fmtNum(one(s, "deltawire_connections_open")), `${fmtNum(one(s, "deltawire_connections_total"))} accepted`),
      tile("t-queue", "queue depth", has(s, "deltawire_queue_depth") ? `${fmtNum(depth)} / ${fmtNum(cap)}` : "–", `${fmtNum(one(s, "deltawire_inflight_documents"))} documents in flight`),
      cur.ack
        ? tile("t-ack", `ack latency p99 (${ackSpan})`, ackP99 == null ? "–" : `${fmtNum(ackP99 * 1000)} ms`,
            `p50 ${ackP50 == null ? "–" : fmtNum(ackP50 * 1000) + " ms"} · ${fmtNum(rate("acks"))} acks / s`)
        : tile("t-ack", "store commit (acks follow it)", commitMs == null ? "–" : `${fmtNum(commitMs)} ms`, `${fmtNum(rate("acks"))} acks / s`),
      tile("t-errors", "errors", fmtNum(errorTotal), one(s, "deltawire_throttled") ? "agents asked to slow down" : "not throttling"),
    );
    errors.replaceChildren(...protoErrors.map((x) => h("tr", {}, h("td", {}, x.labels.code || "?"), h("td", {}, fmtNum(x.value)))));
    if (!protoErrors.length) errors.append(h("tr", {}, h("td", { colspan: 2, class: "muted" }, "none")));
    const r = rate("stored");
    if (r != null) chart.push(now, r);
    const age = one(s, "deltawire_api_ingest_stats_age_seconds");
    status.textContent = has(s, "deltawire_documents_stored_total") ? `updated ${new Date().toLocaleTimeString()}` : "the ingest process has not reported yet" + (Number.isFinite(age) ? ` (${fmtNum(age)} s)` : "");
    prev = cur;
  }
  const loop = repeat(POLL_MS, status, poll);
  return () => {
    loop.stop();
    chart.destroy();
  };
}
