"""deploy/: the dev-services script brings real Redis and the MongoDB-compatible
server up and down; docker-compose.yml validates where Docker Compose exists."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pymongo
import pytest
import redis

from deltawire.testing.servers import free_port

REPO = pathlib.Path(__file__).resolve().parent.parent


def _compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(
    not _compose_available(), reason="the Docker Compose CLI plugin is not installed"
)
def test_compose_file_validates() -> None:
    env = {**os.environ, "DELTAWIRE_INGEST_TOKEN": "test-token"}
    proc = subprocess.run(["docker", "compose", "-f", "deploy/docker-compose.yml", "config", "-q"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # Without the token, compose refuses rather than starting an open collector.
    env.pop("DELTAWIRE_INGEST_TOKEN")
    proc = subprocess.run(["docker", "compose", "-f", "deploy/docker-compose.yml", "config", "-q"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode != 0 and "DELTAWIRE_INGEST_TOKEN" in proc.stderr


@pytest.mark.slow
def test_dev_services_up_status_down(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "REDIS_PORT": str(free_port()), "MONGO_PORT": str(free_port()),
           "DELTAWIRE_RUN_DIR": str(tmp_path / "run")}  # fmt: skip
    script = ["bash", "deploy/dev-services.sh"]

    def run(cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*script, cmd], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=180)  # fmt: skip

    try:
        up = run("up")
        assert up.returncode == 0, up.stderr
        assert f"127.0.0.1:{env['MONGO_PORT']}" in up.stdout
        assert run("status").returncode == 0
        redis.Redis(port=int(env["REDIS_PORT"])).ping()
        client = pymongo.MongoClient(
            f"mongodb://127.0.0.1:{env['MONGO_PORT']}/", serverSelectionTimeoutMS=5000
        )
        assert client.admin.command("ping")["ok"] == 1
        client.close()
    finally:
        down = run("down")
    assert down.returncode == 0, down.stderr
    assert run("status").returncode != 0
