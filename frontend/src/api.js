// The collector's HTTP API as the dashboard uses it: JSON GETs and the live
// stream. Both send the API key if one is configured (asked for on a 401 and
// kept in localStorage), which is why the stream is read with fetch rather
// than EventSource (EventSource cannot send headers).

import { sleep } from "./util.js";

const KEY = "deltawire.apiKey";

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.detail ? `${body.error}: ${body.detail}` : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function headers(extra) {
  const key = localStorage.getItem(KEY);
  return Object.assign(key ? { "X-API-Key": key } : {}, extra || {});
}

function askKey() {
  const key = window.prompt("This collector needs an API key (read role or above):");
  if (key) localStorage.setItem(KEY, key.trim());
  return !!key;
}

/** "/path?k=v&k=v2" from a params object; null, undefined and "" are left out. */
export function url(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    for (const item of Array.isArray(v) ? v : [v]) {
      if (item != null && item !== "") q.append(k, String(item));
    }
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

// Requests index.html started before this bundle ran, by URL: each is used once.
const early = window.deltawireEarly || {};

async function get(path, params, accept) {
  const u = url(path, params);
  for (let attempt = 0; ; attempt++) {
    const started = attempt === 0 && accept === "application/json" ? early[u] : undefined;
    delete early[u];
    const res = await (started || fetch(u, { headers: headers({ accept }) }));
    if (res.status === 401 && attempt === 0 && askKey()) continue;
    return res;
  }
}

export async function getJSON(path, params) {
  const res = await get(path, params, "application/json");
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

export async function getText(path, params) {
  const res = await get(path, params, "text/plain");
  if (!res.ok) throw new ApiError(res.status, null);
  return res.text();
}

/**
 * Follow GET /stream with `params` (the filters of GET /metrics): calls
 * onDoc(document) for every stored document and onState("live" |
 * "reconnecting", error?) as the connection comes and goes; reconnects with
 * a growing delay. Returns { close() }.
 */
export function openStream(params, onDoc, onState) {
  let closed = false;
  let ctrl = null;
  let delay = 500;

  async function readOnce() {
    ctrl = new AbortController();
    const res = await fetch(url("/stream", params), {
      headers: headers({ accept: "text/event-stream" }),
      signal: ctrl.signal,
      cache: "no-store",
    });
    if (!res.ok) throw new ApiError(res.status, null);
    onState("live");
    delay = 500;
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let data = [];
    let event = "message";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        let line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          // "dropped": we fell behind and the server closes; the reconnect
          // below reloads the page's window, filling what was skipped.
          if (data.length && event === "message") dispatch(data.join("\n"));
          data = [];
          event = "message";
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
        } else if (line.startsWith("event:")) {
          event = line.slice(6).trim();
        } // ":" comments (keep-alives), id: and retry: need nothing here
      }
    }
  }

  function dispatch(text) {
    let doc;
    try {
      doc = JSON.parse(text);
    } catch {
      return;
    }
    if (doc && typeof doc === "object") onDoc(doc);
  }

  (async () => {
    while (!closed) {
      try {
        await readOnce();
      } catch (e) {
        if (closed) return;
        onState("reconnecting", e);
      }
      if (closed) return;
      onState("reconnecting");
      await sleep(delay);
      delay = Math.min(delay * 2, 10000);
    }
  })();

  return {
    close() {
      closed = true;
      if (ctrl) ctrl.abort();
    },
  };
}
