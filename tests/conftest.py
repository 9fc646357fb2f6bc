"""Shared fixtures: real servers (Redis, the MongoDB-compatible server) on free
127.0.0.1 ports, started once per test session and stopped by PID."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# Property tests assert what holds for all inputs, not how fast: a loaded CI machine
# must not fail them on hypothesis' timing checks (speed is `make bench`'s job).
settings.register_profile("deltawire", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deltawire"))


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
