"""``collector replay``: stream captured bytes to a collector, one connection per file."""

from __future__ import annotations

import pathlib
import sys
from collections import Counter
from dataclasses import dataclass, field

import click
import orjson
import trio

from deltawire.protocol import (
    NEED_DATA,
    Ack,
    ClientConnection,
    Closed,
    ErrorFrame,
    Hello,
    ProtocolError,
    Welcome,
    client_frame_from_dict,
)

__all__ = ["ReplayResult", "replay_file", "replay_files"]


@dataclass
class ReplayResult:
    path: pathlib.Path
    lines: int = 0
    last_seq: int = -1
    welcome_acked: int | None = None
    acked: int = -1
    errors: Counter[str] = field(default_factory=Counter)
    closed_by_peer: bool = False

    @property
    def ok(self) -> bool:
        fatal = {"bad_hello", "auth", "version", "frame_too_large", "overloaded", "idle",
                 "too_many_errors"}  # fmt: skip
        return self.acked >= self.last_seq and not (fatal & set(self.errors))

    def summary(self) -> str:
        errs = ", ".join(f"{k}={v}" for k, v in sorted(self.errors.items())) or "none"
        return (f"{self.path.name}: {self.lines} lines, last seq {self.last_seq}, "
                f"acked {self.acked}, errors: {errs}")  # fmt: skip


def _last_seq(lines: list[bytes]) -> int:
    last = -1
    for line in lines:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and type(obj.get("seq")) is int:
            last = max(last, obj["seq"])
    return last


def _hello_head(lines: list[bytes]) -> tuple[int, Hello | None]:
    """How many lines lead up to and include the first frame, and that frame
    if it is a valid hello."""
    for i, line in enumerate(lines):
        if line.strip():
            try:
                frame = client_frame_from_dict(orjson.loads(line))
            except (orjson.JSONDecodeError, ProtocolError, AttributeError):
                return i + 1, None
            return i + 1, frame if type(frame) is Hello else None
    return len(lines), None


async def replay_file(
    path: pathlib.Path, host: str, port: int, rate: float = 0.0, timeout: float = 30.0,
    progress: bool = False,
) -> ReplayResult:  # fmt: skip
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    result = ReplayResult(path, lines=len(lines), last_seq=_last_seq(lines))
    stream = await trio.open_tcp_stream(host, port)
    conn = ClientConnection()
    done = trio.Event()
    welcomed = trio.Event()
    # A capture holds decompressed lines. If its hello offered compression,
    # the session is replayed as it was sent: the hello, the welcome, then the
    # rest as one zstd stream; otherwise byte for byte, without waiting.
    head, hello = _hello_head(lines)

    async def read() -> None:
        try:
            while True:
                conn.receive_data(await stream.receive_some(65536))
                while True:
                    try:
                        frame = conn.next_event()
                    except ProtocolError:
                        continue
                    if frame is NEED_DATA:
                        break
                    if type(frame) is Closed:
                        result.closed_by_peer = True
                        return
                    if isinstance(frame, Welcome):
                        result.welcome_acked = frame.acked
                        welcomed.set()
                    elif isinstance(frame, Ack):
                        result.acked = max(result.acked, frame.seq)
                    elif isinstance(frame, ErrorFrame):
                        result.errors[frame.code] += 1
                    if result.acked >= result.last_seq >= 0:
                        done.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            result.closed_by_peer = True
        finally:
            done.set()
            welcomed.set()

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(read)
        bar = (
            click.progressbar(length=len(lines), label=path.name, file=sys.stderr)
            if progress
            else None
        )
        try:
            interval = 1.0 / rate if rate > 0 else 0.0
            batch = max(1, int(rate // 50)) if rate > 0 else 512
            start = trio.current_time()
            if hello is not None and hello.compress:
                await stream.send_all(conn.send_raw(b"".join(lines[:head]), hello=hello))
                with trio.move_on_after(timeout):
                    await welcomed.wait()
            else:
                head = 0
            for i in range(head, len(lines), batch):
                part = lines[i : i + batch]
                await stream.send_all(conn.send_raw(b"".join(part)))
                if bar is not None:
                    bar.update(len(part))
                if interval:
                    await trio.sleep_until(start + (i + len(part)) * interval)
            try:
                await stream.send_eof()
            except (AttributeError, trio.BrokenResourceError):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            result.closed_by_peer = True
        finally:
            if bar is not None:
                bar.render_finish()
        with trio.move_on_after(timeout):
            await done.wait()
        nursery.cancel_scope.cancel()
    return result


async def replay_files(
    files: list[pathlib.Path], host: str, port: int, rate: float, timeout: float, quiet: bool
) -> bool:
    ok = True
    for path in files:
        try:
            result = await replay_file(path, host, port, rate, timeout, progress=not quiet)
        except OSError as exc:
            click.echo(f"{path.name}: cannot connect to {host}:{port}: {exc}", err=True)
            return False
        click.echo(result.summary())
        ok = ok and result.ok
    return ok
