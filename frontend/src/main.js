// The dashboard's entry: a tiny router over location.pathname.
//   /                      sessions
//   /ui/sessions/{id}      one session
//   /ui/query              the query box
//   /ui/health             the collector's own health

import { sessionsView } from "./sessions.js";
import { sessionView } from "./session.js";
import { queryView } from "./query.js";
import { healthView } from "./health.js";
import "./style.css";

let stop = () => {};

function route() {
  stop();
  const root = document.getElementById("view");
  const path = location.pathname;
  const query = new URLSearchParams(location.search);
  let nav = "sessions";
  const m = /^\/ui\/sessions\/(.+)$/.exec(path);
  if (m) stop = sessionView(root, decodeURIComponent(m[1]), query);
  else if (path === "/ui/query") (nav = "query"), (stop = queryView(root, query));
  else if (path === "/ui/health") (nav = "health"), (stop = healthView(root, query));
  else stop = sessionsView(root, query);
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
}

// Same-origin links inside the app change the view without a page load.
document.addEventListener("click", (e) => {
  const a = e.target.closest("a[href^='/']");
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  history.pushState(null, "", a.getAttribute("href"));
  route();
});
window.addEventListener("popstate", route);
route();
