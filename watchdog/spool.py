"""The disk spool: every frame of a session waits here until the collector acked it.

Layout of a spool directory (``WATCHDOG_SPOOL_DIR``)::

    <root>/s-<session>/lock            flock'ed by the watchdog that owns the session
    <root>/s-<session>/state.json      session id, hello fields, seq reservation, ended
    <root>/s-<session>/<first seq>.seg append-only segment files

A segment is a run of records ``u32 length | u32 crc32(seq, payload) | u64 seq |
payload``, the payload being the orjson of one *full* sample, event or bye (the
link delta-encodes per connection, so a spool outlives any connection). A record
is written with one ``write`` to an ``O_APPEND`` file, so a crash can only tear
the last record of the last segment, which recovery drops.

Seqs are allocated here, strictly increasing per session even across restarts:
``state.json`` reserves a block ahead (one small atomic write per block instead
of one per record) and a restart continues after the reservation — a gap, which
the protocol allows.

What is left behind when a watchdog dies (SIGKILL, power loss) is an unlocked
session directory: the next watchdog adopts it and delivers it under its old
session id (see ``watchdog.agent``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import pathlib
import shutil
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
import trio

__all__ = [
    "HEADER",
    "MAX_RECORD_BYTES",
    "Cursor",
    "FsyncPolicy",
    "Record",
    "RecordKind",
    "SessionSummary",
    "Spool",
    "SpoolError",
    "SpoolLocked",
    "lock_holder",
    "session_dir",
    "session_dirs",
    "summarize",
]

log = logging.getLogger("deltawire.watchdog.spool")

#: length, crc32 over (seq bytes + payload), seq.
HEADER: Final = struct.Struct(">IIQ")
#: A length above this is garbage, not a record: no sample comes near it.
MAX_RECORD_BYTES: Final = 16 << 20
#: Seqs reserved per state write.
SEQ_BLOCK: Final = 10_000
#: Reads pull at least this much, so a cursor does one syscall per batch.
_READ_CHUNK: Final = 64 << 10
_STATE = "state.json"
_LOCK = "lock"
_SUFFIX = ".seg"

RecordKind = Literal["sample", "event", "bye"]
FsyncPolicy = Literal["always", "batch", "never"]


class SpoolError(Exception):
    """The spool cannot be used (unreadable state, disk full, ...)."""


class SpoolLocked(SpoolError):
    """Another live watchdog owns this session directory."""

    def __init__(self, directory: pathlib.Path, pid: int | None) -> None:
        owner = f"process {pid}" if pid else "another process"
        super().__init__(f"{directory} is in use by {owner}")
        self.pid = pid


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    kind: RecordKind
    ts: float
    name: str | None
    data: dict[str, Any] | None
    size: int  # bytes on disk, header included


@dataclass(slots=True)
class _Segment:
    path: pathlib.Path
    first_seq: int
    last_seq: int = -1
    count: int = 0
    size: int = 0  # bytes of valid records: readers never go past it
    file_size: int = 0  # bytes on disk, garbage included: what the bound counts
    alive: bool = True
    frozen: bool = False  # recovered or corrupt: never appended to


def session_dir(root: pathlib.Path, session: str) -> pathlib.Path:
    # The prefix keeps the legal session ids "." and ".." from being paths.
    return root / f"s-{session}"


def session_dirs(root: pathlib.Path) -> list[pathlib.Path]:
    try:
        return sorted(p for p in root.iterdir() if p.name.startswith("s-") and p.is_dir())
    except FileNotFoundError:
        return []


def lock_holder(directory: pathlib.Path) -> int | None:
    """The pid of the watchdog owning ``directory``, 0 if unknown, None if free."""
    try:
        fd = os.open(directory / _LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _fsync_dir(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: pathlib.Path, data: bytes, *, sync: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if sync:
        _fsync_dir(path.parent)


def _encode(seq: int, kind: RecordKind, ts: float, name: str | None, data: Any) -> bytes:
    doc: dict[str, Any] = {"t": kind, "ts": ts}
    if name is not None:
        doc["name"] = name
    if data is not None:
        doc["data"] = data
    payload = orjson.dumps(doc)
    seq_bytes = seq.to_bytes(8, "big")
    return HEADER.pack(len(payload), zlib.crc32(payload, zlib.crc32(seq_bytes)), seq) + payload


def _decode(seq: int, payload: bytes, size: int) -> Record:
    doc = orjson.loads(payload)
    kind = doc["t"]
    if kind not in ("sample", "event", "bye"):
        raise ValueError(f"unknown record kind {kind!r}")
    return Record(seq, kind, doc["ts"], doc.get("name"), doc.get("data"), size)


def _scan(buf: bytes | memoryview, start: int = 0) -> Iterator[tuple[int, int, int]]:
    """``(offset, seq, end)`` of each intact record from ``start``; stops at the
    first torn or corrupt one (the caller compares where it stopped with the end)."""
    pos = start
    n = len(buf)
    while pos + HEADER.size <= n:
        length, crc, seq = HEADER.unpack_from(buf, pos)
        end = pos + HEADER.size + length
        if length > MAX_RECORD_BYTES or end > n:
            return
        if zlib.crc32(buf[pos + HEADER.size : end], zlib.crc32(buf[pos + 8 : pos + 16])) != crc:
            return
        yield pos, seq, end
        pos = end


class Spool:
    """One session's spool directory, owned (locked) by this process.

    Not thread-safe; the agent uses it from its one trio thread.
    """

    def __init__(
        self,
        directory: pathlib.Path,
        *,
        max_bytes: int = 256 << 20,
        segment_bytes: int | None = None,
        fsync: FsyncPolicy = "batch",
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Open (``meta`` None) or create (``meta`` = session, host, agent, tags)
        a session directory. Raises ``SpoolLocked`` if another process owns it."""
        self.directory = directory
        self.max_bytes = max_bytes
        # Dropping the oldest data happens a segment at a time: a sixteenth of
        # the bound keeps that coarse grain cheap and the loss small.
        self.segment_bytes = segment_bytes or max(1024, min(8 << 20, max_bytes // 16))
        self.fsync: FsyncPolicy = fsync
        self.segments: list[_Segment] = []
        self.total_bytes = 0
        self.acked = -1
        self.sealed = False
        self.dropped_total = 0
        self._dropped: list[int] = []  # [count, first, last] not yet reported
        self._tail: _Segment | None = None
        self._tail_fd: int | None = None
        self._dirty = False
        self._changed: trio.Event | None = None
        self._lock_fd: int | None = None
        if meta is not None:
            directory.mkdir(parents=True, exist_ok=True)
        elif not directory.is_dir():
            raise SpoolError(f"{directory}: no such spool directory")
        self._lock()
        try:
            if meta is not None and not (directory / _STATE).exists():
                self.state: dict[str, Any] = {"v": 1, "created": time.time(), "seq_reserved": 0,
                                              "ended": False, **meta}  # fmt: skip
                self._save_state()
            else:
                self.state = self._load_state()
            self._recover()
            self.next_seq = max(int(self.state.get("seq_reserved", 0)), self.last_seq + 1)
            self.committed_seq = self.next_seq - 1
            self.sealed = bool(self.state.get("ended"))
        except BaseException:
            self.close()
            raise

    # -- identity -------------------------------------------------------------
    @property
    def session(self) -> str:
        return str(self.state["session"])

    @property
    def last_seq(self) -> int:
        """Highest seq held (or ever allocated in this process), -1 if none."""
        for seg in reversed(self.segments):
            if seg.count:
                return seg.last_seq
        return getattr(self, "next_seq", 0) - 1

    @property
    def pending(self) -> int:
        """Records not yet acknowledged."""
        return sum(self._unacked(seg) for seg in self.segments)

    @property
    def done(self) -> bool:
        """Sealed (nothing more will come) and every record acknowledged."""
        return self.sealed and not any(self._unacked(seg) for seg in self.segments)

    def _unacked(self, seg: _Segment) -> int:
        if seg.count == 0 or seg.last_seq <= self.acked:
            return 0
        if self.acked < seg.first_seq:
            return seg.count
        # Seqs within a segment are consecutive: one process wrote them in a row.
        return min(seg.count, seg.last_seq - self.acked)

    # -- writing ----------------------------------------------------------------
    def append(self, kind: RecordKind, ts: float, name: str | None, data: Any) -> int:
        """Spool one full record; returns its seq. Durable per the fsync policy
        (``batch``: at the next ``commit``). Raises ``SpoolError`` (disk full...)."""
        if self.sealed:
            raise SpoolError("the session already ended")
        seq = self.next_seq
        rec = _encode(seq, kind, ts, name, data)
        if seq >= int(self.state["seq_reserved"]):
            self.state["seq_reserved"] = seq + SEQ_BLOCK
            self._save_state()
        tail, fd = self._tail_for(len(rec))
        if kind != "bye":
            # The bye may overshoot the bound by its few bytes: a drop it caused
            # could no longer be reported (nothing follows a bye).
            self._make_room(len(rec))
        try:
            written = os.write(fd, rec)
            if written != len(rec):
                raise OSError(errno.ENOSPC, "short write")
            if self.fsync == "always":
                os.fsync(fd)
        except OSError as exc:
            # Cut a torn record off so the segment stays readable.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, tail.file_size)
            raise SpoolError(f"cannot write to the spool {self.directory}: {exc}") from None
        if tail.count == 0:
            tail.first_seq = seq
        tail.count += 1
        tail.last_seq = seq
        tail.size += len(rec)
        tail.file_size += len(rec)
        self.total_bytes += len(rec)
        self.next_seq = seq + 1
        self._dirty = True
        if kind == "bye":
            self.seal()
        return seq

    def commit(self) -> None:
        """Make what was appended durable (per policy) and visible to cursors."""
        if self._dirty and self._tail_fd is not None and self.fsync == "batch":
            os.fsync(self._tail_fd)
        self._dirty = False
        self.committed_seq = self.next_seq - 1
        self._notify()

    def seal(self) -> None:
        """No more appends: the session ended (a bye was spooled)."""
        if not self.state.get("ended"):
            self.state["ended"] = True
            self._save_state()
        self.sealed = True
        self._notify()

    def unseal(self) -> None:
        """Reopen an ended session for appends (the same --session run again)."""
        self.state["ended"] = False
        self._save_state()
        self.sealed = False

    def ack(self, seq: int) -> None:
        """The collector stored everything up to ``seq``: free whole segments."""
        if seq <= self.acked:
            return
        self.acked = seq
        for seg in list(self.segments):
            if seg.count and seg.last_seq <= seq:
                self._delete(seg)
        self._notify()

    def take_dropped(self) -> tuple[int, int, int] | None:
        """``(count, first_seq, last_seq)`` dropped by the bound since last asked."""
        if not self._dropped:
            return None
        count, first, last = self._dropped
        self._dropped = []
        return count, first, last

    async def wait_changed(self) -> None:
        """Until the next commit, ack, drop or seal."""
        if self._changed is None:
            self._changed = trio.Event()
        await self._changed.wait()

    def cursor(self, after: int) -> Cursor:
        return Cursor(self, after)

    # -- lifecycle ----------------------------------------------------------------
    def close(self) -> None:
        if self._tail_fd is not None:
            if self._dirty and self.fsync != "never":
                with contextlib.suppress(OSError):
                    os.fsync(self._tail_fd)
            os.close(self._tail_fd)
            self._tail_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def destroy(self) -> None:
        """Delete the whole session directory (everything was delivered or purged)."""
        for seg in list(self.segments):
            self._delete(seg)
        if self._tail_fd is not None:
            os.close(self._tail_fd)
            self._tail_fd = None
        # Delete while still holding the lock, so no one adopts a half-removed dir.
        shutil.rmtree(self.directory, ignore_errors=True)
        self.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------
    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _lock(self) -> None:
        fd = os.open(self.directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise SpoolLocked(self.directory, int(text) if text.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _load_state(self) -> dict[str, Any]:
        path = self.directory / _STATE
        try:
            state = orjson.loads(path.read_bytes())
            if type(state) is not dict or type(state.get("session")) is not str:
                raise ValueError("no session id")
        except (OSError, ValueError) as exc:
            raise SpoolError(f"{path}: unreadable spool state ({exc})") from None
        return state

    def _save_state(self) -> None:
        _write_atomic(self.directory / _STATE, orjson.dumps(self.state),
                      sync=self.fsync != "never")  # fmt: skip

    def _recover(self) -> None:
        """Index the segments left on disk, validating every record's checksum."""
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            try:
                first = int(path.stem)
                buf = path.read_bytes()
            except (ValueError, OSError) as exc:
                log.warning("spool: skipping unreadable segment",
                            extra={"segment": str(path), "error": str(exc)})  # fmt: skip
                continue
            seg = _Segment(path, first, file_size=len(buf), frozen=True)
            for _pos, seq, end in _scan(buf):
                if seg.count == 0:
                    seg.first_seq = seq
                seg.last_seq = seq
                seg.count += 1
                seg.size = end
            if seg.size < len(buf):
                log.warning("spool: corrupt or torn data in a segment; skipping the rest of it",
                            extra={"segment": str(path), "valid_bytes": seg.size,
                                   "skipped_bytes": len(buf) - seg.size})  # fmt: skip
            if seg.count == 0:
                path.unlink(missing_ok=True)
                continue
            self.segments.append(seg)
            self.total_bytes += seg.file_size
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink(missing_ok=True)

    def _tail_for(self, n: int) -> tuple[_Segment, int]:
        tail = self._tail
        if (
            tail is not None
            and self._tail_fd is not None
            and tail.alive
            and not tail.frozen
            and (tail.file_size + n <= self.segment_bytes or tail.count == 0)
        ):
            return tail, self._tail_fd
        if self._tail_fd is not None:
            if self._dirty and self.fsync != "never":
                os.fsync(self._tail_fd)
            os.close(self._tail_fd)
            self._tail_fd = None
        seq = self.next_seq
        path = self.directory / f"{seq:020d}{_SUFFIX}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
            if self.fsync != "never":
                _fsync_dir(self.directory)
        except OSError as exc:
            raise SpoolError(f"cannot create a spool segment in {self.directory}: {exc}") from None
        seg = _Segment(path, seq)
        self.segments.append(seg)
        self._tail, self._tail_fd = seg, fd
        return seg, fd

    def _make_room(self, n: int) -> None:
        # Drop the oldest whole segments, never the one being written: the bound
        # holds to within the record being added.
        while self.total_bytes + n > self.max_bytes and len(self.segments) > 1:
            seg = self.segments[0]
            lost = self._unacked(seg)
            if lost:
                first = max(seg.first_seq, self.acked + 1)
                if self._dropped:
                    self._dropped[0] += lost
                    self._dropped[2] = seg.last_seq
                else:
                    self._dropped = [lost, first, seg.last_seq]
                self.dropped_total += lost
                log.warning("spool full: dropped the oldest unsent records",
                            extra={"session": self.session, "dropped": lost,
                                   "first_seq": first, "last_seq": seg.last_seq})  # fmt: skip
            self._delete(seg)

    def _delete(self, seg: _Segment) -> None:
        seg.alive = False
        self.segments.remove(seg)
        self.total_bytes -= seg.file_size
        if seg is self._tail:
            if self._tail_fd is not None:
                os.close(self._tail_fd)
            self._tail, self._tail_fd, self._dirty = None, None, False
        seg.path.unlink(missing_ok=True)

    def _corrupt(self, seg: _Segment, offset: int) -> None:
        """A reader met a bad record at ``offset``: never read past it again."""
        log.warning("spool: corrupt record; skipping the rest of the segment",
                    extra={"segment": str(seg.path), "offset": offset})  # fmt: skip
        seg.size = min(seg.size, offset)
        seg.frozen = True


class Cursor:
    """Reads committed records in seq order after a given seq, segment by segment.

    Survives segments being deleted under it (acked or dropped by the bound):
    it moves on to the oldest segment still holding something newer.
    """

    def __init__(self, spool: Spool, after: int) -> None:
        self.spool = spool
        self.last = after  # seq of the last record returned (or skipped as acked)
        self._seg: _Segment | None = None
        self._off = 0
        self._fd: int | None = None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def next_batch(self, max_bytes: int = _READ_CHUNK) -> list[Record]:
        """Up to about ``max_bytes`` of records (at least one if any is ready)."""
        out: list[Record] = []
        total = 0
        while total < max_bytes:
            seg = self._current()
            if seg is None:
                break
            got = self._read(seg, max_bytes - total)
            if not got:
                if self._seg is seg and self._off < seg.size:
                    break  # waiting for a commit
                continue
            out += got
            total += sum(r.size for r in got)
        return out

    def _current(self) -> _Segment | None:
        seg = self._seg
        if seg is not None and seg.alive and self._off < seg.size:
            return seg
        if seg is not None and seg.alive and seg is self.spool._tail and not seg.frozen:
            return None  # at the live end of the segment being written
        for cand in self.spool.segments:
            if (
                cand.count
                and cand.last_seq > self.last
                and cand is not seg
                and (seg is None or not seg.alive or cand.first_seq > seg.first_seq)
            ):
                self._open(cand)
                return cand
        return None

    def _open(self, seg: _Segment) -> None:
        self.close()
        self._seg, self._off = seg, 0
        try:
            self._fd = os.open(seg.path, os.O_RDONLY)
        except OSError as exc:
            log.warning("spool: cannot open segment; skipping it",
                        extra={"segment": str(seg.path), "error": str(exc)})  # fmt: skip
            self._off = seg.size  # exhausted

    def _read(self, seg: _Segment, max_bytes: int) -> list[Record]:
        if self._fd is None:
            return []
        committed = self.spool.committed_seq
        avail = seg.size - self._off
        try:
            buf = os.pread(self._fd, min(avail, max(max_bytes, _READ_CHUNK)), self._off)
            if len(buf) >= HEADER.size:
                need = HEADER.size + HEADER.unpack_from(buf, 0)[0]
                if len(buf) < need <= avail:  # one record bigger than a read
                    buf += os.pread(self._fd, need - len(buf), self._off + len(buf))
        except OSError as exc:
            log.warning("spool: cannot read segment; skipping it",
                        extra={"segment": str(seg.path), "error": str(exc)})  # fmt: skip
            self._off = seg.size
            return []
        out: list[Record] = []
        pos = 0
        for start, seq, end in _scan(buf):
            if seq > committed:
                self._off += start
                return out  # the rest waits for a commit
            if seq > self.last:
                try:
                    out.append(_decode(seq, buf[start + HEADER.size : end], end - start))
                except (ValueError, KeyError, TypeError):
                    self._off += start
                    self.spool._corrupt(seg, self._off)
                    return out
                self.last = seq
            pos = end
        self._off += pos
        rest = len(buf) - pos
        if rest:
            # The scan stopped early: fine if our read cut a record short,
            # corrupt if a whole record was there and failed its checksum.
            length = HEADER.unpack_from(buf, pos)[0] if rest >= HEADER.size else None
            cut_by_read = (
                length is not None
                and length <= MAX_RECORD_BYTES
                and rest < HEADER.size + length <= seg.size - self._off
            ) or (length is None and self._off + rest < seg.size)
            if not cut_by_read:
                self.spool._corrupt(seg, self._off)
        return out


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """What ``watchdog spool status`` shows about one session directory."""

    directory: pathlib.Path
    session: str
    owner_pid: int | None  # a live watchdog owns it; None: a backlog waiting for delivery
    records: int
    bytes: int
    first_seq: int | None
    last_seq: int | None
    oldest_ts: float | None
    ended: bool
    error: str | None = None


def summarize(directory: pathlib.Path) -> SessionSummary:
    """Read-only look at a session directory (safe while a watchdog owns it)."""
    owner = lock_holder(directory)
    name = directory.name[2:]
    try:
        state = orjson.loads((directory / _STATE).read_bytes())
        session = str(state.get("session", name))
        ended = bool(state.get("ended"))
    except (OSError, ValueError) as exc:
        return SessionSummary(directory, name, owner, 0, 0, None, None, None, False, str(exc))
    records = nbytes = 0
    first: int | None = None
    last: int | None = None
    oldest: float | None = None
    for path in sorted(directory.glob(f"*{_SUFFIX}")):
        try:
            buf = path.read_bytes()
        except OSError:
            continue
        nbytes += len(buf)
        for pos, seq, end in _scan(buf):
            if first is None:
                first = seq
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    oldest = _decode(seq, buf[pos + HEADER.size : end], end - pos).ts
            last = seq
            records += 1
    return SessionSummary(directory, session, owner, records, nbytes, first, last, oldest, ended)
