"""The dashboard's pages and assets as the API app serves them (no browser:
tests/api/test_dashboard_browser.py drives a real one)."""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from deltawire.collector.api import Deps, LocalCache, create_app
from deltawire.collector.api.dashboard import STATIC_DIR
from deltawire.collector.stores import open_store
from deltawire.links import dashboard_base, session_url

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
async def client(tmp_path: pathlib.Path) -> AsyncIterator[httpx.AsyncClient]:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.open()
    app = create_app(Deps(store, LocalCache()))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c
    store.close()


@pytest.mark.parametrize("path", ["/", "/ui", "/ui/query", "/ui/health", "/ui/sessions/a-b:c@d"])
async def test_every_page_is_the_app(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '<main id="view">' in r.text


async def test_assets_are_served_under_content_hashed_urls(client: httpx.AsyncClient) -> None:
    page = (await client.get("/")).text
    urls = re.findall(r'(?:src|href)="(/static/app\.(?:js|css)\?v=[0-9a-f]{12})"', page)
    assert len(urls) == 2, page
    for url in urls:
        r = await client.get(url)
        assert r.status_code == 200 and len(r.content) > 1000
    js = await client.get("/static/app.js")
    assert js.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert b"u-legend" in js.content  # the chart library (uPlot) is bundled, not fetched


async def test_the_bundle_is_gzipped_and_kept_for_good_under_its_hashed_url(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/")).text
    (js_url,) = re.findall(r'src="(/static/app\.js\?v=[0-9a-f]{12})"', page)
    r = await client.get(js_url, headers={"accept-encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert "immutable" in r.headers["cache-control"]
    assert r.content == (STATIC_DIR / "app.js").read_bytes()  # httpx undid the gzip
    assert int(r.headers["content-length"]) < len(r.content) / 2
    # Without gzip, or under a stale version: plain, and checked again next time.
    plain = await client.get(
        "/static/app.js?v=000000000000", headers={"accept-encoding": "identity"}
    )
    assert "content-encoding" not in plain.headers and plain.headers["cache-control"] == "no-cache"
    assert plain.content == r.content


async def test_no_asset_comes_from_another_origin() -> None:
    for f in STATIC_DIR.iterdir():
        text = f.read_text(encoding="utf-8")
        # A URL in a string is only ever fetched if the app loads it: none may name a host.
        assert not re.search(r"""(src|href)\s*=\s*["']https?://""", text), f.name


async def test_an_unknown_asset_is_a_json_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/static/nope.js")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


async def test_the_api_routes_are_untouched(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/sessions")).json()["items"] == []


async def test_the_printed_session_link_is_a_page(client: httpx.AsyncClient) -> None:
    url = session_url("http://test/", "h-1:x@y")
    assert url == "http://test/ui/sessions/h-1%3Ax%40y"
    assert (await client.get(url)).status_code == 200
    assert dashboard_base("0.0.0.0") == "http://127.0.0.1:8080"
    assert dashboard_base("::1", 9) == "http://[::1]:9"


def test_the_committed_build_matches_the_sources() -> None:
    # build.mjs records a hash of what it built from; a source changed since
    # means `make web` was not run before committing.
    front = REPO / "frontend"
    sources = sorted([f"src/{p.name}" for p in (front / "src").iterdir()] + ["package-lock.json"])
    digest = hashlib.sha256()
    for name in sources:
        digest.update(name.encode() + b"\0" + (front / name).read_bytes() + b"\0")
    info = json.loads((STATIC_DIR / "build-info.json").read_text(encoding="utf-8"))
    assert info["sources"] == digest.hexdigest(), "frontend/ changed: run `make web`"
