"""``collector serve``: listeners, the pipeline, the HTTP API process, signals.

Shutdown on SIGTERM/SIGINT: stop accepting, stop reading, let the writer drain
the queue, ack what was stored, close. A second signal exits at once (nothing
acked is lost either way: acks only ever follow a commit), unless it comes
within ``_SAME_SIGNAL_S`` of the first: then it is the same request delivered
twice. ``kill -TERM -- -PGID`` of ``make run`` (a service manager stopping the
group) reaches us from the group and again from make, which passes SIGTERM
on to its children; the second one, a millisecond later, cut the drain short
and left the API workers' directory behind.
"""

from __future__ import annotations

import functools
import gc
import ipaddress
import logging
import os
import signal
import ssl
from dataclasses import dataclass, field
from typing import Any

import trio

from deltawire.formats import redact_uri

from .api_process import ApiProcess
from .connection import handle_connection
from .heap import tune_malloc
from .hub import Hub, IngestConfig
from .pipeline import Pipeline, PipelineConfig
from .stats import Stats
from .stores import open_store
from .writer import BatchWriter, ProcessWriter, ThreadWriter

__all__ = ["ServeConfig", "serve"]

log = logging.getLogger("deltawire.collector.server")

_HTTP_UP_S = 60.0  # how long "ready" waits for the API process's port (a slow start logs anyway)
#: A signal this soon after the first is the same request again (see above); a
#: person's second Ctrl-C to hurry a drain comes later than this.
_SAME_SIGNAL_S = 0.5


