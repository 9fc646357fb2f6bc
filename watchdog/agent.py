"""The agent: wires the supervisor, samplers, event socket, spool and link together.

One trio thread does everything: psutil reads are a fraction of a millisecond,
cheaper than handing them to a worker thread. Data flow::

    samplers / event socket -> spool (full records, seq) -> link -> collector

A session is one run of the application. When the watchdog dies before the
collector acknowledged everything (SIGKILL, power loss, collector down at exit),
the session's spool directory stays behind, unlocked; the next watchdog using the
same spool directory adopts it and delivers it under its original session id
("backlog"), rate-capped, and asks first if it is big (``WATCHDOG_REPLAY``).
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
import secrets
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psutil
import trio

from deltawire import __version__
from deltawire.protocol import SESSION_RE

from .backlog import backlog_link, deliver, open_backlogs
from .client import ENV_VAR
from .events import EventServer
from .link import Connect, Link, RateLimiter, tcp_connector
from .sampler import ProcessSampler, SystemSampler
from .spool import Spool, SpoolError, SpoolLocked, session_dir
from .supervisor import FORWARDED_SIGNALS, ExitStatus, SpawnError, Supervisor, wait_pid_exit

__all__ = [
    "AGENT",
    "SESSION_ENV_VAR",
    "Agent",
    "AgentConfig",
    "AgentError",
    "new_session_id",
    "open_agent",
    "run_agent",
    "run_session",
]

log = logging.getLogger("deltawire.watchdog.agent")

AGENT = f"deltawire-watchdog/{__version__}"
#: The child also learns its session id, e.g. to log it next to its own output.
SESSION_ENV_VAR = "DELTAWIRE_SESSION"
#: A send blocked longer than this (and than one interval) means the socket does
#: not drain: sampling slows down instead of piling up unsent data.
_CONGESTED_AFTER = 1.0
_MAX_WIDEN = 16
#: Once the command has exited, its event connections are read to their end
#: before the bye (they are normally closed already: the reads take
#: microseconds); a grandchild that keeps one open does not hold the end longer.
EVENTS_DRAIN_S = 2.0


class AgentError(Exception):
    """The watchdog cannot start; the message is for the operator."""

    def __init__(self, msg: str, exit_code: int = 1) -> None:
        super().__init__(msg)
        self.exit_code = exit_code


@dataclass
class AgentConfig:
    collector: tuple[str, int] = ("127.0.0.1", 7700)
    interval: float = 15.0
    push_every: int = 4
    session: str | None = None
    token: str = ""
    tags: tuple[str, ...] = ()
    spool_dir: pathlib.Path = pathlib.Path("spool")
    spool_max_bytes: int = 256 << 20
    fsync: Literal["always", "batch", "never"] = "batch"
    replay: Literal["auto", "manual"] = "manual"
    replay_rate: int = 128 << 10
    replay_ask_bytes: int = 16 << 20
    mounts: tuple[str, ...] = ("/",)
    keyframe_every: int = 100
    shutdown_grace: float = 5.0
    tls: bool = False
    tls_ca: str = ""
    command: Sequence[str] = ()
    pid: int | None = None
    system_only: bool = False
    connect: Connect | None = field(default=None, repr=False)  # tests: a custom transport


def new_session_id(host: str | None = None) -> str:
    """``<host>-<UTC time>-<random>``: readable, sortable, unique per run."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", host or socket.gethostname())[:48] or "host"
    return f"{host}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(4)}"


