// One session: charts of chosen fields over a time window, events as markers,
// the end and exit code, live updates from GET /stream.
//
// Short windows read raw samples (GET /metrics, only the charted fields). Long
// windows, or a short one with more samples than RAW_LIMIT (told by the rate
// of the newest samples, so no raw page is fetched in vain), read GET
// /aggregate with a bucket, which the collector answers from its rollup
// tiers: what a chart fetches stays a few hundred points however many
// samples lie behind it.
//
// The first load is on the page's critical path (the goal: a chart in
// < 1 s with 100,000 samples behind it), so the session, its fields and its
// span are asked for at once, and the charts' data follows in one more round.

import { getJSON, openStream, ApiError } from "./api.js";
import { TimeChart } from "./chart.js";
import { h, pick, numericPaths, toEpoch, fmtTime, fmtAgo, formatterFor, errorText } from "./util.js";

const WINDOWS = [["5m", 300], ["15m", 900], ["1h", 3600], ["6h", 21600], ["24h", 86400], ["7d", 604800], ["session", null]];
const RAW_MAX_SPAN = 30 * 60; // seconds: above this always read a tier
const RAW_LIMIT = 2000; // raw samples per sample name at most (a chart is ~1200 px wide)
const TIER_BUCKETS = [[60, "1m"], [600, "10m"], [3600, "1h"], [86400, "1d"]];
const MAX_POINTS = 1500; // per chart, for a tier-backed window
const DEFAULT_FIELDS = ["process:cpu.percent", "process:mem.rss"];
const HOST_FIELDS = ["system:cpu.percent", "system:mem.percent"];
const MAX_EVENTS_SHOWN = 200;
const LIVE_KEPT = 1000; // streamed points replayed onto a reloaded chart
const MAX_FIELDS = 32; // data paths one fields= may name (the API's cap)
const RECENT = 50; // newest samples read to learn the fields and the sample rate (index.html asks
// for these first URLs before the bundle runs: keep the two in step)

/** The bucket for a span: a rollup tier's width, or seconds for a short span. */
export function bucketFor(span) {
  if (span > RAW_MAX_SPAN) {
    for (const [sec, label] of TIER_BUCKETS) if (span / sec <= MAX_POINTS) return { sec, label };
    return { sec: 86400, label: "1d" };
  }
  const sec = Math.max(1, Math.ceil(span / 600));
  return { sec, label: `${sec}s` };
}