async def _accepting(addr: tuple[str, int]) -> None:
    """Return once ``addr`` accepts a connection, or after _HTTP_UP_S."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(addr[0], addr[0])
    with trio.move_on_after(_HTTP_UP_S):
        while True:
            try:
                stream = await trio.open_tcp_stream(host, addr[1])
            except OSError:
                await trio.sleep(0.05)  # polling the port, within the deadline above
                continue
            await stream.aclose()
            return


@dataclass(frozen=True)
class ServeConfig:
    listen: tuple[str, int]
    http: tuple[str, int] | None
    store_uri: str
    store_options: dict[str, object] = field(default_factory=dict)
    ingest: IngestConfig = IngestConfig()
    pipeline: PipelineConfig = PipelineConfig()
    tls_cert: str = ""
    tls_key: str = ""
    api_args: tuple[str, ...] = ()
    api_workers: int = 1  # HTTP API processes on cfg.http (api_process.py)
    writer: str = "process"
    log_level: str = "warning"


def _tune_gc() -> None:
    """Documents are short-lived and acyclic; full collections over a large
    heap were measured as 100 ms stalls of the ingest loop. Freeze what start-up
    allocated and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def serve(
    cfg: ServeConfig, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    store = open_store(cfg.store_uri, **cfg.store_options)
    await trio.to_thread.run_sync(store.open)
    if cfg.tls_cert:
        # Load the certificate up front: a bad file is a start-up error.
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(cfg.tls_cert, cfg.tls_key or None)
    stats = Stats()
    api: ApiProcess | None = None
    hub_ref: list[Hub] = []
    writer: BatchWriter
    if cfg.writer == "process":
        writer = ProcessWriter(cfg.store_uri, cfg.store_options, cfg.log_level)
    else:
        writer = ThreadWriter(store)
        store.start_checkpointer()  # this process does the bulk of the writing
    pipeline = Pipeline(
        store,
        stats,
        cfg.pipeline,
        writer=writer,
        on_flow=lambda interval: hub_ref[0].broadcast_flow(interval),
        on_commit_batch=lambda batch: api.on_commit(batch) if api is not None else None,
    )
    hub = Hub(store, pipeline, stats, cfg.ingest)
    hub_ref.append(hub)
    if cfg.ingest.capture_dir is not None:
        cfg.ingest.capture_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.ingest.tokens:
        host = cfg.listen[0]
        loopback = host in ("localhost",) or _is_loopback(host)
        log.warning(
            "no INGEST_TOKENS configured: agents are not authenticated"
            + ("" if loopback else " and the port is open beyond this machine"),
            extra={"listen": f"{host}:{cfg.listen[1]}"},
        )
    handler = functools.partial(handle_connection, hub=hub)
    _tune_gc()
    tune_malloc()  # refused bombs' buffers must not stay in the heap
    # Bind before anything else starts, so "address in use" is a plain error.
    listeners = await _listeners(cfg)
    port = listeners[0].socket.getsockname()[1]
    try:
        # Before the first connection: batches must not wait for the writer
        # to start (aclose below stops it whatever happens).
        await writer.start()
        async with trio.open_nursery() as nursery:
            writer_done = trio.Event()

            async def write() -> None:
                try:
                    await pipeline.run()
                finally:
                    writer_done.set()

            nursery.start_soon(write)
            nursery.start_soon(pipeline.monitor)
            if cfg.http is not None:
                api = ApiProcess(
                    [
                        "--http",
                        f"{cfg.http[0]}:{cfg.http[1]}",
                        "--store",
                        cfg.store_uri,
                        *cfg.api_args,
                    ],
                    stats.render,
                    workers=cfg.api_workers,
                )
                await nursery.start(api.run)
            serving: list[Any] = list(listeners)
            if cfg.tls_cert:
                serving = [trio.SSLListener(lst, ssl_context) for lst in listeners]
            accept_scope = trio.CancelScope()
            conns_nursery: list[trio.Nursery] = []

            async def accept() -> None:
                async with trio.open_nursery() as conns:
                    conns_nursery.append(conns)
                    with accept_scope:
                        await trio.serve_listeners(handler, serving, handler_nursery=conns)

            nursery.start_soon(accept)

            async def announce() -> None:
                # The line names the dashboard: print it once the API process
                # answers, not seconds before (a newcomer clicks it at once).
                if api is not None and cfg.http is not None:
                    # Every API worker listens: before, the first one alone
                    # would take every connection made at once (a bench's).
                    with trio.move_on_after(_HTTP_UP_S):
                        await api.ready.wait()
                    await _accepting(cfg.http)
                log.info("collector ready", extra={"listen": f"{cfg.listen[0]}:{port}",
                            "http": f"{cfg.http[0]}:{cfg.http[1]}" if cfg.http else None,
                            "dashboard": f"http://{cfg.http[0]}:{cfg.http[1]}/" if cfg.http else None,
                            "store": redact_uri(cfg.store_uri)})  # fmt: skip

            nursery.start_soon(announce)
            task_status.started(port)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.warning(
                        "shutting down: draining", extra={"signal": signal.Signals(signum).name}
                    )
                    break
                # Still ours while draining (a signal outside a receiver takes
                # its default action: the process ends on the spot).
                nursery.start_soon(_exit_on_another, signals, trio.current_time())
                # Phase 1: no new connections; readers stop, connections drain and ack.
                accept_scope.cancel()
                hub.stop_reading()
                with trio.move_on_after(cfg.ingest.shutdown_grace + 1) as scope:
                    await hub.all_left()
                if scope.cancelled_caught:
                    log.warning("closing connections that did not drain in time",
                                extra={"left": len(hub.connections)})  # fmt: skip
                # Phase 2: the writer commits whatever is still queued, then stops.
                pipeline.close()
                with trio.move_on_after(cfg.ingest.shutdown_grace):
                    await writer_done.wait()
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await writer.aclose()
            await trio.to_thread.run_sync(store.close)
    log.warning("collector stopped", extra={"stored": stats.documents_stored})


async def _exit_on_another(signals: Any, first_at: float) -> None:
    """While the collector drains: a signal later than ``_SAME_SIGNAL_S``
    after the first ends the process at once, by that signal's default
    action (as before a receiver was ever installed); an earlier one is the
    first again, and ignored."""
    async for signum in signals:
        name = signal.Signals(signum).name
        if trio.current_time() - first_at < _SAME_SIGNAL_S:
            log.info("signal ignored: the same request as the first", extra={"signal": name})
            continue
        log.warning("second signal: exiting at once", extra={"signal": name})
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        await trio.sleep_forever()  # the signal ends us


async def _listeners(cfg: ServeConfig) -> list[trio.SocketListener]:
    host, port = cfg.listen
    return await trio.open_tcp_listeners(port, host=host or None, backlog=4096)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