class Agent:
    """One session: its spool, link, event socket and sampling state."""

    def __init__(self, cfg: AgentConfig, spool: Spool, connect: Connect) -> None:
        self.cfg = cfg
        self.spool = spool
        self.connect = connect
        self.limiter = RateLimiter(cfg.replay_rate)
        self.link = Link(spool, connect, token=cfg.token, keyframe_every=cfg.keyframe_every,
                         limiter=self.limiter, on_flow=self._on_flow)  # fmt: skip
        self.events = EventServer(self._on_event)
        self.flow_min = 0.0
        self.widen = 1
        self.samples = 0
        self.sample_seconds = 0.0
        self.spool_failures = 0
        self._spool_warned = False
        self._malformed_reported = 0
        self._ended = False
        self._flush_wanted = trio.Event()
        # Set once the backlogs of earlier runs are delivered (or left for later):
        # the end waits for it too, so a backlog whose last acks are in flight
        # when the application exits is not cut short and resent next run.
        self._backlogs_done = trio.Event()

    def close(self) -> None:
        self.events.close()
        if self.spool.done:
            self.spool.destroy()  # delivered: nothing to keep
        else:
            self.spool.close()  # the next run delivers the rest

    # -- intervals and backpressure ---------------------------------------------
    @property
    def interval(self) -> float:
        return max(self.cfg.interval, self.flow_min) * self.widen

    def _on_flow(self, min_interval: float) -> None:
        if min_interval == self.flow_min:
            return
        if min_interval > self.cfg.interval and self.flow_min <= self.cfg.interval:
            log.warning("collector asks to slow down",
                        extra={"min_interval": min_interval})  # fmt: skip
        elif min_interval <= self.cfg.interval < self.flow_min:
            log.info("collector lifted its flow limit")
        self.flow_min = min_interval

    def _check_congestion(self) -> None:
        started = self.link.send_started
        stuck = started is not None and (
            trio.current_time() - started > max(_CONGESTED_AFTER, self.cfg.interval)
        )
        if stuck:
            if self.widen == 1:
                log.warning("the connection does not drain; sampling less often and spooling",
                            extra={"interval": self.interval * 2})  # fmt: skip
            self.widen = min(_MAX_WIDEN, self.widen * 2)
        elif self.widen > 1 and started is None:
            log.warning("the connection drains again; back to the normal interval",
                        extra={"interval": max(self.cfg.interval, self.flow_min)})  # fmt: skip
            self.widen = 1

    # -- writing to the spool ---------------------------------------------------
    def _append(self, kind: Any, name: str | None, data: Any, ts: float | None = None) -> None:
        try:
            self.spool.append(kind, round(time.time() if ts is None else ts, 3), name, data)
        except SpoolError as exc:
            # Disk full or gone: lose this record, keep watching; warn once per episode.
            self.spool_failures += 1
            if not self._spool_warned:
                log.error("cannot spool; data is being lost", extra={"error": str(exc)})
                self._spool_warned = True
            return
        if self._spool_warned:
            log.warning("spooling works again", extra={"lost": self.spool_failures})
            self._spool_warned = False

    def _flush(self) -> None:
        """Report what the spool dropped and events that were malformed, then commit."""
        # Reporting a drop appends an event, which may drop more: report again
        # (it converges at once: an event is far smaller than a segment).
        for _ in range(3):
            dropped = self.spool.take_dropped()
            if dropped is None or self.spool.sealed:
                break
            count, first, last = dropped
            self._append("event", "watchdog.spool_dropped",
                         {"dropped": count, "first_seq": first, "last_seq": last,
                          "total": self.spool.dropped_total})  # fmt: skip
        malformed = self.events.malformed
        if malformed > self._malformed_reported and not self.spool.sealed:
            self._append(
                "event",
                "watchdog.malformed_events",
                {"count": malformed - self._malformed_reported, "total": malformed},
            )
            self._malformed_reported = malformed
        try:
            self.spool.commit()
        except OSError as exc:
            log.error("cannot fsync the spool", extra={"error": str(exc)})

    def _on_event(self, name: str, data: dict[str, Any] | None) -> None:
        if self._ended:
            log.info("event after the end of the session ignored", extra={"event": name})
            return
        self._append("event", name, data)
        # Out at once, but one commit (fsync) for all the lines of one read.
        self._flush_wanted.set()

    async def flush_events(self) -> None:
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted = trio.Event()
            self._flush()

    # -- tasks ---------------------------------------------------------------------
    async def sample_loop(self, pid: int | None) -> None:
        proc_sampler: ProcessSampler | None = None
        if pid is not None:
            try:
                proc_sampler = ProcessSampler(pid)
            except psutil.NoSuchProcess:
                proc_sampler = None  # exited already; the session is about to end
        sys_sampler = SystemSampler(self.cfg.mounts)
        ticks = 0
        deadline = trio.current_time()
        failing = False
        while True:
            ts = time.time()
            t0 = time.perf_counter()
            try:
                proc = proc_sampler.sample() if proc_sampler is not None else None
                system: dict[str, Any] | None = sys_sampler.sample()
            except Exception as exc:  # psutil.AccessDenied, a /proc oddity...
                # A sample lost is better than a watchdog lost: warn once per episode.
                if not failing:
                    log.warning("sampling failed", extra={"error": repr(exc)})
                failing = True
                proc = system = None
            else:
                failing = False
            self.sample_seconds += time.perf_counter() - t0
            self.samples += 1
            if proc is not None:
                self._append("sample", "process", proc, ts)
            if system is not None:
                self._append("sample", "system", system, ts)
            ticks += 1
            # The first sample goes out at once (a new session shows data right
            # away), then every push_every samples.
            if ticks == 1 or ticks % self.cfg.push_every == 0:
                self._flush()
            self._check_congestion()
            now = trio.current_time()
            # Fixed cadence without drift; after a stall, skip what was missed.
            deadline = max(deadline + self.interval, now)
            await trio.sleep_until(deadline)

    async def replay_backlogs(self) -> None:
        """Deliver the spools earlier runs left behind, one session at a time."""
        try:
            await self._replay_backlogs()
        finally:
            self._backlogs_done.set()

    async def _replay_backlogs(self) -> None:
        cfg = self.cfg
        with open_backlogs(cfg.spool_dir, exclude=self.spool.directory,
                           max_bytes=cfg.spool_max_bytes, fsync=cfg.fsync) as backlogs:  # fmt: skip
            for spool in backlogs:
                if cfg.replay == "manual" and spool.total_bytes > cfg.replay_ask_bytes:
                    log.warning("a large backlog waits: send it with 'watchdog spool send' "
                                "or drop it with 'watchdog spool purge'",
                                extra={"session": spool.session, "bytes": spool.total_bytes,
                                       "records": spool.pending})  # fmt: skip
                    continue
                log.info("delivering a backlog",
                         extra={"session": spool.session, "bytes": spool.total_bytes})  # fmt: skip
                await deliver(backlog_link(spool, self.connect, token=cfg.token,
                                           keyframe_every=cfg.keyframe_every,
                                           limiter=self.limiter))  # fmt: skip

    async def end(self, status: ExitStatus) -> None:
        """Spool the bye and give the collector a moment to acknowledge it."""
        self._ended = True
        self._flush()
        self._append("bye", None, status.bye_data())
        if not self.spool.sealed:
            self.spool.seal()  # the bye did not make it to disk: still end here
        self._flush()
        self.link.kick()
        with trio.move_on_after(self.cfg.shutdown_grace):
            while not self.spool.done:
                await self.spool.wait_changed()
            await self._backlogs_done.wait()
        if not self._backlogs_done.is_set():
            log.info(
                "a backlog delivery was cut short by the end of the session; what is "
                "not acknowledged stays in the spool for the next run"
            )
        if not self.spool.done:
            log.warning("the end of the session was not acknowledged in time; it stays "
                        "in the spool for the next run",
                        extra={"session": self.spool.session, "pending": self.spool.pending,
                               "error": self.link.last_error})  # fmt: skip


