// Inlined into collector/api/static/index.html (minified) by build.mjs: the page's
// one inline script. It is not part of the bundle because it must run first.
// A session page's first requests start here, while the bundle loads: they are
// a first load's critical path (before the stylesheet, which would hold this
// script until it has loaded). api.js takes each once, by URL, instead of
// asking again; the URLs are exactly those session.js builds (a URL that
// differs is only asked twice).
(function () {
  var m = /^\/ui\/sessions\/(.+)$/.exec(location.pathname);
  if (!m || !window.fetch) return;
  var id = decodeURIComponent(m[1]);
  var key = localStorage.getItem("deltawire.apiKey");
  var headers = { accept: "application/json" };
  if (key) headers["X-API-Key"] = key;
  var early = (window.deltawireEarly = {});
  [
    "/sessions/" + encodeURIComponent(id),
    "/metrics?" + new URLSearchParams({ session: id, kind: "sample", sort: "-timestamp", limit: "50" }),
    "/metrics?" + new URLSearchParams({ session: id, limit: "1" }),
  ].forEach(function (u) {
    early[u] = fetch(u, { headers: headers });
    early[u].catch(function () {}); // not taken up: no unhandled rejection
  });
})();
