"""Schemathesis against the API's own ``/openapi.json``: generated requests for
every operation (valid and invalid), in process (ASGI), never a 5xx, and every
answer matches the schema. Bounded: a few examples per operation."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from deltawire.collector.api import Deps, LocalCache, create_app
from deltawire.collector.stores import open_store
from deltawire.protocol import Document, Hello
from tests.strategies import examples

_TMP = Path(tempfile.mkdtemp(prefix="deltawire-schemathesis-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)


def _app():  # type: ignore[no-untyped-def]
    store = open_store(f"sqlite:///{_TMP / 'store.db'}")
    store.open()
    store.session_connected(Hello(session="s1", host="h1", agent="a"), 1_790_000_000.0)
    store.write_batch(
        [Document("s1", i, "sample", "proc", 1_790_000_000.0 + i, "h1", ("t",), {"cpu": i})
         for i in range(20)]
    )  # fmt: skip
    return create_app(Deps(store, LocalCache()))


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())
# /stream never ends: its own tests read it with a real client.
schema = schema.exclude(path="/stream")


@schema.parametrize()
@settings(
    max_examples=examples(15),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_never_fails_and_matches_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(
        checks=[not_a_server_error, content_type_conformance, response_schema_conformance]
    )
