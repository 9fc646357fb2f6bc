"""Run real redis-server and FerretDB (MongoDB wire protocol) servers for tests.

Plain helpers with no pytest dependency, meant to back pytest fixtures:

    with run_ferretdb(tmp_path) as mongo_uri, run_redis(tmp_path) as redis_uri:
        ...

Each server listens on a free 127.0.0.1 port, keeps its data and log under the
given directory, and is stopped by PID (SIGTERM, wait, SIGKILL) on exit.

Binaries: redis-server from PATH (deploy/install-test-deps.sh installs it);
FerretDB from the path deploy/ferretdb/build.sh prints, built on first use
when it is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
FERRETDB_VERSION = "v1.24.2"

REPO_ROOT = Path(__file__).resolve().parents[2]
FERRETDB_BUILD_SH = REPO_ROOT / "deploy" / "ferretdb" / "build.sh"

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0  # FerretDB gives open client connections up to 3 s to go away


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(
    host: str,
    port: int,
    deadline_s: float,
    proc: subprocess.Popen | None = None,
) -> None:
    """Poll until host:port accepts TCP connections, for at most deadline_s seconds.

    With ``proc``, until proc (or a process it started) listens there: a free
    port can be taken by another program before proc binds it, and then that
    program answers. Raises TimeoutError when time runs out, or RuntimeError at
    once if proc (the server being waited for) exits first.
    """
    deadline = time.monotonic() + deadline_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process {proc.pid} exited with {proc.returncode} before {host}:{port} opened"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                if proc is None or _listens(proc.pid, port):
                    return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} did not accept connections within {deadline_s}s")
        time.sleep(0.05)


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` or one of its descendants listens on TCP ``port``."""
    import psutil

    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for p in family:
        try:
            conns = p.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns):
            return True
    return False


def stop_process(proc: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop proc by its PID: SIGTERM, wait up to timeout_s, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)


def ferretdb_binary() -> str:
    """Path of the FerretDB test server binary; runs build.sh if it is missing."""
    cache = os.environ.get("DELTAWIRE_CACHE") or str(Path.home() / ".cache" / "deltawire")
    path = Path(cache) / "bin" / f"ferretdb-{FERRETDB_VERSION}"
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    # First build downloads Go modules and takes a minute or two.
    out = subprocess.run(
        ["bash", str(FERRETDB_BUILD_SH)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    return out.strip().splitlines()[-1]


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise FileNotFoundError("redis-server not on PATH; run deploy/install-test-deps.sh")
    return path


def _log_tail(log: Path, n: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@contextlib.contextmanager
def _run_server(name: str, workdir: Path, argv_for_port, uri_for_port) -> Iterator[str]:
    """Start a server on a free port (retrying if the port was taken meanwhile)."""
    workdir.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for _attempt in range(3):
        port = free_port()
        log = workdir / f"{name}-{port}.log"
        argv: Sequence[str] = argv_for_port(port)
        with open(log, "ab") as log_f:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log_f, stderr=subprocess.STDOUT
            )
        try:
            try:
                wait_port(HOST, port, START_TIMEOUT_S, proc)
            except (RuntimeError, TimeoutError) as e:
                last_error = RuntimeError(f"{name} failed to start: {e}\n{_log_tail(log)}")
                continue
            yield uri_for_port(port)
            return
        finally:
            stop_process(proc)
    assert last_error is not None
    raise last_error


def run_redis(tmpdir: str | os.PathLike) -> contextlib.AbstractContextManager[str]:
    """Context manager: a throwaway redis-server; yields 'redis://127.0.0.1:PORT/0'."""
    workdir = Path(tmpdir)
    binary = redis_binary()

    def argv(port: int) -> list[str]:
        data = workdir / f"redis-data-{port}"
        data.mkdir(parents=True, exist_ok=True)
        return [
            binary,
            "--bind", HOST,
            "--port", str(port),
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(data),
            "--logfile", "",
            "--loglevel", "warning",
        ]  # fmt: skip

    return _run_server("redis", workdir, argv, lambda port: f"redis://{HOST}:{port}/0")


def run_ferretdb(tmpdir: str | os.PathLike) -> contextlib.AbstractContextManager[str]:
    """Context manager: a throwaway FerretDB (SQLite backend); yields 'mongodb://127.0.0.1:PORT/'."""
    workdir = Path(tmpdir)
    binary = ferretdb_binary()

    def argv(port: int) -> list[str]:
        return [
            binary,
            "-listen", f"{HOST}:{port}",
            "-dir", str(workdir / f"ferretdb-data-{port}"),
            "-log-level", "warn",
        ]  # fmt: skip

    return _run_server("ferretdb", workdir, argv, lambda port: f"mongodb://{HOST}:{port}/")


def is_ferretdb(client: Any) -> bool:
    """True if the pymongo client talks to FerretDB rather than MongoDB (buildInfo has ferretdbVersion)."""
    info = client.admin.command("buildInfo")
    return "ferretdbVersion" in info or "ferretdbFeatures" in info


@contextlib.contextmanager
def ferretdb_at(port: int, data_dir: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """FerretDB on a given port and data directory, stopped by PID on exit.

    run_ferretdb picks a new port (and data directory) each time; an outage
    test needs the same server back where it was.
    """
    with open(log, "ab") as log_f:
        proc = subprocess.Popen(
            [ferretdb_binary(), "-listen", f"{HOST}:{port}", "-dir", str(data_dir),
             "-log-level", "warn"],
            stdin=subprocess.DEVNULL, stdout=log_f, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_port(HOST, port, START_TIMEOUT_S, proc)
        yield proc
    finally:
        stop_process(proc)
