// The sessions list: live and ended sessions with host, tags, exit code;
// filters in the URL (so a filtered list can be bookmarked); refreshed every
// few seconds.

import { getJSON, ApiError } from "./api.js";
import { h, fmtTime, fmtAgo, repeat } from "./util.js";

const REFRESH_MS = 3000;
const FILTERS = ["host", "tag", "state", "exit_code"];

function apiParams(f) {
  return {
    host: f.host,
    tag: f.tag,
    connected: f.state === "live" ? "true" : null,
    ended: f.state === "ended" ? "true" : null,
    exit_code: f.exit_code,
    limit: 500,
  };
}

// The same filters applied here too: harmless where the API applied them, and
// what keeps the page useful against a collector whose /sessions has none.
function matches(s, f) {
  if (f.host && s.host !== f.host) return false;
  if (f.tag && !(s.tags || []).includes(f.tag)) return false;
  if (f.state === "live" && !s.connected) return false;
  if (f.state === "ended" && !s.ended) return false;
  if (f.exit_code !== "" && f.exit_code != null && String(s.exit_code) !== String(f.exit_code))
    return false;
  return true;
}

async function fetchSessions(f) {
  try {
    return (await getJSON("/sessions", apiParams(f))).items;
  } catch (e) {
    if (e instanceof ApiError && e.status === 422) return (await getJSON("/sessions", { limit: 500 })).items;
    throw e;
  }
}

function stateCell(s) {
  if (s.ended) {
    const code = s.exit_code;
    const cls = code === 0 ? "badge ok" : code == null ? "badge" : "badge bad";
    return h("span", { class: cls }, code == null ? "ended" : `exit ${code}`);
  }
  if (s.connected) return h("span", { class: "badge live" }, "● live");
  return h("span", { class: "badge" }, "disconnected");
}

export function sessionsView(root, query) {
  const f = Object.fromEntries(FILTERS.map((k) => [k, query.get(k) || ""]));
  const status = h("span", { class: "muted" });
  const tbody = h("tbody");
  const input = (name, placeholder) =>
    h("input", { name, placeholder, value: f[name], size: 14 });
  const form = h(
    "form",
    { class: "filters", onsubmit: (e) => (e.preventDefault(), apply()) },
    input("host", "host"),
    input("tag", "tag"),
    h(
      "select",
      { name: "state" },
      ...[["", "live and ended"], ["live", "live"], ["ended", "ended"]].map(([v, t]) =>
        h("option", { value: v, selected: f.state === v }, t),
      ),
    ),
    input("exit_code", "exit code"),
    h("button", { type: "submit" }, "Filter"),
    status,
  );
  form.addEventListener("change", () => apply());

  root.replaceChildren(
    h("h1", {}, "Sessions"),
    form,
    h(
      "table",
      { class: "grid", id: "sessions" },
      h("thead", {}, h("tr", {}, ...["session", "host", "tags", "state", "first seen", "last seen"].map((t) => h("th", {}, t)))),
      tbody,
    ),
  );

  function apply() {
    for (const k of FILTERS) f[k] = (form.elements[k].value || "").trim();
    const q = new URLSearchParams(Object.entries(f).filter(([, v]) => v));
    history.replaceState(null, "", q.toString() ? `/?${q}` : "/");
    loop.again();
  }

  async function step() {
    const rows = (await fetchSessions(f)).filter((s) => matches(s, f));
    tbody.replaceChildren(
      ...rows.map((s) =>
        h(
          "tr",
          { "data-session": s.session },
          h("td", {}, h("a", { href: `/ui/sessions/${encodeURIComponent(s.session)}` }, s.session)),
          h("td", {}, s.host || "–"),
          h("td", {}, ...(s.tags || []).map((t) => h("span", { class: "tag" }, t))),
          h("td", {}, stateCell(s)),
          h("td", {}, fmtTime(s.first_seen)),
          h("td", { title: fmtTime(s.last_seen) }, fmtAgo(s.last_seen)),
        ),
      ),
    );
    if (!rows.length) tbody.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No sessions yet: start one with  watchdog run -- COMMAND")));
    status.textContent = `${rows.length} session(s)`;
  }
  const loop = repeat(REFRESH_MS, status, step);
  return loop.stop;
}