async def _run(cfg: AgentConfig, agent: Agent) -> int:
    supervisor: Supervisor | None = None
    with trio.open_signal_receiver(*FORWARDED_SIGNALS) as signals:
        agent.events.bind()
        pid = cfg.pid
        if cfg.command:
            env = dict(os.environ)
            env[ENV_VAR] = str(agent.events.path)
            env[SESSION_ENV_VAR] = agent.spool.session
            supervisor = Supervisor(cfg.command, env)
            pid = await supervisor.spawn()  # SpawnError: nothing was sent yet
        log.info("session started",
                 extra={"session": agent.spool.session, "pid": pid,
                        "interval": cfg.interval, "push_every": cfg.push_every})  # fmt: skip
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(agent.link.run)
                nursery.start_soon(agent.events.serve)
                nursery.start_soon(agent.flush_events)
                nursery.start_soon(agent.replay_backlogs)
                sampling = trio.CancelScope()

                async def sample() -> None:
                    with sampling:
                        await agent.sample_loop(pid)

                nursery.start_soon(sample)
                status = await _wait_end(cfg, supervisor, signals)
                sampling.cancel()
                with trio.move_on_after(EVENTS_DRAIN_S):
                    await agent.events.drain()  # its last events, before the bye
                await agent.end(status)
                nursery.cancel_scope.cancel()
        finally:
            if supervisor is not None:
                await supervisor.kill()  # only if still running: we were cancelled
    log.info("session ended",
             extra={"session": agent.spool.session, "exit_code": status.exit_code,
                    "samples": agent.samples, "bytes_sent": agent.link.bytes_sent,
                    "sample_ms_avg": round(1000 * agent.sample_seconds / max(1, agent.samples), 3),
                    "delivered": agent.spool.done})  # fmt: skip
    return status.exit_code


