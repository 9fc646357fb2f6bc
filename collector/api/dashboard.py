"""The dashboard: static pages served by the API port (``/``, ``/ui/...``).

The pages are built from ``frontend/`` (npm: uPlot, bundled by esbuild) into
``static/`` beside this module and committed, so serving them needs neither
Node nor a CDN. ``make web`` rebuilds them. The pages read the same public API
as any client (``/sessions``, ``/metrics``, ``/aggregate``, ``/query``,
``/stream``, ``/stats``).
"""

from __future__ import annotations

import hashlib
import pathlib

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "dashboard_routes"]

STATIC_DIR = pathlib.Path(__file__).with_name("static")


def _index_html() -> bytes:
    # The assets' content hash goes into their URLs, so a browser may cache
    # them for good and still never runs an old bundle after an upgrade.
    digest = hashlib.sha256()
    for name in ("app.js", "app.css"):
        digest.update((STATIC_DIR / name).read_bytes())
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return html.replace("{{version}}", digest.hexdigest()[:12]).encode()


def dashboard_routes() -> list[BaseRoute]:
    """Routes to add to the API app: the pages, and their assets under /static."""
    page = _index_html()

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"cache-control": "no-cache"})

    # /ui/sessions/{id} is deltawire.links.session_url: the link `watchdog run` prints.
    return [
        Route("/", index, methods=["GET"], name="dashboard"),
        Route("/ui", index, methods=["GET"]),
        Route("/ui/{path:path}", index, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
