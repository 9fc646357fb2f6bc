// The query box: a natural-language question to GET /query; shows how it was
// understood (`interpreted`) and the rows as a table or a chart.

import { getJSON } from "./api.js";
import { TimeChart } from "./chart.js";
import { h, toEpoch, fmtNum, fmtTime, errorText } from "./util.js";

const EXAMPLES = [
  "top 5 events today",
  "average cpu.percent of name process in the last hour",
  "max mem.rss of name process in the last 15 minutes",
  "count samples by host in the last 15 minutes",
];

function cellText(v) {
  if (v == null) return "";
  if (typeof v === "number") return fmtNum(v);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function table(rows) {
  const cols = [];
  for (const r of rows) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
  return h(
    "table",
    { class: "grid", id: "rows" },
    h("thead", {}, h("tr", {}, ...cols.map((c) => h("th", {}, c)))),
    h("tbody", {}, ...rows.map((r) => h("tr", {}, ...cols.map((c) => h("td", { class: typeof r[c] === "object" ? "mono" : "" }, c === "timestamp" ? fmtTime(r[c]) : cellText(r[c])))))),
  );
}

/** Rows the way a chart can show them: a time series, bars by group, or null. */
function chartable(rows) {
  if (!rows.length) return null;
  if (rows.every((r) => r.bucket != null && typeof r.value === "number")) return "time";
  if (rows.every((r) => r.timestamp != null && typeof r.value === "number")) return "time";
  if (rows.every((r) => typeof r.value === "number")) return "bars";
  return null;
}

function chart(rows, kind, box) {
  if (kind === "time") {
    const pts = rows.map((r) => [toEpoch(r.bucket ?? r.timestamp), r.value]).sort((a, b) => a[0] - b[0]);
    const plot = h("div", { class: "plot", id: "query-chart" });
    box.replaceChildren(plot);
    new TimeChart(plot, { title: "", format: fmtNum }).setPoints(pts);
    return;
  }
  const max = Math.max(...rows.map((r) => Math.abs(r.value))) || 1;
  box.replaceChildren(
    h(
      "div",
      { class: "bars", id: "query-chart" },
      ...rows.map((r) =>
        h(
          "div",
          { class: "bar-row" },
          h("span", { class: "bar-label" }, cellText(r.group ?? r.name ?? r.host ?? r.session ?? "all")),
          h("span", { class: "bar", style: `width:${(100 * Math.abs(r.value)) / max}%` }),
          h("span", { class: "bar-value" }, fmtNum(r.value)),
        ),
      ),
    ),
  );
}

export function queryView(root, query) {
  const input = h("input", { id: "prompt", name: "prompt", placeholder: "ask: average cpu.percent of host web-1 in the last hour", value: query.get("prompt") || "", autocomplete: "off" });
  const out = h("div", { id: "answer" });
  const form = h("form", { class: "ask", onsubmit: (e) => (e.preventDefault(), ask()) }, input, h("button", { type: "submit" }, "Ask"));
  const examples = h("p", { class: "examples" }, "Try: ", ...EXAMPLES.map((x) => h("a", { href: "#", onclick: (e) => (e.preventDefault(), (input.value = x), ask()) }, x)));
  root.replaceChildren(h("h1", {}, "Ask the data"), form, examples, out);

  let asking = 0;
  async function ask() {
    const prompt = input.value.trim();
    if (!prompt) return;
    history.replaceState(null, "", `/ui/query?${new URLSearchParams({ prompt })}`);
    const mine = ++asking;
    out.replaceChildren(h("p", { class: "muted" }, "asking…"));
    try {
      const res = await getJSON("/query", { prompt });
      if (mine !== asking) return;
      const rows = res.rows || [];
      const kind = chartable(rows);
      const view = h("div", { id: "view-box" });
      const showTable = () => view.replaceChildren(rows.length ? table(rows) : h("p", { class: "muted" }, "no rows"));
      const toggles = kind
        ? h("span", { class: "toggle" }, h("button", { type: "button", id: "as-table", onclick: showTable }, "Table"), h("button", { type: "button", id: "as-chart", onclick: () => chart(rows, kind, view) }, "Chart"))
        : null;
      out.replaceChildren(
        h("h2", {}, "Understood as"),
        h("pre", { id: "interpreted" }, JSON.stringify(res.interpreted, null, 2)),
        h("h2", {}, `${rows.length} row(s) `, toggles),
        view,
      );
      if (kind === "time" && rows.length > 1) chart(rows, kind, view);
      else showTable();
    } catch (e) {
      if (mine !== asking) return;
      const body = e.body || {};
      out.replaceChildren(
        h("p", { class: "error", id: "query-error" }, errorText(e)),
        body.examples ? h("p", { class: "examples" }, "Questions it understands: ", ...body.examples.map((x) => h("a", { href: "#", onclick: (ev) => (ev.preventDefault(), (input.value = x), ask()) }, x))) : null,
      );
    }
  }
  if (input.value) ask();
  input.focus();
  return () => {};
}
