"""The dashboard: static pages served by the API port (``/``, ``/ui/...``).

The pages are built from ``frontend/`` (npm: uPlot, bundled by esbuild) into
``static/`` beside this module and committed, so serving them needs neither
Node nor a CDN. ``make web`` rebuilds them. The pages read the same public API
as any client (``/sessions``, ``/metrics``, ``/aggregate``, ``/query``,
``/stream``, ``/stats``).

The bundle and its CSS are on a first load's critical path, so they are held
in memory (gzipped once, at start) and sent without a thread hop or a disk
read; under their content-hashed URL a browser keeps them for good.
"""

from __future__ import annotations

import gzip
import hashlib
import pathlib
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "dashboard_routes"]

STATIC_DIR = pathlib.Path(__file__).with_name("static")
_BUNDLE = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
_FOREVER = "public, max-age=31536000, immutable"  # the URL changes with the content


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    gzipped: bytes
    media_type: str


def _version() -> str:
    # The assets' content hash goes into their URLs, so a browser may cache
    # them for good and still never runs an old bundle after an upgrade.
    digest = hashlib.sha256()
    for name in _BUNDLE:
        digest.update((STATIC_DIR / name).read_bytes())
    return digest.hexdigest()[:12]


def _index_html(version: str) -> bytes:
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return html.replace("{{version}}", version).encode()


def dashboard_routes() -> list[BaseRoute]:
    """Routes to add to the API app: the pages, and their assets under /static."""
    version = _version()
    page = _index_html(version)
    assets: dict[str, _Asset] = {}
    for name, media_type in _BUNDLE.items():
        body = (STATIC_DIR / name).read_bytes()
        assets[f"/static/{name}"] = _Asset(body, gzip.compress(body, 9, mtime=0), media_type)

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"cache-control": "no-cache"})

    async def asset(request: Request) -> Response:
        a = assets[request.url.path]
        current = request.query_params.get("v") == version
        headers = {"cache-control": _FOREVER if current else "no-cache", "vary": "accept-encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["content-encoding"] = "gzip"
            return Response(a.gzipped, media_type=a.media_type, headers=headers)
        return Response(a.body, media_type=a.media_type, headers=headers)

    # /ui/sessions/{id} is deltawire.links.session_url: the link `watchdog run` prints.
    return [
        Route("/", index, methods=["GET"], name="dashboard"),
        Route("/ui", index, methods=["GET"]),
        Route("/ui/{path:path}", index, methods=["GET"]),
        *(Route(path, asset, methods=["GET"]) for path in assets),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