async function fetchSession(id) {
  try {
    return await getJSON(`/sessions/${encodeURIComponent(id)}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404 && e.body && e.body.error === "not_found" && /session/i.test(e.body.detail || ""))
      return null;
    // A collector without GET /sessions/{id}: find it in the list.
    const all = await getJSON("/sessions", { limit: 10000 }).catch(() => ({ items: [] }));
    return all.items.find((s) => s.session === id) || null;
  }
}

function endOf(s) {
  if (!s || !s.ended) return null;
  return toEpoch(s.ended_at) ?? toEpoch(s.ended) ?? toEpoch(s.last_seen);
}

function exitText(s) {
  if (s.exit_code != null) return `exit ${s.exit_code}`;
  if (s.signal) return `killed by ${s.signal}`;
  if (s.reason) return s.reason;
  return "ended";
}

export function sessionView(root, id, query) {
  const chosen = (query.get("fields") || "").split(",").filter(Boolean);
  let windowName = query.get("window") || "";
  let session = null;
  const dataSpan = { first: null, last: null }; // epoch seconds of the oldest and newest sample
  const rates = new Map(); // sample name -> samples per second, from the newest samples
  let charts = []; // {spec: "name:path", name, path, chart, box}
  let events = [];
  let stream = null;
  let stopped = false;

  const header = h("div", { class: "session-head" });
  const picker = h("div", { class: "picker" });
  const windowSel = h("select", { id: "window" }, ...WINDOWS.map(([n]) => h("option", { value: n }, n === "session" ? "whole session" : `last ${n}`)));
  const liveBadge = h("span", { id: "live", class: "muted" });
  const chartsBox = h("div", { id: "charts" });
  const eventsBody = h("tbody");
  const note = h("div", { class: "muted", id: "note" });

  root.replaceChildren(
    header,
    h("div", { class: "toolbar" }, h("label", {}, "Window ", windowSel), liveBadge, note),
    picker,
    chartsBox,
    h("h2", {}, "Events"),
    h("table", { class: "grid", id: "events" }, h("thead", {}, h("tr", {}, h("th", {}, "time"), h("th", {}, "event"), h("th", {}, "data"))), eventsBody),
  );

  function renderHeader() {
    const s = session || { session: id };
    const waiting = session ? null : h("p", { class: "muted" }, "Not seen yet: it appears here as soon as its watchdog connects.");
    const end = endOf(s);
    const state = s.ended
      ? h("span", { class: `badge ${s.exit_code === 0 ? "ok" : "bad"}`, id: "state" }, exitText(s))
      : s.connected
        ? h("span", { class: "badge live", id: "state" }, "● live")
        : h("span", { class: "badge", id: "state" }, session ? "disconnected" : "waiting");
    header.replaceChildren(
      h("h1", {}, h("a", { href: "/" }, "Sessions"), " / ", h("span", { class: "mono" }, id), " ", state),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "host"), h("dd", {}, s.host || "–"),
        h("dt", {}, "tags"), h("dd", {}, ...(s.tags || []).map((t) => h("span", { class: "tag" }, t))),
        h("dt", {}, "started"), h("dd", {}, fmtTime(s.first_seen)),
        h("dt", {}, end ? "ended" : "last seen"), h("dd", {}, end ? `${fmtTime(end)} (${exitText(s)})` : fmtAgo(s.last_seen)),
        s.agent ? [h("dt", {}, "agent"), h("dd", {}, s.agent)] : null,
      ),
      ...(waiting ? [waiting] : []), // replaceChildren would print a null as "null"
    );
  }

  function range() {
    const now = Date.now() / 1000;
    const w = WINDOWS.find(([n]) => n === windowName)[1];
    if (w != null) return { from: now - w, to: null, live: w };
    // The data's own span: a backlog delivered late has samples older than the
    // session's first_seen, and a session that is not connected stops at its
    // last document (or its end), not now.
    const first = dataSpan.first ?? toEpoch(session && session.first_seen) ?? now - 3600;
    const end = endOf(session);
    const live = session && session.connected && !session.ended;
    const last = Math.max(end ?? 0, dataSpan.last ?? 0) || null;
    return { from: first - 1, to: live || last == null ? null : last + 1, live: null };
  }

  async function discoverFields() {
    // The newest sample of each name tells which numeric fields exist; the
    // oldest and newest documents give the session's span.
    const [recent, oldest] = await Promise.all([
      getJSON("/metrics", { session: id, kind: "sample", sort: "-timestamp", limit: RECENT }),
      getJSON("/metrics", { session: id, limit: 1 }),
    ]);
    dataSpan.first = oldest.items.length ? toEpoch(oldest.items[0].timestamp) : null;
    dataSpan.last = recent.items.length ? toEpoch(recent.items[0].timestamp) : null;
    const byName = new Map();
    const stamps = new Map(); // name -> timestamps, newest first
    for (const d of recent.items) {
      if (!byName.has(d.name)) byName.set(d.name, numericPaths(d.data));
      stamps.set(d.name, [...(stamps.get(d.name) || []), toEpoch(d.timestamp)]);
    }
    for (const [name, ts] of stamps) {
      const dt = ts[0] - ts[ts.length - 1];
      if (ts.length > 1 && dt > 0) rates.set(name, (ts.length - 1) / dt);
    }
    return byName;
  }

  function renderPicker(byName) {
    const groups = [];
    for (const [name, paths] of byName) {
      groups.push(
        h(
          "details",
          { open: chosen.some((c) => c.startsWith(name + ":")) },
          h("summary", {}, `${name} fields`),
          ...paths.map((p) => {
            const spec = `${name}:${p}`;
            return h("label", { class: "field" }, h("input", { type: "checkbox", value: spec, checked: chosen.includes(spec), onchange: onPick }), p);
          }),
        ),
      );
    }
    picker.replaceChildren(...groups);
  }

  function onPick(e) {
    const spec = e.target.value;
    const i = chosen.indexOf(spec);
    if (e.target.checked && i < 0) chosen.push(spec);
    if (!e.target.checked && i >= 0) chosen.splice(i, 1);
    saveUrl();
    buildCharts();
    load();
  }

  function saveUrl() {
    const q = new URLSearchParams({ window: windowName, fields: chosen.join(",") });
    history.replaceState(null, "", `/ui/sessions/${encodeURIComponent(id)}?${q}`);
  }

  function buildCharts() {
    for (const c of charts) c.chart.destroy();
    charts = chosen.map((spec) => {
      const [name, path] = [spec.slice(0, spec.indexOf(":")), spec.slice(spec.indexOf(":") + 1)];
      const plot = h("div", { class: "plot", "data-field": spec, "data-points": "0" });
      const tier = h("span", { class: "muted tier" });
      const box = h("section", { class: "chart" }, h("div", { class: "chart-title" }, h("b", {}, `${name} · ${path}`), " ", tier), plot);
      chartsBox.append(box);
      return { spec, name, path, plot, tier, live: [], chart: new TimeChart(plot, { title: "", format: formatterFor(path) }) };
    });
    chartsBox.replaceChildren(...charts.map((c) => c.plot.parentElement));
    drawMarkers();
  }

  async function loadName(name, list, r) {
    const span = (r.to ?? Date.now() / 1000) - r.from;
    // Too many samples for raw points at the newest samples' rate: a tier (a
    // burst older than those may still overflow the page: then a tier too).
    const expected = span * (rates.get(name) ?? 0);
    if (span <= RAW_MAX_SPAN && expected <= RAW_LIMIT) {
      const fields = list.length <= MAX_FIELDS ? list.map((c) => c.path).join(",") : null;
      const page = await getJSON("/metrics", { session: id, name, kind: "sample", from: r.from.toFixed(3), to: r.to?.toFixed(3), limit: RAW_LIMIT, fields });
      if (!page.next) {
        const ts = page.items.map((d) => toEpoch(d.timestamp));
        for (const c of list) {
          const pts = [];
          page.items.forEach((d, i) => {
            const v = pick(d.data, c.path);
            if (typeof v === "number") pts.push([ts[i], v]);
          });
          show(c, pts, "raw samples", "raw");
        }
        return;
      }
    }
    const b = bucketFor(span);
    await Promise.all(
      list.map(async (c) => {
        try {
          const res = await getJSON("/aggregate", { fn: "avg", field: c.path, session: id, name, kind: "sample", bucket: b.label.endsWith("s") ? b.sec : b.label, from: r.from.toFixed(3), to: r.to?.toFixed(3) });
          const pts = res.rows.map((row) => [toEpoch(row.bucket), row.value]).filter((p) => p[0] != null && typeof p[1] === "number");
          pts.sort((a, b2) => a[0] - b2[0]);
          show(c, pts, `average per ${b.label}`, b.label);
        } catch (e) {
          // No /aggregate on this collector: the newest raw samples instead.
          const page = await getJSON("/metrics", { session: id, name, kind: "sample", from: r.from.toFixed(3), sort: "-timestamp", limit: 10000 });
          const pts = page.items.reverse().map((d) => [toEpoch(d.timestamp), pick(d.data, c.path)]).filter((p) => typeof p[1] === "number");
          show(c, pts, `newest ${pts.length} raw samples (${errorText(e)})`, "raw");
        }
      }),
    );
  }

  function show(c, pts, label, tier) {
    c.chart.windowSec = range().live;
    c.chart.setPoints(pts);
    // Points streamed while this window was being fetched: put them back.
    for (const [ts, v] of c.live) c.chart.push(ts, v);
    c.tier.textContent = label;
    c.plot.dataset.tier = tier;
  }

  let loading = 0;
  async function load() {
    const mine = ++loading;
    note.textContent = "loading…";
    const r = range();
    const byName = new Map();
    for (const c of charts) byName.set(c.name, [...(byName.get(c.name) || []), c]);
    try {
      const [ev] = await Promise.all([
        fetchEvents(r),
        ...[...byName].map(([name, list]) => loadName(name, list, r)),
      ]);
      if (mine !== loading) return;
      events = mergeEvents(ev.items, r);
      renderEvents();
      note.textContent = "";
      // Data but no session: its watchdog connected after the page asked (the
      // link is printed before it connects). Ask again rather than say
      // "waiting" over a chart until the next batch streams in.
      if (!session && charts.some((c) => c.plot.dataset.points !== "0")) {
        session = await fetchSession(id).catch(() => null);
        if (session && mine === loading) renderHeader();
      }
    } catch (e) {
      if (mine === loading) note.textContent = errorText(e);
    }
  }

  function fetchEvents(r) {
    return getJSON("/metrics", { session: id, kind: "event", from: r.from.toFixed(3), to: r.to?.toFixed(3), sort: "-timestamp", limit: MAX_EVENTS_SHOWN });
  }

  // The events fetched, and those already shown (streamed meanwhile), by id,
  // newest first, within the window: an answer read before an event was
  // stored must not take that streamed event off the page.
  function mergeEvents(fetched, r) {
    const byId = new Map();
    for (const e of [...fetched, ...events]) {
      const ts = toEpoch(e.timestamp);
      if (ts == null || ts < r.from || (r.to != null && ts >= r.to) || byId.has(e.id)) continue;
      byId.set(e.id, e);
    }
    return [...byId.values()].sort((a, b) => toEpoch(b.timestamp) - toEpoch(a.timestamp)).slice(0, MAX_EVENTS_SHOWN);
  }

  // Once the stream is live: the events stored before it was (after the
  // first load read them) come only from a read after it.
  async function loadEvents() {
    const r = range();
    const ev = await fetchEvents(r);
    events = mergeEvents(ev.items, r);
    renderEvents();
  }

  function renderEvents() {
    eventsBody.replaceChildren(
      ...events.map((d) => h("tr", {}, h("td", {}, fmtTime(d.timestamp)), h("td", {}, d.name), h("td", { class: "mono" }, d.data ? JSON.stringify(d.data) : ""))),
    );
    if (!events.length) eventsBody.append(h("tr", {}, h("td", { colspan: 3, class: "muted" }, "no events in this window")));
    drawMarkers();
  }

  function drawMarkers() {
    const marks = events.map((d) => ({ ts: toEpoch(d.timestamp), label: d.name }));
    const end = endOf(session);
    if (end != null) marks.push({ ts: end, label: exitText(session), color: "#c0392b", extend: true });
    for (const c of charts) c.chart.setMarkers(marks);
  }

  function onDoc(d) {
    const ts = toEpoch(d.timestamp);
    if (d.kind === "sample") {
      for (const c of charts) {
        if (c.name !== d.name) continue;
        const v = pick(d.data, c.path);
        if (typeof v === "number") {
          c.chart.push(ts, v);
          c.live.push([ts, v]);
          if (c.live.length > LIVE_KEPT) c.live.shift();
        }
      }
      // A page opened before its watchdog connected learns the session here.
      const wasLive = session && session.connected;
      session = session || { session: id, host: d.host, tags: d.tags, first_seen: d.timestamp };
      session.last_seen = d.timestamp;
      if (!session.ended && !wasLive) {
        session.connected = true;
        renderHeader();
      }
    } else if (d.kind === "event") {
      events = [d, ...events].slice(0, MAX_EVENTS_SHOWN);
      renderEvents();
    } else if (d.kind === "session") {
      // The bye: the session has ended; its data says how.
      session = Object.assign(session || { session: id }, { ended: true, ended_at: d.timestamp, connected: false }, d.data || {});
      renderHeader();
      drawMarkers();
    }
  }

  (async () => {
    const failed = (e) => {
      note.textContent = errorText(e);
      return null;
    };
    // Both at once: the session decides the window, the fields what to chart.
    const [known, found] = await Promise.all([fetchSession(id).catch(failed), discoverFields().catch(failed)]);
    session = known;
    if (stopped) return;
    renderHeader();
    // A live session (or one not seen yet: its watchdog is about to connect)
    // opens on its last 15 minutes, any other on its whole span.
    if (!windowName) windowName = !session || (session.connected && !session.ended) ? "15m" : "session";
    windowSel.value = windowName;
    windowSel.addEventListener("change", () => {
      windowName = windowSel.value;
      saveUrl();
      load();
    });
    const byName = found || new Map();
    if (!chosen.length) {
      const defaults = byName.has("process") ? DEFAULT_FIELDS : byName.has("system") ? HOST_FIELDS : DEFAULT_FIELDS;
      chosen.push(...defaults);
    }
    if (!byName.size) for (const spec of chosen) {
      const [n, p] = spec.split(":");
      byName.set(n, [...(byName.get(n) || []), p]);
    }
    renderPicker(byName);
    buildCharts();
    let wasLive = false;
    stream = openStream({ session: id }, onDoc, (state) => {
      liveBadge.textContent = state === "live" ? "● streaming" : "reconnecting…";
      liveBadge.className = state === "live" ? "live-on" : "muted";
      if (state === "live" && wasLive) load(); // fill what the gap missed
      else if (state === "live") loadEvents().catch((e) => (note.textContent = errorText(e)));
      if (state === "live") wasLive = true;
    });
    await load();
  })();

  return () => {
    stopped = true;
    if (stream) stream.close();
    for (const c of charts) c.chart.destroy();
  };
}
