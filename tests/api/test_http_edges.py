"""The HTTP server's own edges answer JSON too (a real API process, raw sockets):
a request the parser rejects, a too-long URL, too-large headers, and headers
that never finish (slowloris)."""

from __future__ import annotations

import socket
import time

import orjson
import pytest

from deltawire.testing.servers import HOST

from .test_api import ApiServer, seed, start_api

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> ApiServer:
    tmp = tmp_path_factory.mktemp("edges")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADER_TIMEOUT", "0.5")
        server = start_api(tmp, seed(tmp / "store.db"))
    yield server  # type: ignore[misc]
    server.close()


def _exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(data)
        raw = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"BLAH\x00 / HTTP/1.1\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nbad header line\r\n\r\n", 400, "bad_request"),
        (b"GET /metrics?" + b"x" * 70_000 + b" HTTP/1.1\r\nhost: a\r\n\r\n", 414, "url_too_long"),
        (
            b"GET / HTTP/1.1\r\n" + b"x-pad: " + b"y" * 70_000 + b"\r\n\r\n",
            431,
            "headers_too_large",
        ),
    ],
)
def test_parser_errors_are_json(api: ApiServer, data: bytes, status: int, code: str) -> None:
    got, headers, body = _exchange(api.port, data)
    assert got == status
    assert headers["content-type"] == "application/json"
    assert orjson.loads(body)["error"] == code


def test_slow_headers_time_out_with_json(api: ApiServer) -> None:
    start = time.monotonic()
    got, _headers, body = _exchange(api.port, b"GET /healthz HTTP/1.1\r\nhost: a\r\n")
    assert got == 408 and orjson.loads(body)["error"] == "header_timeout"
    assert time.monotonic() - start < 5
    # A well-formed request on a fresh connection is served as usual.
    assert api.get("/healthz").json() == {"status": "ok"}


def test_not_found_and_method_errors_are_json(api: ApiServer) -> None:
    for method, path, status in [("GET", "/nope", 404), ("PUT", "/metrics", 405)]:
        r = api.client.request(method, path)
        assert r.status_code == status and r.json()["error"]