async def _wait_end(cfg: AgentConfig, supervisor: Supervisor | None, signals: Any) -> ExitStatus:
    if supervisor is not None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor.forward, signals)
            status = await supervisor.wait()
            nursery.cancel_scope.cancel()
        return status
    # Attached or host-only: a signal ends the watch (and never reaches the process).
    result: list[ExitStatus] = []
    async with trio.open_nursery() as nursery:

        async def on_signal() -> None:
            async for signum in signals:
                if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
                    result.append(ExitStatus(0, reason="stopped"))
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(on_signal)
        if cfg.pid is not None:
            await wait_pid_exit(cfg.pid)
            result.append(ExitStatus(0, reason="exited"))
            nursery.cancel_scope.cancel()
    return result[0]


def open_agent(cfg: AgentConfig) -> Agent:
    """Check the configuration and open the session's spool (no I/O beyond that).

    Raises ``AgentError`` for what stops the watchdog from starting.
    """
    if cfg.session is not None and not SESSION_RE.fullmatch(cfg.session):
        raise AgentError("--session: must be 1-128 characters of A-Za-z0-9._:@-", 2)
    if cfg.pid is not None:
        try:
            ProcessSampler(cfg.pid).sample()
        except psutil.NoSuchProcess:
            raise AgentError(f"--pid: no process {cfg.pid}", 2) from None
        except psutil.AccessDenied:
            raise AgentError(f"--pid: not allowed to read process {cfg.pid} "
                             "(run the watchdog as its user or as root)", 2) from None  # fmt: skip
    host = socket.gethostname()
    session = cfg.session or new_session_id(host)
    try:
        cfg.spool_dir.mkdir(parents=True, exist_ok=True)
        spool = Spool(
            session_dir(cfg.spool_dir, session),
            max_bytes=cfg.spool_max_bytes,
            fsync=cfg.fsync,
            meta={"session": session, "host": host, "agent": AGENT, "tags": list(cfg.tags)},
        )
    except SpoolLocked as exc:
        raise AgentError(f"session {session} is already being watched: {exc}") from None
    except (SpoolError, OSError) as exc:
        raise AgentError(f"spool directory {cfg.spool_dir}: {exc}") from None
    if spool.sealed:
        spool.unseal()  # an explicit --session whose earlier run ended: this run continues it
    try:
        connect = cfg.connect or tcp_connector(
            *cfg.collector, tls=cfg.tls, ca_file=cfg.tls_ca or None
        )
    except (OSError, ValueError) as exc:
        spool.close()
        raise AgentError(f"WATCHDOG_TLS_CA: {exc}", 2) from None
    return Agent(cfg, spool, connect)


async def run_session(agent: Agent) -> int:
    """Run the session inside trio; closes the agent. Returns the exit code."""
    fresh = agent.spool.next_seq == 0
    try:
        return await _run(agent.cfg, agent)
    except SpawnError as exc:
        if fresh:
            agent.spool.destroy()  # nothing happened in this session
        raise AgentError(str(exc), exc.exit_code) from None
    finally:
        agent.close()


def run_agent(cfg: AgentConfig) -> int:
    """Run a whole session; returns the watchdog's exit code (the child's).

    Raises ``AgentError`` for what stops it from starting.
    """
    return trio.run(run_session, open_agent(cfg))
