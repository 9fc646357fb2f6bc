"""In-process API for tests: the real app over a real SQLite file, driven through
``httpx.ASGITransport`` (no socket, no subprocess)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from deltawire.collector.api import ApiConfig, Deps, LocalCache, create_app
from deltawire.collector.stores import Store, open_store


def sqlite_store(tmp_path: Path, name: str = "api.db") -> Store:
    store = open_store(f"sqlite:///{tmp_path / name}")
    store.open()
    return store


@asynccontextmanager
async def client(
    store: Store, config: ApiConfig | None = None, **headers: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Deps]]:
    deps = Deps(store, LocalCache(), config=config)
    app = create_app(deps)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as c:
        yield c, deps


def bearer(key: str) -> dict[str, Any]:
    return {"authorization": f"Bearer {key}"}
