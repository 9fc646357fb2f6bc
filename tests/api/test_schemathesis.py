"""Schemathesis against the API's own ``/openapi.json``: generated requests for
every operation (valid and invalid), in process (ASGI), never a 5xx, and every
answer matches the schema. Bounded: a few examples per operation.

One test runs every operation's cases (schemathesis' examples, coverage and
fuzzing phases, as its pytest plugin builds them), without that plugin
(pyproject's addopts leave it out): the plugin builds every operation's cases
while collecting, which xdist repeats in every worker, and loads schemathesis
into every worker. Here they are built once, in the worker running the test.
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

from hypothesis import HealthCheck, settings

from deltawire.collector.api import Deps, LocalCache, create_app
from deltawire.collector.stores import open_store
from deltawire.protocol import Document, Hello
from tests.strategies import examples

if TYPE_CHECKING:
    import schemathesis


@settings(
    max_examples=examples(15),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def _check(case: schemathesis.Case) -> None:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
    )

    case.call_and_validate(
        checks=[not_a_server_error, content_type_conformance, response_schema_conformance]
    )


def test_api_never_fails_and_matches_its_schema(tmp_path: pathlib.Path) -> None:
    import schemathesis
    from schemathesis.checks import load_all_checks
    from schemathesis.pytest.lazy import get_all_tests

    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    store.open()
    store.session_connected(Hello(session="s1", host="h1", agent="a"), 1_790_000_000.0)
    store.write_batch(
        [Document("s1", i, "sample", "proc", 1_790_000_000.0 + i, "h1", ("t",), {"cpu": i})
         for i in range(20)]
    )  # fmt: skip
    try:
        schema = schemathesis.openapi.from_asgi(
            "/openapi.json", create_app(Deps(store, LocalCache()))
        )
        # /stream never ends: its own tests read it with a real client.
        schema = schema.exclude(path="/stream")
        load_all_checks()
        tested, failures = [], []
        for result in get_all_tests(
            schema=schema, test_func=_check, settings=None, given_kwargs={}
        ):
            operation, test = result.ok()  # an operation schemathesis cannot build fails here
            tested.append(operation.label)
            try:
                test()
            except Exception as e:  # every operation runs; all failures are reported
                failures.append(f"{operation.label}: {type(e).__name__}: {e}")
    finally:
        store.close()
    assert len(tested) >= 10, tested
    assert not failures, "\n\n".join(failures)
