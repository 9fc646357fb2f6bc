"""docs/api.md covers every endpoint the API serves, and the README links only
to files in the repository."""

from __future__ import annotations

import re
from pathlib import Path

from deltawire.collector.api import Deps, LocalCache, create_app
from deltawire.collector.api.app import ROUTE_MODULES
from deltawire.collector.stores import open_store

REPO = Path(__file__).resolve().parents[2]


def test_docs_walk_through_every_endpoint(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    deps = Deps(store, LocalCache())
    create_app(deps)
    text = (REPO / "docs" / "api.md").read_text()
    for module in ROUTE_MODULES:
        for ep in module(deps):
            example = ep.path.split("{")[0].rstrip("/")
            assert f'"$API{example}' in text, f"no curl example for {ep.method} {ep.path}"


def test_readme_links_stay_in_the_repository() -> None:
    text = (REPO / "README.md").read_text()
    assert "shared/" not in text
    for target in re.findall(r"\]\(([^)#]+)", text):
        if "://" not in target:
            assert (REPO / target).exists(), target
