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


def _read_responses(s: socket.socket, n: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``n`` answers off a keep-alive connection, each framed by its content-length."""
    raw, out = b"", []
    while len(out) < n:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if sep:
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
            length = int(headers["content-length"])
            if len(rest) >= length:
                out.append((int(lines[0].split()[1]), headers, rest[:length]))
                raw = rest[length:]
                continue
        chunk = s.recv(65536)
        assert chunk, f"the connection closed after {len(out)} of {n} answers"
        raw += chunk
    return out


def test_cached_gets_answered_by_the_protocol_are_the_full_answer(api: ApiServer) -> None:
    """A held answer is written from the parser's callback (http.py): the same
    status, body and headers as the full path, in order on a keep-alive
    connection, pipelined or not, next to requests that take the full path."""
    url = b"/metrics?limit=3&sort=-timestamp"
    get = b"GET " + url + b" HTTP/1.1\r\nhost: a\r\n\r\n"
    with socket.create_connection((HOST, api.port), timeout=10) as s:
        for _ in range(2):  # computed twice: a listing is kept once asked again (admission.py)
            s.sendall(get)
            ((status, miss_headers, body),) = _read_responses(s, 1)
            assert status == 200 and miss_headers["x-cache"] == "miss"
        s.sendall(get)
        ((status, headers, again),) = _read_responses(s, 1)
        assert status == 200 and headers["x-cache"] == "hit" and again == body
        for name in ("content-type", "date"):
            assert headers[name] == miss_headers[name] or name == "date", name
        assert "date" in headers and int(headers["content-length"]) == len(body)
        # Pipelined: hits, a 404 and a POST's 405 between them, answered in order.
        s.sendall(get + get + b"GET /nope HTTP/1.1\r\nhost: a\r\n\r\n" + get
                  + b"PUT /metrics HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n" + get)  # fmt: skip
        answers = _read_responses(s, 6)
        assert [a[0] for a in answers] == [200, 200, 404, 200, 405, 200]
        assert all(a[2] == body for a in answers if a[0] == 200)
        assert orjson.loads(answers[2][2])["error"] == "not_found"
    # HTTP/1.0 (the connection closes after it) takes the full path: the same body.
    status, headers, old = _exchange(api.port, b"GET " + url + b" HTTP/1.0\r\n\r\n")
    assert status == 200 and old == body
    # Every answer counted, as the full path counts them (7 here).
    stats = api.get("/stats").text
    line = 'deltawire_api_requests_total{method="GET",route="/metrics",status="200"} '
    (count,) = [float(x[len(line) :]) for x in stats.splitlines() if x.startswith(line)]
    assert count >= 7, stats


def test_a_refused_request_still_being_sent_gets_its_answer(api: ApiServer) -> None:
    # 4 MiB of URL: the server refuses after 16 KiB while the client is still
    # sending. Closing with those bytes unread would reset the connection and
    # could discard the 414 before the client reads it; the server reads and
    # drops the rest after a FIN instead (LINGER_S), so the client finishes
    # sending and then reads the whole answer.
    got, headers, body = _exchange(
        api.port, b"GET /metrics?" + b"x" * (4 << 20) + b" HTTP/1.1\r\n\r\n"
    )
    assert got == 414 and headers["content-type"] == "application/json"
    assert orjson.loads(body)["error"] == "url_too_long"
