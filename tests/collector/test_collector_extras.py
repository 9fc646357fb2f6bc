"""TLS ingest, --capture-dir, and `collector replay` of the committed captures,
against real collector processes."""

from __future__ import annotations

import pathlib
import ssl
import subprocess
import sys

import orjson
import pytest
import trio
import trustme

from deltawire.collector.stores import MetricQuery, open_store
from deltawire.testing.harness import REPO, Client, collector_process, wait_until

pytestmark = pytest.mark.slow

CAPTURES = pathlib.Path(__file__).parents[1] / "captures"


async def test_tls_ingest(tmp_path: pathlib.Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    with collector_process(
        tmp_path, "--tls-cert", str(cert_file), "--tls-key", str(key_file)
    ) as col:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        tcp = await trio.open_tcp_stream("127.0.0.1", col.port)
        client = Client(trio.SSLStream(tcp, ctx, server_hostname="127.0.0.1"))
        await client.send({"t": "hello", "v": 1, "session": "tls-1"},
                          {"t": "event", "seq": 0, "ts": 1, "name": "over-tls"},
                          {"t": "bye", "seq": 1, "ts": 2})  # fmt: skip
        await client.until(lambda c: c.acked >= 1)
        assert client.welcome is not None and client.errors == []
        # A plain-text client on the TLS port gets nothing stored and no crash.
        plain = await Client.connect(col.port)
        await plain.send({"t": "hello", "v": 1, "session": "plain"})
        await plain.until_closed()
        assert plain.frames == []
        tcp2 = await trio.open_tcp_stream("127.0.0.1", col.port)
        again = Client(trio.SSLStream(tcp2, ctx, server_hostname="127.0.0.1"))
        await again.send({"t": "hello", "v": 1, "session": "tls-1"})
        welcome = await again.until(lambda c: c.welcome)
        assert welcome.acked == 1


def test_capture_dir_records_inbound_bytes_and_replay_restores_them(tmp_path: pathlib.Path) -> None:
    captures = tmp_path / "captures"
    wire = (CAPTURES / "basic_session.ndjson").read_bytes()
    first = tmp_path / "first"
    first.mkdir()
    with collector_process(first, "--capture-dir", str(captures)) as col:
        proc = subprocess.run(
            [sys.executable, "-m", "deltawire.collector", "replay", str(CAPTURES / "basic_session.ndjson"),
             "--to", f"127.0.0.1:{col.port}", "--quiet"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "acked 10" in proc.stdout
        col.terminate()
    recorded = sorted(captures.glob("*.ndjson"))
    assert len(recorded) == 1 and recorded[0].read_bytes() == wire

    # Replaying the recording into a fresh collector stores the same documents.
    second = tmp_path / "second"
    second.mkdir()
    with collector_process(second) as col:
        proc = subprocess.run(
            [sys.executable, "-m", "deltawire.collector", "replay", *map(str, recorded),
             "--to", f"127.0.0.1:{col.port}", "--rate", "200"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        store = open_store(col.store_uri)
        store.open()
        try:
            docs = store.find(MetricQuery(session="golden-basic", limit=100))
        finally:
            store.close()
    expected = [e["doc"] for e in orjson.loads((CAPTURES / "basic_session.expected.json").read_bytes())
                if "doc" in e]  # fmt: skip
    assert sorted((d["seq"], d.get("data")) for d in docs) == [
        (e["seq"], e["data"]) for e in expected
    ]


@pytest.mark.parametrize("capture", sorted(CAPTURES.glob("*.ndjson")), ids=lambda p: p.stem)
def test_replay_every_committed_capture(tmp_path: pathlib.Path, capture: pathlib.Path) -> None:
    with collector_process(tmp_path) as col:
        proc = subprocess.run(
            [sys.executable, "-m", "deltawire.collector", "replay", str(capture), "--to", f"127.0.0.1:{col.port}"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = orjson.loads(capture.with_suffix(".expected.json").read_bytes())
    for code in {e["error"] for e in expected if "error" in e}:
        assert f"{code}=" in proc.stdout


def test_replay_reports_an_unreachable_collector(tmp_path: pathlib.Path) -> None:
    from deltawire.testing.servers import free_port

    proc = subprocess.run(
        [sys.executable, "-m", "deltawire.collector", "replay", str(CAPTURES / "basic_session.ndjson"),
         "--to", f"127.0.0.1:{free_port()}"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (
        proc.returncode == 1 and "cannot connect" in proc.stderr and "Traceback" not in proc.stderr
    )


def test_watchdog_over_tls(tmp_path: pathlib.Path) -> None:
    """The agent's TLS client against the collector's TLS listener, CA from a file."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    with collector_process(
        tmp_path, "--tls-cert", str(cert_file), "--tls-key", str(key_file)
    ) as col:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DELTAWIRE_CONFIG_DIR": str(tmp_path),
               "WATCHDOG_TLS_CA": str(ca_file), "WATCHDOG_SPOOL_DIR": str(tmp_path / "spool")}  # fmt: skip
        # The command runs until a process sample is stored over TLS (a
        # condition: a fixed `sleep 1` could end before a slow start sampled).
        stop = tmp_path / "stop"
        proc = subprocess.Popen(
            [sys.executable, "-m", "deltawire.watchdog", "run", "--collector", f"127.0.0.1:{col.port}",
             "--interval", "0.2", "--push-every", "1", "--session", "wd-tls", "--",
             "sh", "-c", f"while [ ! -e {stop} ]; do sleep 0.05; done"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        store = open_store(col.store_uri)
        store.open()
        try:

            def process_sample() -> bool:
                assert proc.poll() is None, "the watchdog exited early"
                docs = store.find(MetricQuery(session="wd-tls", limit=1000))
                return any(d["name"] == "process" for d in docs)

            try:
                wait_until(process_sample, 60, "a process sample stored over TLS")
            finally:
                stop.touch()
                _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            docs = store.find(MetricQuery(session="wd-tls", limit=1000))
            ended = {s["session"]: s for s in store.sessions()}["wd-tls"]
        finally:
            store.close()
    assert any(d["name"] == "process" for d in docs)
    assert ended["exit_code"] == 0


def test_a_compressed_session_is_captured_decompressed_and_replays(tmp_path: pathlib.Path) -> None:
    """The hello offers zstd: replay negotiates it and sends the rest as one
    zstd stream; the capture holds the decompressed lines, byte for byte, and
    replays into a fresh collector as the same documents."""
    lines = (CAPTURES / "basic_session.ndjson").read_bytes().splitlines(keepends=True)
    hello = orjson.loads(lines[0])
    assert hello["t"] == "hello"
    wire = orjson.dumps({**hello, "compress": ["zstd"]}) + b"\n" + b"".join(lines[1:])
    source = tmp_path / "compressed_session.ndjson"
    source.write_bytes(wire)
    captures = tmp_path / "captures"
    results = []
    for name, args in (("first", ("--capture-dir", str(captures))), ("second", ())):
        (tmp_path / name).mkdir()
        files = [source] if name == "first" else sorted(captures.glob("*.ndjson"))
        with collector_process(tmp_path / name, *args) as col:
            proc = subprocess.run(
                [sys.executable, "-m", "deltawire.collector", "replay", *map(str, files),
                 "--to", f"127.0.0.1:{col.port}", "--quiet"],
                cwd=REPO, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert "acked 10" in proc.stdout
            store = open_store(col.store_uri)
            store.open()
            try:
                results.append(store.find(MetricQuery(session="golden-basic", limit=100)))
            finally:
                store.close()
            col.terminate()
        if name == "first":
            recorded = sorted(captures.glob("*.ndjson"))
            assert len(recorded) == 1 and recorded[0].read_bytes() == wire
    expected = [e["doc"] for e in orjson.loads((CAPTURES / "basic_session.expected.json").read_bytes())
                if "doc" in e]  # fmt: skip
    for docs in results:
        assert sorted((d["seq"], d.get("data")) for d in docs) == [
            (e["seq"], e["data"]) for e in expected
        ]
