"""Shared fixtures: real servers (Redis, the MongoDB-compatible server) on free
127.0.0.1 ports, started once per test session and stopped by PID."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Property tests assert what holds for all inputs, not how fast: a loaded CI machine
# must not fail them on hypothesis' timing checks (speed is `make bench`'s job).
settings.register_profile("deltawire", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# `make fuzz` and `make soak`: every property at the count its test asks for.
settings.register_profile("thorough", parent=settings.get_profile("deltawire"))
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "deltawire")
settings.load_profile(PROFILE)

#: `make test` runs each property with at most this many examples: the rule is
#: checked on every run, the long search is `make fuzz`'s (HYPOTHESIS_PROFILE=
#: thorough), and a failure found there stays in the example database.
MAX_EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "50"))


def _capped(current: Any) -> Any:
    if isinstance(current, settings) and current.max_examples > MAX_EXAMPLES:
        return settings(current, max_examples=MAX_EXAMPLES)
    return current


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if PROFILE != "deltawire":
        return
    for item in items:
        # @given tests keep their settings here; a state machine on its TestCase.
        fn = getattr(getattr(item, "obj", None), "__func__", getattr(item, "obj", None))
        if hasattr(fn, "_hypothesis_internal_use_settings"):
            fn._hypothesis_internal_use_settings = _capped(fn._hypothesis_internal_use_settings)
        cls = getattr(item, "cls", None)
        if cls is not None and isinstance(cls.__dict__.get("settings"), settings):
            cls.settings = _capped(cls.settings)


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
