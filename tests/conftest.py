"""Shared fixtures: real servers (Redis, the MongoDB-compatible server) on free
127.0.0.1 ports, started once per test session and stopped by PID."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.strategies import MAX_EXAMPLES, PROFILE

# Property tests assert what holds for all inputs, not how fast: a loaded CI machine
# must not fail them on hypothesis' timing checks (speed is `make bench`'s job).
# `make test`: at most MAX_EXAMPLES examples a property; a test that asks for a
# count passes it through tests.strategies.examples, which caps it the same way.
settings.register_profile(
    "deltawire",
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# `make fuzz` and `make soak`: every property at the count its test asks for.
settings.register_profile("thorough", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(PROFILE)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (`make test`): a worker per core and one more. Much of the suite
    waits (on a collector process starting, a paced stream, an outage), so one
    worker more than cores keeps both busy; more would pay each worker's
    collection again."""
    return (os.cpu_count() or 1) + 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with ``slow`` tests first, each module's own order kept: xdist
    (``--dist loadscope --no-loadscope-reorder``, as `make test` runs it) hands out
    modules in this order, so the long ones start at once and the short ones fill
    in around them instead of trailing at the end."""
    slow = {getattr(item, "module", None) for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: getattr(item, "module", None) not in slow)


@pytest.fixture(scope="session")
def redis_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("REDIS_URI"):
        yield os.environ["REDIS_URI"]
        return
    from deltawire.testing.servers import run_redis

    with run_redis(tmp_path_factory.mktemp("redis")) as uri:
        yield uri


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("MONGO_URI"):
        yield os.environ["MONGO_URI"]
        return
    from deltawire.testing.servers import run_ferretdb

    with run_ferretdb(tmp_path_factory.mktemp("ferretdb")) as uri:
        yield uri


@pytest.fixture
def sqlite_uri(tmp_path: pathlib.Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"
